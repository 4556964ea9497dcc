"""GATE-EVAL-001 at the evaluation's forwards: what they read, against the held-out set.

The held-out set is judged when the run makes it: its distinct windows (GATE-EVAL-001's
`check_heldout_set`) and its windows against the held-out split's (GATE-DATA-005). An
evaluation can still score something else than the set: a loop that indexes it wrongly scores
two batches eight times while the list it was handed still counts sixteen. So every evaluation
records what its forwards consumed (the tape of stack.model.consumed, as training's loss does)
and `HeldoutReads` compares it, batch by batch, with the statement of the held-out batch that
forward was to score (`Objective.stated`, read from the set itself, never from the batch the
forward was given): the batches scored, the scorings made, the positions read otherwise, and
the distinct windows read against those the set states; the dtype of the logits every
forward read, which must be the compute dtype train.precision names (an evaluation under an
autocast the run did not ask for reports a held-out loss of another precision); and the mode every
forward ran in, which must be evaluation mode (stack.model.consumed.mode_of): a held-out loss with
dropout drawn into it is noisier and higher than the model's, and early stopping judges it.

Cost: each forward's inputs, targets and document ids are copied to the host without blocking;
once the last forward has run, the comparison and the count of distinct windows (a sha256 per
row) run on the host. Once per evaluation; nothing is added to a training step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch

from contracts.gates import Outcome, gate_require, measure
from stack.model.consumed import EVAL, Consumed, logits_dtypes
from stack.train.consumption import compare

# What `HeldoutReads.counts` returns, in order: summed over the ranks that share an evaluation.
COUNTS = ("scored_batches", "scorings", "stated_scorings", "mismatched_positions", "consumed_windows")


def window_digests(scorings: Iterable[Consumed]) -> set[bytes]:
    """One sha256 per row of each scoring: its input ids, targets and document ids up to the
    scoring's last scored column (so a scoring cut to its longest row, as DPO's are, is the same
    window as its statement)."""
    digests = set()
    for scoring in scorings:
        columns = (scoring.targets >= 0).any(dim=0).nonzero()
        width = int(columns[-1]) + 1 if len(columns) else 0
        parts = [scoring.inputs, scoring.targets, *([] if scoring.docs is None else [scoring.docs])]
        rows = torch.cat([part[:, :width].to(torch.int64) for part in parts], dim=1).contiguous().numpy()
        digests.update(hashlib.sha256(row.tobytes()).digest() for row in rows)
    return digests


def windows_sha256(scorings: Iterable[Consumed]) -> str:
    """One sha256 of the distinct windows the scorings read (`window_digests`, in sorted order):
    equal for two sets of scorings exactly when they read the same windows."""
    return hashlib.sha256(b"".join(sorted(window_digests(scorings)))).hexdigest()


def to_host(scoring: Consumed) -> Consumed:
    """A host copy of a scoring, queued without blocking: read only once the device has finished."""

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu", non_blocking=True)

    docs = None if scoring.docs is None else copy(scoring.docs)
    return Consumed(copy(scoring.inputs), copy(scoring.targets), docs)


class HeldoutReads:
    """What one evaluation's forwards consumed, batch by batch, beside what each batch states."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._batches: list[tuple[list[Consumed], list[Consumed]]] = []
        self.logits_dtypes: set[str] = set()  # of every scoring, held to train.precision
        self.modes: set[str] = set()  # of every scoring, held to evaluation mode
        self.mismatched_modes = 0

    def add(self, tape: list[Consumed], stated: list[Consumed]) -> None:
        """One held-out batch: its forward's tape (on the device) and its statement (on the host)."""
        self._batches.append(([to_host(scoring) for scoring in tape], stated))
        self.logits_dtypes |= logits_dtypes(tape)
        self.modes |= {str(scoring.mode) for scoring in tape}
        self.mismatched_modes += sum(scoring.mode != EVAL for scoring in tape)

    def measured_modes(self) -> dict[str, Any]:
        """GATE-EVAL-001's mode values: the modes this rank's forwards ran in, and how many of its
        scorings ran in another than evaluation mode."""
        return {"modes": sorted(self.modes), "mismatched_modes": self.mismatched_modes}

    def counts(self) -> list[int]:
        """This rank's COUNTS, once its forwards have finished (waited for here)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        scorings = stated_scorings = mismatched = 0
        for consumed, stated in self._batches:
            scorings, stated_scorings = scorings + len(consumed), stated_scorings + len(stated)
            for got, want in zip(consumed, stated, strict=False):  # an extra or missing one: the counts
                mismatched += int(compare(got, want)[2:].sum())
        scored = sum(1 for consumed, _ in self._batches if consumed)
        windows = len(window_digests(scoring for consumed, _ in self._batches for scoring in consumed))
        return [scored, scorings, stated_scorings, mismatched, windows]


def reads_outcome(measured: dict[str, Any], step: int) -> Outcome:
    """GATE-EVAL-001 over what one evaluation read."""
    return measure("GATE-EVAL-001", measured, step=step, holds="the evaluation read the whole held-out set")


@gate_require("GATE-EVAL-001", lambda measured, step: reads_outcome(measured, step))
def check_heldout_reads(measured: dict[str, Any], step: int) -> None:
    """Refuse an evaluation whose forwards did not read every held-out batch as it states."""
