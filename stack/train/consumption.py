"""GATE-TRAIN-007: every step's loss consumed what its batch states.

The tape of stack.model.consumed holds what each scoring of a micro-batch actually read: the
input ids, the targets it scored (−1 elsewhere) and the document ids attention was given. The
objective says what the batch states it should have read (`Objective.stated`: the next tokens
of a pretraining window; the supervised bits of a fine-tuning window's prepared labels and its
example numbers; the completion bits of a preference pair's rows), read straight from the
batch's own tensors and never through the code that builds the loss's targets. `Tally` compares
the two, scoring by scoring, and `check_consumed` judges the step.

The comparison runs on the device, as the loss does, and costs a few element-wise passes over
(B, T) integer tensors per micro-batch; its counts join the step's one read of measured values
to the host (stack.train.loop), so it adds no synchronisation. The sha256 of the targets each
side names is taken on the host after that read, from copies queued without blocking.

A scoring may be narrower than its statement (DPO cuts a batch's rows to its longest sequence):
positions beyond the narrower width are compared by what is scored there, which must be nothing.

Each scoring also states the mode the model ran in (stack.model.consumed.mode_of), which a
training step must be: the model the run trains in training mode (its dropout drawn), a frozen
one (DPO's reference) in evaluation mode, as the objective's statement names. A loop that leaves
the model in evaluation mode after an evaluation or a sample trains without its dropout.

The tape is what the model's forward says it read. At the probes of a pretraining run (the first
step of every invocation and every evaluation) the targets are also read off the loss's own
gradient (`consumed_by_gradient`), so a cross-entropy that drops or moves positions after the
forward recorded its tape is judged by what it did. That probe runs the model in training mode,
the mode every loss the run steps on is computed in (`in_mode`): a loss that scores otherwise
in training than in evaluation (label smoothing switched on by `self.training`) is judged as it
trains. The same probes hold the function the loss trains to the one that is evaluated, saved and
served (`inference_deviations`): in training mode (with the loss's own dropout draws) and in
evaluation mode, the logits the loss read, and the loss itself, are those of the model's plain
forward without targets, the forward generation and every export run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from contracts.derive.training import finite_or_text
from contracts.gates import Outcome, gate_require, measure
from stack.model.checks import relative_deviation
from stack.model.consumed import TRAIN, Consumed, logits_dtypes, recording

# Scored rows of logits whose gradient `cross_entropy_deviation` copies at a time.
DEVIATION_ROWS = 1024
# The device counts of a step, in the order `Tally.counts` holds them.
# What check inference measures: the logits' and the loss's distance from the served forward's.
INFERENCE_DEVIATIONS = ("inference_logits_deviation", "inference_loss_deviation")
COUNTS = ("targets", "stated_targets", "mismatched_targets", "mismatched_inputs", "mismatched_docs")


def _ids(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as int64, the one type both sides are compared in."""
    return tensor if tensor.dtype == torch.int64 else tensor.to(torch.int64)


