"""Fitting a tuned lens: the model frozen, only the probes learn, then judged on held-out text.

Each step reads a batch of the DATA_DIR's train split (TokenReader, seeded), captures the
residual stream, and lowers the sum over lens layers of KL(final ‖ lens layer), the loss of
the tuned lens's authors, with their optimiser: SGD with Nesterov momentum and weight decay,
the gradient clipped to norm 1, the learning rate decayed linearly to zero over the steps.

The defaults are those of the `tuned-lens` package (version 0.2.0, `scripts/ingredients.py`
class `Optimizer` and `scripts/train_loop.py`): momentum 0.9, weight decay 1e-3, no warmup for
SGD, `clip_grad_norm_(…, 1.0)` before every step, a linear schedule to zero, 250 steps. Their
learning-rate option is a scale whose SGD step is lr_scale · (1 − momentum), undoing the
1 / (1 − momentum) that momentum multiplies a constant gradient's step by; their default scale
1.0 is an SGD learning rate of 0.1, which is `DEFAULT_LR` (stack.lens.defaults). (An SGD rate of 1.0,
constant and unclipped, took ten times their step; on one seed a layer ended worse than the
logit lens.) Before the first step the lens must be the logit lens bit for bit (GATE-LENS-001);
after the last, every probe must have moved, unless it was trained and its layer already read as
the final distribution through the identity: nothing to learn (GATE-LENS-002). Then both lenses
are read on the held-out set a training run evaluates (windows spread over the held-out split,
checked against its shards, and the forwards' ids checked against the set: GATE-DATA-005); a layer
where the tuned lens is further from the final distribution than the logit lens is a warning
(GATE-LENS-003). Every step's rate is read back from the optimizer and held to the schedule
contracts.schedule defines (GATE-LENS-002, check schedule), and the norm of the gradients it steps to
the clip norm the settings state (check clip); the loss backpropagated at the first
and the last step to the documented objective recomputed by contracts.divergence against a plain
forward (GATE-LENS-006, check objective); and every reported held-out mean to the mean over batches
of each batch's KL recomputed that way, each lens by name (GATE-LENS-006, check heldout), over as
many windows as the settings state (check windows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.divergence import mean_kl_per_layer
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.schedule import linear_decay, linear_decay_at
from stack.data.heldout import Knobs, check_heldout, heldout_batches
from stack.data.reader import TokenReader, check_served
from stack.lens.defaults import (
    DEFAULT_CLIP_NORM,
    DEFAULT_SEQ_LEN,
    DEFAULT_WEIGHT_DECAY,
)
from stack.lens.probes import TunedLens, for_model, health_outcome
from stack.lens.readout import (
    check_kl,
    kl_rows,
    kl_to_final,
    layer_log_probs,
    mean_kl,
    output_log_probs,
    recomputed_batch_kl,
)
from stack.lens.residual import Residuals, capture, read_through
from stack.model.gpt import GPT
from stack.trace.identity import exact_outcome
from stack.train.stepping import applied_lr, applied_settings

Progress = Callable[[int, dict[str, Any]], None]
# The options of `stack lens --train` that size the comparison's held-out set (no gate judges its batches).
LENS_KNOBS = Knobs("--batch-size", "--heldout-batches", "--seq-len", judged=False)


@dataclass(frozen=True)
class LensTraining:
    """How to fit the probes; every field is recorded with the lens."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float  # SGD's learning rate at the first step, decayed linearly to 0 at the last
    momentum: float
    seed: int
    heldout_batches: int
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    clip_norm: float = DEFAULT_CLIP_NORM
    nesterov: bool = True  # the tuned-lens package's SGD; recorded, so the optimizer is held to it

    def stated_hyperparameters(self) -> dict[str, float | bool]:
        """The SGD hyper-parameters besides the rate that the record states (its config), which
        GATE-LENS-002's check hyperparameters holds every parameter group to at every step."""
        return {"weight_decay": self.weight_decay, "momentum": self.momentum, "nesterov": self.nesterov}

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (1-based): lr · (1 − (step − 1) / steps), the schedule
        contracts.schedule defines (GATE-LENS-002 holds the rate the optimizer applied to it)."""
        return linear_decay_at(step, lr=self.lr, total_steps=self.steps)


@contextmanager
def frozen(model: GPT) -> Iterator[None]:
    """The model's parameters take no gradient for the duration; their flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def identity_outcome(model: GPT, lens: TunedLens, residuals: Residuals) -> Outcome:
    """GATE-LENS-001: every layer of the lens about to be trained reads exactly as the logit lens."""
    tuned = torch.stack(layer_log_probs(model, residuals, lens))
    logit = torch.stack(layer_log_probs(model, residuals, None))
    return exact_outcome("GATE-LENS-001", tuned, logit, "the untrained tuned lens is the logit lens")


