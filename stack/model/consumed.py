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
get) shows it where the loss is made; and the forward's cross-entropy is recorded with what it
read, so the loss a step logs and each held-out batch's loss can be held to the one the model made
(GATE-TRAIN-007's check logged, GATE-EVAL-002's forwards).

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

# The tape being recorded, if any. A plain module-level slot: torch.compile traces a read of it
# and an append to the list without a graph break (a ContextVar would break the graph).
_TAPE: dict[str, list[Consumed] | None] = {"active": None}


@dataclass(frozen=True)
class Consumed:
    """One scoring of a batch: input ids (B, T), targets (B, T) with −1 where no token is scored,
    the document id of each input token (B, T), or None when attention was plain causal, and the
    dtype of the logits the head gave the loss (the compute dtype the run's precision names; None
    for a batch's own statement, which has no logits), and the mean cross-entropy the forward
    computed, detached (None where the scoring is not a cross-entropy: DPO's sums, a statement)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    docs: torch.Tensor | None = None
    logits_dtype: torch.dtype | None = None
    loss: torch.Tensor | None = None


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
def recording() -> Iterator[list[Consumed]]:
    """A fresh tape for the scorings made inside the block, in the order they were made."""
    previous, tape = _TAPE["active"], []
    _TAPE["active"] = tape
    try:
        yield tape
    finally:
        _TAPE["active"] = previous
