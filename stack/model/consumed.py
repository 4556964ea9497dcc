"""What a loss consumed: the inputs, targets and document ids at the place a loss is computed.

A gate that reads the config or builds its own probe cannot see a bug in the code between the
batch and the loss: targets built from the wrong mask, document ids dropped on the way to the
model, a log-probability sum that skips a token. So the two places where the stack turns a
forward into a loss record what they were handed, at the moment they use it:

- `GPT.forward` with targets (the next-token cross-entropy of pretraining, fine-tuning and the
  NLL of distillation): the input ids, the targets (−1 where nothing is scored) and `docs`;
- `stack.tune.dpo.sequence_logprobs` (the sums DPO compares): the input ids and, as targets,
  the next token at every position its mask scores (−1 elsewhere).

Both also record the dtype of the logits the loss read, so a run configured in one precision
that computes in another (an autocast the config did not ask for, or one it asked for and did not
get) shows it where the loss is made; the forward's cross-entropy is recorded with what it read,
so the loss a step logs and each held-out batch's loss can be held to the one the model made
(GATE-TRAIN-007's check logged, GATE-EVAL-002's forwards); and the mode the model ran in
(`mode_of`: dropout drawn or not), so a training step computed in evaluation mode, or an
evaluation in training mode, shows where the loss is made (GATE-TRAIN-007's and GATE-EVAL-001's
check mode). A tape opened with `keep_logits` also keeps the logits themselves, which a probe
compares with the model's plain inference forward (GATE-TRAIN-007's check inference); a step's
tape does not, so it holds no (B, T, vocab) tensor past the loss.

They record into the tape of `recording()`, which the training loop opens around each
micro-batch's loss (stack.train.consumption compares the tape with what the batch states,
GATE-TRAIN-007). Outside a tape, `record` does nothing. The tape holds references to tensors
the step holds anyway: recording copies nothing and reads nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# The tape being recorded, if any, and whether it keeps the logits. Plain module-level slots:
# torch.compile traces a read of them and an append to the list without a graph break (a
# ContextVar would break the graph).
_TAPE: dict[str, list[Consumed] | None] = {"active": None}
_KEEP_LOGITS = {"active": False}

# The mode a forward ran in (`mode_of`): every module in training mode, none, or some of them.
TRAIN, EVAL, MIXED = "train", "eval", "mixed"


@dataclass(frozen=True)
class Consumed:
    """One scoring of a batch: input ids (B, T), targets (B, T) with −1 where no token is scored,
    the document id of each input token (B, T), or None when attention was plain causal, and the
    dtype of the logits the head gave the loss (the compute dtype the run's precision names; None
    for a batch's own statement, which has no logits), and the mean cross-entropy the forward
    computed, detached (None where the scoring is not a cross-entropy: DPO's sums, a statement).

    `mode` is the mode the scored model ran in (`mode_of`). A statement names one only for a scoring
    the run's training steps make with a frozen model (DPO's reference: EVAL); None there means the
    model the run trains, which its training steps run in TRAIN. `logits` are the logits the loss
    read, detached, kept only on a tape opened with `keep_logits` (None elsewhere)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    docs: torch.Tensor | None = None
    logits_dtype: torch.dtype | None = None
    loss: torch.Tensor | None = None
    mode: str | None = None
    logits: torch.Tensor | None = None


def next_tokens(batch: torch.Tensor) -> list[Consumed]:
    """What a window of T+1 tokens states a next-token loss scores: its first T are read and every
    one of its last T is a target (pretraining's step, the language-model fitness of `stack es`)."""
    return [Consumed(inputs=batch[:, :-1], targets=batch[:, 1:])]


def mode_of(model: torch.nn.Module) -> str:
    """TRAIN when every module of `model` is in training mode (each dropout draws), EVAL when none
    is, MIXED otherwise: a module left in the other mode (an adapter's dropout not switched back)
    is a forward in neither mode."""
    modes = {module.training for module in model.modules()}
    return MIXED if len(modes) > 1 else TRAIN if modes == {True} else EVAL


def taping() -> bool:
    """Whether a tape is being recorded: a forward then records what it read (`record`)."""
    return _TAPE["active"] is not None


def kept(logits: torch.Tensor) -> torch.Tensor | None:
    """`logits`, detached, when the tape keeps logits (a probe's); else None, so a step's tape holds
    no (B, T, vocab) tensor beyond the loss."""
    return logits.detach() if _KEEP_LOGITS["active"] else None


def logits_dtypes(tape: list[Consumed]) -> set[str]:
    """The dtypes of the logits the scorings of `tape` read, by torch's name ("bfloat16"), as the
    precision checks compare them with train.precision's compute dtype."""
    return {str(c.logits_dtype).removeprefix("torch.") for c in tape if c.logits_dtype is not None}


def record(consumed: Consumed) -> None:
    """Append `consumed` to the active tape (no tape: nothing happens)."""
    tape = _TAPE["active"]
    if tape is not None:
        tape.append(consumed)


@contextmanager
def recording(*, keep_logits: bool = False) -> Iterator[list[Consumed]]:
    """A fresh tape for the scorings made inside the block, in the order they were made; with
    `keep_logits` each scoring also keeps the logits it read."""
    previous, tape = _TAPE["active"], []
    keeping = _KEEP_LOGITS["active"]
    _TAPE["active"], _KEEP_LOGITS["active"] = tape, keep_logits
    try:
        yield tape
    finally:
        _TAPE["active"], _KEEP_LOGITS["active"] = previous, keeping