def same_elements(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `a` and `b` are the same elements of the same memory (two views of one batch): then
    they are equal, and comparing them element by element would read the same bytes twice."""
    return (
        a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.dtype == b.dtype
    )


def _differing(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor | None:
    """How many of the first `width` columns differ (None: the same elements, so none)."""
    if same_elements(a, b):
        return None
    return (_ids(a)[:, :width] != _ids(b)[:, :width]).sum()


def compare(consumed: Consumed, stated: Consumed) -> torch.Tensor:
    """Counts (len(COUNTS),) on the device: targets scored by each side, then the positions where
    targets, inputs and document ids differ (a missing or extra document mask counts everywhere)."""
    got, want = consumed.targets, stated.targets
    scored = (got >= 0).sum()
    stated_scored = scored if same_elements(got, want) else (want >= 0).sum()
    if got.shape[0] != want.shape[0]:  # other rows: nothing can be compared position by position
        everywhere = scored.new_tensor(max(got.numel(), want.numel()))
        return torch.stack([scored, stated_scored, everywhere, everywhere, everywhere])
    width = min(got.shape[1], want.shape[1])
    targets = _differing(got, want, width)
    if got.shape[1] != want.shape[1]:  # what the wider side scores past the narrower is a difference
        beyond = (got[:, width:] >= 0).sum() + (want[:, width:] >= 0).sum()
        targets = beyond if targets is None else targets + beyond
    inputs = _differing(consumed.inputs, stated.inputs, width)
    if consumed.docs is None or stated.docs is None:
        docs = None if consumed.docs is stated.docs else scored.new_tensor(got.shape[0] * width)
    else:
        docs = _differing(consumed.docs, stated.docs, width)
    none = torch.zeros_like(scored)
    return torch.stack([scored, stated_scored, *(none if n is None else n for n in (targets, inputs, docs))])


def targets_sha256(targets: list[torch.Tensor]) -> str:
    """sha256 of what each targets tensor (B, T) scores, in order: its shape up to its last column
    with a scored target, then those columns' ids. Unscored columns past that one do not count, so
    a scoring cut to its longest row hashes as its statement does."""
    digest = hashlib.sha256()
    for tensor in targets:
        columns = (tensor >= 0).any(dim=0).nonzero()
        width = int(columns[-1]) + 1 if len(columns) else 0
        digest.update(f"{tensor.shape[0]}x{width}|".encode())
        digest.update(_ids(tensor[:, :width]).contiguous().numpy().tobytes())
    return digest.hexdigest()


def stated_mode(stated: Consumed) -> str:
    """The mode a training step runs a scoring in: the one its statement names (a frozen model's),
    else TRAIN, the model the run trains."""
    return stated.mode or TRAIN


class Tally:
    """What one optimizer step's micro-batches consumed against what they state."""

    def __init__(self, device: torch.device, precision: str | None = None) -> None:
        """Counts on `device`; with `precision` (the run's train.precision: a step's tally) the values
        also say how each scoring computed: that precision beside the dtypes of the logits each
        scoring read, and the modes the models ran in, against those a training step runs them in
        (GATE-TRAIN-007's checks precision and mode)."""
        self.counts = torch.zeros(len(COUNTS), dtype=torch.int64, device=device)
        self.precision = precision
        self.logits_dtypes: set[str] = set()
        self.modes: set[str] = set()
        self.mismatched_modes = 0
        self.scorings = 0
        self.stated_scorings = 0
        # Host copies of both sides' targets, queued without blocking; read after the step's sync.
        self._consumed: list[torch.Tensor] = []
        self._stated: list[torch.Tensor] = []

    def add(self, consumed: list[Consumed], stated: list[Consumed]) -> None:
        """One micro-batch: its tape (`consumed`) against its batch's statement (`stated`)."""
        self.scorings += len(consumed)
        self.stated_scorings += len(stated)
        self.logits_dtypes |= logits_dtypes(consumed)
        self.modes |= {str(c.mode) for c in consumed}
        for got, want in zip(consumed, stated, strict=False):  # an extra or missing one: `scorings`
            self.counts += compare(got, want)
            self.mismatched_modes += got.mode != stated_mode(want)
        copies = [c.targets.detach().to("cpu", non_blocking=True) for c in consumed]
        self._consumed += copies
        for k, s in enumerate(stated):  # a statement that is a consumed tensor's memory shares its copy
            mirror = k < len(consumed) and same_elements(consumed[k].targets, s.targets)
            self._stated.append(copies[k] if mirror else s.targets.to("cpu", non_blocking=True))

    def measured(self, counts: list[float]) -> dict[str, Any]:
        """GATE-TRAIN-007's values, from `counts` (the step's COUNTS, summed over ranks and read back
        with the step's other values): call it after that read, when the host copies are complete."""
        consumed_sha256 = targets_sha256(self._consumed)
        same = len(self._stated) == len(self._consumed) and all(
            a is b for a, b in zip(self._stated, self._consumed, strict=True)
        )
        measured = {
            "scorings": self.scorings,
            "stated_scorings": self.stated_scorings,
            **{name: round(value) for name, value in zip(COUNTS, counts, strict=True)},
            "targets_sha256": consumed_sha256,
            "stated_targets_sha256": consumed_sha256 if same else targets_sha256(self._stated),
        }
        if self.precision is not None:
            measured |= {"precision": self.precision, "logits_dtypes": sorted(self.logits_dtypes)}
            measured |= {"modes": sorted(self.modes), "mismatched_modes": self.mismatched_modes}
        return measured


@dataclass(frozen=True)
class GradientReading:
    """What a loss's gradient at uniform logits shows (`consumed_by_gradient`)."""

    targets: list[torch.Tensor]  # per call of the head, the (B, T) ids scored there, -1 elsewhere
    deviation: float  # the scored rows' largest distance from the mean cross-entropy's gradient


def consumed_by_gradient(loss_of: Callable[[], torch.Tensor], head: torch.nn.Module) -> GradientReading:
    """The targets a loss scored and how it scored them, read off the loss itself rather than off
    what its code records.

    Every output of `head` (the logits) is replaced by zeros that require a gradient, so the
    softmax is uniform and no row can saturate. A mean cross-entropy's gradient is then
    (1/V - onehot(target)) / N on each row it scored and 0 on every other, N the rows scored in
    all: a row's target is its smallest entry, a row the loss never read stays zero, and
    `cross_entropy_deviation` measures how far the scored rows are from that identity (a loss of
    another value on the same targets: smoothed labels, a sum for a mean, a mean over positions it
    did not score). A loss that never reads the logits scores none.
    """
    logits: list[torch.Tensor] = []

    def zeros(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        logits.append(torch.zeros_like(output, requires_grad=True))
        return logits[-1]

    handle = head.register_forward_hook(zeros)
    try:
        with torch.enable_grad():
            loss = loss_of()
            grads = torch.autograd.grad(loss, logits, allow_unused=True) if logits else ()
    finally:
        handle.remove()
    targets = [
        torch.full(z.shape[:-1], -1, dtype=torch.int64, device=z.device)
        if g is None
        else torch.where(g.ne(0).any(dim=-1), g.argmin(dim=-1), -1)
        for z, g in zip(logits, grads, strict=True)
    ]
    present = [(g, t) for g, t in zip(grads, targets, strict=True) if g is not None]
    return GradientReading(targets, cross_entropy_deviation(present))


def cross_entropy_deviation(read: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """max |N·g - (1/V - onehot(target))| over the scored rows of each (gradient, targets) pair:
    0 up to rounding for a mean cross-entropy at uniform logits, in units of a target's own term.

    V is the row's columns the gradient reaches (a head padded past the vocabulary leaves its
    padding at zero) and N the rows scored over all pairs, the mean's denominator. Rows are taken
    DEVIATION_ROWS at a time, so the float32 copies never exceed that many rows of logits (a 124 M
    model's batch of 16 × 1024 positions over 32 768 columns would otherwise copy 2 GiB thrice).
    """
    n = sum(int((t >= 0).sum()) for _, t in read)
    worst: list[torch.Tensor] = []
    for g, t in read:
        columns = g.reshape(-1, g.shape[-1])
        targets = t.reshape(-1)
        scored = (targets >= 0).nonzero().squeeze(1)
        for rows in scored.split(DEVIATION_ROWS) if scored.numel() else ():
            scaled = columns[rows].float() * n
            reached = scaled.ne(0)
            spread = reached.sum(dim=-1, keepdim=True)
            scaled.scatter_add_(-1, targets[rows].unsqueeze(-1), torch.ones_like(scaled[:, :1]))
            worst.append(torch.where(reached, (scaled - 1.0 / spread).abs(), torch.zeros_like(scaled)).max())
    return float(torch.stack(worst).max()) if worst else 0.0


def measured_at_the_loss(reading: GradientReading, stated: list[Consumed]) -> dict[str, Any]:
    """GATE-TRAIN-007's values with the targets taken from the loss's gradient (`consumed_by_gradient`)
    and its distance from the mean cross-entropy's; the inputs and document ids compared are the
    statement's own, which the step's tape compares every step."""
    first = stated[0] if stated else None
    consumed = [
        Consumed(
            inputs=first.inputs if first is not None else t,
            targets=t,
            docs=first.docs if first is not None else None,
        )
        for t in reading.targets
    ]
    device = reading.targets[0].device if reading.targets else torch.device("cpu")
    tally = Tally(device)
    tally.add(consumed, stated)
    return {**tally.measured(tally.counts.tolist()), "loss_gradient_deviation": reading.deviation}


def consumed_outcome(measured: dict[str, Any], step: int) -> Outcome:
    """GATE-TRAIN-007 over one step's tally."""
    return measure("GATE-TRAIN-007", measured, step=step, holds="the loss consumed what its batch states")


@gate_require("GATE-TRAIN-007", lambda measured, step: consumed_outcome(measured, step))
def check_consumed(measured: dict[str, Any], step: int) -> None:
    """Refuse to step on a loss that read other targets, inputs or documents than the batch states."""


@contextmanager
def in_mode(model: torch.nn.Module, training: bool) -> Iterator[None]:
    """`model` in training mode (`training`) or evaluation mode for the block, with the random draws
    of that mode (dropout) taken from forked generators: the run's streams are left exactly as they
    were, so a probed step trains, and resumes, as an unprobed one does.

    The gradient probe stays exact under dropout: it replaces the logits themselves, so the loss's
    gradient with respect to them does not depend on anything drawn upstream.
    """
    was_training = model.training
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        model.train(training)
        try:
            yield
        finally:
            model.train(was_training)


def _cuda_devices(model: torch.nn.Module) -> list[torch.device]:
    """The CUDA device `model` computes on, whose generator a fork must save too (none on CPU)."""
    device = next(model.parameters()).device
    return [device] if device.type == "cuda" else []


# One part of a probed batch: its loss, and the scorings its rows state (`Objective.probe_parts`).
Part = tuple[Callable[[], torch.Tensor], list[Consumed]]


def joined(readings: Sequence[GradientReading]) -> GradientReading:
    """The gradient readings of a batch's parts, in row order, as the whole batch's: each scoring's
    targets with the parts' rows one after another, and the largest deviation of any part."""
    count = max((len(r.targets) for r in readings), default=0)
    targets = [torch.cat([r.targets[i] for r in readings if i < len(r.targets)]) for i in range(count)]
    return GradientReading(targets, worst(r.deviation for r in readings))


def worst(values: Iterable[float]) -> float:
    """The largest of `values` (0 for none), NaN above every number: a part that measured NaN is
    the worst part."""
    return max(values, key=lambda v: (math.isnan(v), v), default=0.0)


def check_loss_gradient(
    losses: Sequence[Callable[[], torch.Tensor]], model: torch.nn.Module, stated: list[Consumed], step: int
) -> None:
    """GATE-TRAIN-007 at a probe of a cross-entropy task: what the loss's gradient shows it scored,
    and how, against what the batch states (`stated`), with `model` (whose `lm_head` gives the
    logits) in the mode the run trains in. `losses` are the losses of the batch's parts in row
    order: each part's gradient is read on its own, so a probe holds one part's forward and
    backward at a time, and the parts' readings are judged together, as the whole batch's."""
    with in_mode(model, training=True):
        reading = joined([consumed_by_gradient(loss_of, model.lm_head) for loss_of in losses])
    check_consumed(measured_at_the_loss(reading, stated), step)


def mean_cross_entropy(logits: list[torch.Tensor], stated: list[Consumed]) -> float:
    """The mean cross-entropy, over every target the statements score, of the logits (B, T, vocab)
    given for each statement's inputs: what a cross-entropy task's loss is by definition."""
    total, scored = 0.0, 0
    for scores, statement in zip(logits, stated, strict=True):
        flat = scores.float().flatten(0, 1)
        targets = statement.targets.flatten()
        total += float(torch.nn.functional.cross_entropy(flat, targets, ignore_index=-1, reduction="sum"))
        scored += int((targets >= 0).sum())
    return total / scored if scored else math.nan


def part_deviations(
    loss_of: Callable[[], torch.Tensor], model: torch.nn.Module, stated: list[Consumed]
) -> dict[str, float]:
    """How far the function a cross-entropy loss trains is from the model's plain inference forward
    (`model(inputs, docs=docs)`, no targets: what evaluation reads, generation samples and an export
    carries) on the batch's own inputs, in each mode a loss is computed in (training, with the loss's
    own dropout draws made again; evaluation): the logits each scoring of the loss read, in units of
    the plain forward's largest |logit|, and the loss, in units of the mean cross-entropy of the plain
    logits at the targets the batch states (`mean_cross_entropy`). Both are 0 up to rounding for a loss
    that is the served model's cross-entropy; a scoring without kept logits, or a count of scorings
    other than the statement's, is infinitely far.
    """
    logits_deviation = loss_deviation = 0.0
    for training in (True, False):
        with in_mode(model, training):
            with torch.random.fork_rng(devices=_cuda_devices(model)), recording(keep_logits=True) as tape:
                loss = float(loss_of())  # its dropout draws, made again from the same state below
            plain = [model(statement.inputs, docs=statement.docs)[0] for statement in stated]
        kept = [scoring.logits for scoring in tape]
        if len(kept) != len(plain) or any(k is None for k in kept):
            return dict.fromkeys(INFERENCE_DEVIATIONS, math.inf)
        for read, served in zip(kept, plain, strict=True):
            logits_deviation = max(logits_deviation, relative_deviation(read, served))
        served_loss = mean_cross_entropy(plain, stated)
        loss_deviation = max(
            loss_deviation, relative_deviation(torch.tensor(loss), torch.tensor(served_loss))
        )
    return dict(zip(INFERENCE_DEVIATIONS, (logits_deviation, loss_deviation), strict=True))


def inference_deviations(parts: Sequence[Part], model: torch.nn.Module) -> dict[str, float]:
    """`part_deviations` of every part of a batch (`Part`: its loss and statement), the worst of
    each: the parts' logits and losses are compared one part at a time, so a probe keeps the logits
    of one part, not of the batch."""
    measured = [part_deviations(loss_of, model, stated) for loss_of, stated in parts]
    return {key: worst(m[key] for m in measured) for key in INFERENCE_DEVIATIONS}


def _inference_outcome(measured: dict[str, float], step: int) -> Outcome:
    measured = {key: finite_or_text(value) for key, value in measured.items()}
    return measure("GATE-TRAIN-007", measured, step=step, holds="the loss trains the model that is served")


@gate_require("GATE-TRAIN-007", _inference_outcome)
def check_inference(measured: dict[str, float], step: int) -> None:
    """At a probe of a cross-entropy task: the logits the loss read and the loss itself are the
    plain inference forward's (`inference_deviations`), so the model a run trains is the model it
    evaluates, saves and serves."""


def check_served(parts: Sequence[Part], model: torch.nn.Module, stated: list[Consumed], step: int) -> None:
    """GATE-TRAIN-007 at a probe of a cross-entropy task, over a batch read in `parts` (`stated`: the
    whole batch's statement): the targets and the scoring its gradient shows
    (`check_loss_gradient`), then the function it trains against the served one (`check_inference`)."""
    check_loss_gradient([loss_of for loss_of, _ in parts], model, stated, step)
    check_inference(inference_deviations(parts, model), step)


def forward_loss(tape: list[Consumed]) -> torch.Tensor:
    """The cross-entropy the model's forwards on `tape` computed, summed (one forward for the
    objectives that log it; 0 where none recorded one, which the tape's count of scorings judges)."""
    losses = [c.loss for c in tape if c.loss is not None]
    return torch.stack(losses).sum() if losses else torch.zeros(())


def _logged_outcome(logged: float, forward: float, step: int) -> Outcome:
    measured = {"logged_loss": finite_or_text(logged), "forward_loss": finite_or_text(forward)}
    return measure("GATE-TRAIN-007", measured, step=step, holds="the step logs the loss its forwards made")


@gate_require("GATE-TRAIN-007", _logged_outcome)
def check_logged(logged: float, forward: float, step: int) -> None:
    """Every step of an objective whose loss is the model's cross-entropy: the loss its line logs
    (`logged`) is the mean over its micro-batches, and ranks, of the cross-entropy each forward
    recorded as it computed it (`forward`), summed and reduced as the logged loss is. A loss scaled,
    dropped or mislabelled between the forward and the line moves them apart."""