@gate_ensure("GATE-LENS-001", lambda model, lens, residuals: identity_outcome(model, lens, residuals))
def check_start(model: GPT, lens: TunedLens, residuals: Residuals) -> None:
    """Judge the lens before its first step against the logit lens on the first batch."""


def layer_kls(model: GPT, lens: TunedLens, residuals: Residuals) -> list[torch.Tensor]:
    """Per lens layer, KL(final ‖ lens layer) averaged over positions; gradients reach the probes."""
    final = residuals.logits.double().log_softmax(-1)
    kls = []
    for layer, state in enumerate(residuals.states):
        reading = read_through(model, lens(layer, state)).double().log_softmax(-1)
        kls.append(kl_to_final(final, reading).mean())
    return kls


def lens_loss(model: GPT, lens: TunedLens, residuals: Residuals) -> torch.Tensor:
    """Sum over lens layers of KL(final ‖ lens layer), averaged over positions; gradients reach the probes."""
    return _summed(layer_kls(model, lens, residuals))


def recomputed_objective(model: GPT, lens: TunedLens, residuals: Residuals) -> float:
    """The documented objective of this batch recomputed apart from the loss: the sum over lens
    layers of KL(final ‖ lens layer) averaged over positions, the final distribution by a plain
    forward of the ids the step read, the KL by contracts.divergence (GATE-LENS-006, check objective)."""
    final = output_log_probs(model, residuals.inputs)
    return math.fsum(mean_kl_per_layer(final, layer_log_probs(model, residuals, lens)[:-1]))


def objective_steps(steps: int) -> list[int]:
    """The steps whose loss is held to the recomputed objective: the first (the lens still the logit
    lens) and the last (the lens as trained)."""
    return sorted({1, steps})


def _summed(kls: list[torch.Tensor]) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=kls[0].device)
    for kl in kls:
        total = total + kl
    return total


class FitWatch:
    """What GATE-LENS-002 needs to tell a probe with nothing to learn from one cut off from learning:
    per probe, whether the optimizer holds its parameters, whether a gradient reached them at every
    step, and the largest mean KL its layer read at (a probe that never moved reads through the
    identity, so that is the identity's KL: 0 when the layer already is the final distribution, as
    behind blocks that pass every token through unchanged). And its check schedule: the rate the
    optimizer applied at each step, read from its parameter groups as it steps, beside the rate
    contracts.schedule gives that step under the lens settings; and its check hyperparameters: the
    weight decay, momentum and Nesterov flag it applied at each step, read the same way, beside
    those the record states (`stated`); and its check clip: the norm of the gradients the optimizer
    is about to step, read from the parameters its groups hold, beside the clip norm the record
    states (`clip_norm`)."""

    def __init__(
        self,
        lens: TunedLens,
        optimizer: torch.optim.Optimizer,
        stated: dict[str, float | bool],
        clip_norm: float,
    ) -> None:
        self.applied_lrs: list[float] = []
        self.stated, self.clip_norm = stated, clip_norm
        self.stepped_grad_norms: list[float] = []
        self.applied: list[dict[str, float | bool]] = []
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.probes = [
            {
                "layer": layer,
                "optimized": all(id(p) in held for p in probe.parameters()),
                "grad_every_step": True,
                "max_kl": 0.0,
            }
            for layer, probe in enumerate(lens.probes)
        ]

    def step(self, lens: TunedLens, kls: list[torch.Tensor]) -> None:
        """After a backward: which probes a gradient reached, and each layer's KL."""
        for facts, probe, kl in zip(self.probes, lens.probes, kls, strict=True):
            reached = all(p.grad is not None for p in probe.parameters())
            facts["grad_every_step"] = bool(facts["grad_every_step"]) and reached
            facts["max_kl"] = max(float(facts["max_kl"]), float(kl.detach()))

    def stepping(self, optimizer: torch.optim.Optimizer, scheduled: float) -> float:
        """Just before the optimizer steps: the rate it will apply (of its groups' rates, the farthest
        from `scheduled`, so a group left at another rate shows), kept for the schedule check, and
        likewise each other hyper-parameter the record states, kept for the hyperparameters check."""
        applied = applied_lr(optimizer, scheduled)
        self.applied_lrs.append(applied)
        self.applied.append(applied_settings(optimizer, self.stated))
        self.stepped_grad_norms.append(stepped_grad_norm(optimizer))
        return applied


