"""Objectives: what one training loop optimises, chosen by `train.task` (a loop setting, not a loop).

The loop in stack.train.loop is the same for every task: it reads a batch from the task's
reader, asks the task's objective for a loss, adds the MoE auxiliary terms of the model's
last forward, back-propagates, clips, steps and logs. What differs between pretraining and
fine-tuning is only here:

| method           | answers                                                                 |
|------------------|-------------------------------------------------------------------------|
| `open_reader`    | the train stream (a TokenReader or a subclass yielding richer batches)  |
| `heldout`        | the fixed held-out batches, masked as training is                       |
| `window`         | the sequence length the reader serves (ctx, or what the data fixes)     |
| `tokens`         | the token ids of a batch, hashed into every metrics line                |
| `to_device`      | the batch moved to the model's device                                   |
| `loss`           | `StepLoss(backprop, logged, metrics)` of one micro-batch                |
| `stated`         | what a batch states its loss must read (GATE-TRAIN-007 compares)        |
| `probe`          | the task's identities on the batch the loss just used, on a cadence     |
| `heldout_loss`   | the held-out loss of one batch (no gradient)                            |
| `start`          | the task's start-up gates on the model, once the loop begins            |
| `bind`           | what the task holds beside the model (a frozen teacher), on its device  |
| `finish`         | the task's end-of-run gates (the frozen model did not move)             |
| `state`          | what a resume must find unchanged (a frozen model's hash), or nothing   |
| `restore`        | refuse a resume whose bound inputs differ from that state               |

Every loss is computed by the model's forward with targets, or by the preference scoring
(stack.tune.dpo.sequence_logprobs); each records what it read (stack.model.consumed), and the
loop compares that, every micro-batch, with `stated`: the inputs, targets and document ids read
straight from the batch's own tensors (its tokens, and the labels prepare wrote), never through
the code that builds the loss's targets, so a bug in that code shows as a difference.

`backprop` is what is back-propagated (before the loop adds the MoE terms and divides by
grad_accum); `logged` is the `loss` of the metrics line; `metrics` are extra scalars, averaged
over micro-batches and ranks like the loss and logged under their own names. Each task's objective
is listed in stack.train.tasks under the `train.task` value that selects it; `pretrain` is what
an unset `train.task` means, so a pretraining run's config, metrics and hashes are those of
the stack before tasks existed. A task whose loss is not the next-token cross-entropy of a
fresh model (distillation) sets `first_loss_is_ln_vocab = False`: GATE-TRAIN-004 does not
apply to it.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contracts.device_copy import sent
from stack.data.heldout import heldout_batches
from stack.data.reader import TokenReader
from stack.model.consumed import Consumed, next_tokens
from stack.train.config import RunConfig
from stack.train.consumption import Part, check_served

DEFAULT_TASK = "pretrain"
Forward = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
# A probe reads a micro-batch in parts of a PROBE_PARTS-th of its rows, PROBE_MIN_ROWS at least.
PROBE_PARTS = 4
PROBE_MIN_ROWS = 2


def probe_rows(rows: int) -> int:
    """Rows of a micro-batch of `rows` that a probe reads at once: a quarter of them, and no fewer
    than PROBE_MIN_ROWS (or all there are).

    A probe computes in fp32 (a bf16 step holds half the bytes per activation), takes a backward,
    and keeps both modes' logits beside the plain forward's: over the whole micro-batch its peak
    was the run's, above any training step's. A quarter keeps it below the step's own. Two rows at
    least, so a loss that mixes up the rows of its batch still shows in the part it is probed on.
    """
    return min(rows, max(PROBE_MIN_ROWS, -(-rows // PROBE_PARTS)))


@dataclass
class StepLoss:
    """One micro-batch's loss: what to back-propagate, what to log, and extra logged scalars."""

    backprop: torch.Tensor
    logged: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """A training task's data and loss; see the module docstring for the contract of each method."""

    name: str
    # Names of the extra scalars `loss` returns, in a fixed order (the loop logs them by name).
    metric_names: tuple[str, ...] = ()
    # GATE-TRAIN-004 judges the first loss of a fresh model against ln(vocab): only where the loss
    # is that cross-entropy.
    first_loss_is_ln_vocab: bool = True
    # Whether the loss it logs is the model's own cross-entropy, the one GPT.forward records (then
    # the loss a step logs and each held-out batch's are held to it: GATE-TRAIN-007's logged check,
    # GATE-EVAL-002's forwards); DPO's loss and distillation's mix are not that loss.
    logs_forward_loss: bool = True
    # The kind of DATA_DIR it reads, as a need of stack.artifacts: a run on another is refused first.
    data: str = "data-pretrain"
    # Whether its windows pack several documents that must not attend to each other (the model's
    # `docs` mask): an attention path without that mask (triton) is refused at set-up.
    document_masks: bool = False

    def bind(self, config: RunConfig, data_dir: Path, device: torch.device) -> None:  # noqa: B027
        """Load what the task holds beside the trained model, on the run's device (optional hook)."""

    def window(self, data_dir: Path, ctx: int) -> int:
        """Tokens of input per sequence: the model's context unless the data fixes a shorter one."""
        return ctx

    @abstractmethod
    def open_reader(self, data_dir: Path, **options: Any) -> TokenReader:
        """The train split's reader; `options` are TokenReader's keyword arguments."""

    @abstractmethod
    def heldout(self, data_dir: Path, batch_size: int, seq_len: int, n_batches: int | None) -> list[Any]:
        """The held-out batches every evaluation of the run scores."""

    @abstractmethod
    def tokens(self, batch: Any) -> torch.Tensor:
        """The (B, T+1) token ids of a batch: what its sha256 in the metrics line is of."""

    @abstractmethod
    def to_device(self, batch: Any, device: torch.device) -> Any:
        """The batch on `device`."""

    @abstractmethod
    def loss(self, forward: Forward, model: torch.nn.Module, batch: Any) -> StepLoss:
        """The loss of one micro-batch under `forward` (the model, or its DDP/compiled wrapper)."""

    def loss_again(self, forward: Forward, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """What `loss` back-propagated for `batch`, computed again and kept nowhere: GATE-TRAIN-008's
        reference gradient is taken from it (stack.train.stepping). A task whose `loss` keeps
        something of the step it scores overrides this, so that the step is not counted twice."""
        return self.loss(forward, model, batch).backprop

    @abstractmethod
    def stated(self, batch: Any) -> list[Consumed]:
        """Each scoring the loss of `batch` must make, in order, as the batch's own tensors state it."""

    def probe(self, model: torch.nn.Module, batch: Any, step: int) -> None:  # noqa: B027 - optional hook
        """Judge the task's identities on `batch`, the micro-batch the loss just used. The loop calls
        it on the first step of every invocation and at every evaluation, with `model` in eval mode
        and gradients off."""

    def probe_parts(self, model: torch.nn.Module, batch: Any) -> list[Part]:
        """`batch` as the consecutive parts a probe reads one at a time (`probe_rows`), each as its
        loss under `model` and what its rows state: every window is probed, and a probe holds one
        part's forward and backward at once."""
        rows = len(self.tokens(batch))
        size = probe_rows(rows)
        parts = [batch[start : start + size] for start in range(0, rows, size)]
        return [(functools.partial(self._backprop, model, part), self.stated(part)) for part in parts]

    def _backprop(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The loss the loop back-propagates for `batch` under the plain `model`."""
        return self.loss(model, model, batch).backprop

    def start(self, model: torch.nn.Module, heldout: list[Any]) -> None:  # noqa: B027 - optional hook
        """The task's start-up gates on the model it is about to train (none for pretraining)."""

    def check_heldout(  # noqa: B027 - optional hook
        self, model: torch.nn.Module, batch: Any, loss: torch.Tensor, step: int
    ) -> None:
        """Judge the held-out loss an evaluation took of its first batch against the task's own
        definition, where the forward's cross-entropy is not that loss (GATE-EVAL-002's forwards
        check holds it where it is). The loop calls it inside the evaluation's autocast."""

    def finish(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """The task's gates judged once the loop has run its steps (none for pretraining)."""

    def state(self) -> dict[str, Any]:
        """What each checkpoint records about the task's bound inputs (none for pretraining): an
        empty dict adds nothing to the checkpoint's state.json."""
        return {}

    def restore(self, state: dict[str, Any] | None) -> None:  # noqa: B027 - optional hook
        """Refuse, as bad input, a resume whose bound inputs are not the ones `state` recorded."""

    def heldout_loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The held-out loss of one batch: by default the logged loss of `loss` under the plain model."""
        return self.loss(model, model, batch).logged


class Pretrain(Objective):
    """Next-token cross-entropy on every position of contiguous windows: the stack's pretraining."""

    name = DEFAULT_TASK

    def open_reader(self, data_dir: Path, **options: Any) -> TokenReader:
        return TokenReader(data_dir, split="train", **options)

    def heldout(self, data_dir: Path, batch_size: int, seq_len: int, n_batches: int | None) -> list[Any]:
        return heldout_batches(data_dir, batch_size, seq_len, n_batches=n_batches)

    def tokens(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def to_device(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        return sent(batch, device)

    def loss(self, forward: Forward, model: torch.nn.Module, batch: torch.Tensor) -> StepLoss:
        _, loss = forward(batch[:, :-1], batch[:, 1:])
        assert loss is not None
        return StepLoss(backprop=loss, logged=loss)

    def stated(self, batch: torch.Tensor) -> list[Consumed]:
        """A window of T+1 tokens: its first T are read and every one of its last T is a target."""
        return next_tokens(batch)

    def probe(self, model: torch.nn.Module, batch: torch.Tensor, step: int) -> None:
        """GATE-TRAIN-007 measured at the loss, in training mode: the targets its gradient shows it
        scored, and how, against the window's next tokens; and in both modes, the logits it read and
        its value against the model's plain inference forward."""
        check_served(self.probe_parts(model, batch), model, self.stated(batch), step)