def stepped_grad_norm(optimizer: torch.optim.Optimizer) -> float:
    """The L2 norm, in float64, of the gradients the optimizer's next step applies: every gradient
    its parameter groups hold, after whatever clipping the loop did, so a clip at another norm than
    the stated one shows where it acts (GATE-LENS-002, check clip)."""
    grads = [
        p.grad.detach().double().flatten()
        for g in optimizer.param_groups
        for p in g["params"]
        if p.grad is not None
    ]
    return float(torch.cat(grads).norm()) if grads else 0.0


def sequence_length(asked: int | None, ctx: int) -> int:
    """Tokens per training sequence: as asked, refused past the model's context (a lens fitted on
    shorter windows than asked would be recorded as fitted on what was asked); by default the
    context, at most DEFAULT_SEQ_LEN."""
    if asked is None:
        return min(DEFAULT_SEQ_LEN, ctx)
    if asked > ctx:
        raise BadInput(f"--seq-len {asked} is longer than the model's context of {ctx}; give at most {ctx}")
    return asked


def _reader(model: GPT, data_dir: Path, split: str, settings: LensTraining) -> TokenReader:
    seq_len = sequence_length(settings.seq_len, model.config.ctx)
    return TokenReader(data_dir, split, batch_size=settings.batch_size, seq_len=seq_len, seed=settings.seed)


def _batches(reader: TokenReader, device: torch.device, seed: int) -> Iterator[torch.Tensor]:
    """The training windows' inputs, each batch held first to the plan of the stated `seed`
    (GATE-DATA-001, `check_served`: a reader drawn from another seed serves other windows)."""
    taken = 0
    while True:
        batch = reader.next_batch()
        taken += 1
        check_served(reader, batch, taken, seed)
        yield batch[:, :-1].to(device)


@gate_ensure("GATE-LENS-002", lambda result: health_outcome(result))
def train_lens(
    model: GPT,
    data_dir: Path,
    settings: LensTraining,
    progress: Progress,
    lens: TunedLens | None = None,
) -> TunedLens:
    """Fit `lens` (default: a fresh one) to `model` on data_dir's train split; the model is not changed."""
    device = model.lm_head.weight.device
    batches = _batches(_reader(model, data_dir, "train", settings), device, settings.seed)
    lens = for_model(model) if lens is None else lens
    optimizer = torch.optim.SGD(
        lens.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
    )
    watch = FitWatch(lens, optimizer, settings.stated_hyperparameters(), settings.clip_norm)
    checked = objective_steps(settings.steps)
    objective: dict[str, list[float]] = {"objective_losses": [], "objective_recomputed": []}
    with frozen(model):
        for step in range(1, settings.steps + 1):
            residuals = capture(model, next(batches))
            if step == 1:
                check_start(model, lens, residuals)
            kls = layer_kls(model, lens, residuals)
            loss = _summed(kls)
            if step in checked:  # the tensor backpropagated, beside the objective it stands for
                objective["objective_losses"].append(float(loss.detach()))
                objective["objective_recomputed"].append(recomputed_objective(model, lens, residuals))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            watch.step(lens, kls)
            grad_norm = torch.nn.utils.clip_grad_norm_(lens.parameters(), settings.clip_norm)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr_at(step)
            lr = watch.stepping(optimizer, linear_decay_at(step, lr=settings.lr, total_steps=settings.steps))
            optimizer.step()
            progress(step, {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr})
    check_kl({"objective_steps": checked, **objective})
    lens.fit = watch.probes  # what GATE-LENS-002 judges beside the probes' norms
    scheduled = linear_decay(settings.lr, settings.steps)
    # and how it stepped: the rates, and the other hyper-parameters, as applied and as stated
    lens.schedule = {
        "applied_lrs": watch.applied_lrs,
        "scheduled_lrs": scheduled,
        "applied_hyperparameters": watch.applied,
        "stated_hyperparameters": watch.stated,
        "stepped_grad_norms": watch.stepped_grad_norms,
        "stated_clip_norm": watch.clip_norm,
    }
    return lens.eval()


def heldout_outcome(per_layer: list[dict[str, float]]) -> Outcome:
    """GATE-LENS-003 over the held-out comparison's rows (one warning line per layer that loses)."""
    return measure("GATE-LENS-003", {"layers": per_layer}, holds="the tuned lens is no worse at any layer")


def comparison_set(model: GPT, data_dir: Path, settings: LensTraining) -> list[torch.Tensor]:
    """The held-out batches the two lenses are compared on: the held-out set a training run
    evaluates (stack.data.heldout, windows spread over the split, the same on every call),
    checked against the held-out split's shards before either lens reads it (GATE-DATA-005)."""
    seq_len = sequence_length(settings.seq_len, model.config.ctx)
    batches = heldout_batches(
        data_dir, settings.batch_size, seq_len, settings.heldout_batches, knobs=LENS_KNOBS
    )
    check_heldout(_reader(model, data_dir, "heldout", settings), batches)
    return batches


def read_outcome(batches: list[torch.Tensor], read: list[torch.Tensor]) -> Outcome:
    """GATE-DATA-005's check `read`: the ids the comparison's forwards read (`Residuals.inputs`),
    row by row, against the inputs of the held-out set's windows at the same place. A comparison
    that reads other text than the set it checked (the train split, one batch read twice) shows
    here, where the lenses read it, whatever the set itself was."""
    want = torch.cat([batch[:, :-1] for batch in batches])
    widths = {tuple(ids.shape[1:]) for ids in read}
    got = torch.cat([ids.cpu() for ids in read]) if widths == {tuple(want.shape[1:])} else None
    if got is not None and got.shape == want.shape:
        mismatched = int((got != want).any(dim=1).sum())
    else:  # rows missing, extra or of another width: none is read where the set has it
        mismatched = max(int(want.shape[0]), sum(int(ids.shape[0]) for ids in read))
    measured = {
        "set_windows": int(want.shape[0]),
        "read_windows": sum(int(ids.shape[0]) for ids in read),
        "read_windows_mismatched": mismatched,
    }
    return measure("GATE-DATA-005", measured, holds="the lens comparison read the held-out set")


@gate_require("GATE-DATA-005", lambda batches, read: read_outcome(batches, read))
def check_read(batches: list[torch.Tensor], read: list[torch.Tensor]) -> None:
    """Refuse a lens comparison whose forwards read other windows than the held-out set's."""


def heldout_means(per_batch: list[list[list[float]]]) -> tuple[list[float], list[float]]:
    """The comparison's per-layer means over the held-out batches (each batch's logit-lens, then
    tuned-lens, per-layer means; the batches are of one shape, so this is the mean over every position)."""
    sums = torch.tensor(per_batch, dtype=torch.float64).sum(0) / len(per_batch)
    return sums[0].tolist(), sums[1].tolist()


@gate_ensure("GATE-LENS-003", lambda result: heldout_outcome(result))
def heldout_comparison(
    model: GPT, lens: TunedLens, data_dir: Path, settings: LensTraining
) -> list[dict[str, float]]:
    """Per lens layer, the mean held-out KL to the final distribution, logit lens and tuned lens,
    over the held-out set (`comparison_set`) and only it (`check_read`). Before it is reported, each
    mean is held to the mean over batches of each batch's recomputed apart from it
    (`recomputed_batch_kl`: a plain forward's final distribution, each lens by name), and the windows
    read to the count the settings state (`heldout_windows`) (`check_kl`)."""
    batches = comparison_set(model, data_dir, settings)
    device = model.lm_head.weight.device
    per_batch, recomputed, read = [], [], []
    for batch in batches:
        residuals = capture(model, batch[:, :-1].to(device))
        read.append(residuals.inputs)
        logit, tuned = layer_log_probs(model, residuals, None), layer_log_probs(model, residuals, lens)
        per_batch.append([mean_kl(logit), mean_kl(tuned)])
        recomputed.append(recomputed_batch_kl(model, residuals, lens))
    check_read(batches, read)
    reported = kl_rows(*heldout_means(per_batch))
    check_kl({"layers": reported, "recomputed_batches": recomputed, **heldout_windows(read, settings)})
    return reported


def heldout_windows(read: list[torch.Tensor], settings: LensTraining) -> dict[str, int]:
    """GATE-LENS-006's check windows: the windows the comparison's forwards read (the rows of the ids
    each one consumed, counted where they were read), beside the count the record's settings state,
    --heldout-batches × --batch-size. A set drawn at another size than the record states (a count
    dropped on the way to the set) is compared on other text than the record says, and every
    recomputation of it agrees with itself."""
    return {
        "heldout_windows_read": sum(int(ids.shape[0]) for ids in read),
        "heldout_windows_stated": settings.heldout_batches * settings.batch_size,
    }
