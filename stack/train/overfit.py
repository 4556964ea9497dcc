"""Overfitting is noticed while it happens (GATE-EVAL-004), so the release is not the last step's weights.

A warning gate: detection is recorded as WARN and in `OverfitDetector.detected_at_step`; the run
goes on, and whoever picks the checkpoint to release knows where held-out loss turned.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.derive.training import diverging, finite_or_text
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.judges import judge


def _overfit_outcome(detector: OverfitDetector, step: int) -> Outcome:
    return measure("GATE-EVAL-004", {"diverging_evals": detector.diverging_evals}, step=step)


def _compared_outcome(
    detector: OverfitDetector, train_loss: float, heldout_loss: float, step: int
) -> Outcome:
    compared = detector.previous if detector.previous is not None else (math.nan, math.nan)
    measured = {
        "compared_train_loss": compared[0],
        "compared_heldout_loss": compared[1],
        "reported_train_loss": train_loss,
        "reported_heldout_loss": heldout_loss,
    }
    return measure("GATE-EVAL-004", {k: finite_or_text(v) for k, v in measured.items()}, step=step)


@gate_require("GATE-EVAL-004", _compared_outcome)
def check_compared(detector: OverfitDetector, train_loss: float, heldout_loss: float, step: int) -> None:
    """After each evaluation: the detector compared the train and held-out losses the evaluation
    line reports (its held-out loss held to every batch's by GATE-EVAL-002), not others: a detector
    fed the train loss twice can never see the two part."""


class OverfitDetector:
    """Counts evaluations where held-out loss rose while train loss fell; prevents releasing an overfit model.

    Each evaluation is compared with the previous one; `overfit_window_evals` such evaluations in
    a row mean overfitting. Any other evaluation ends the streak.
    """

    def __init__(self) -> None:
        self.previous: tuple[float, float] | None = None  # (train loss, held-out loss)
        self.diverging_evals = 0
        self.detected_at_step: int | None = None

    @gate_ensure(
        "GATE-EVAL-004",
        lambda self, step: _overfit_outcome(self, step),
    )
    def observe(self, train_loss: float, heldout_loss: float, step: int) -> bool:
        """Take one evaluation; True while the diverging streak is at least the window long."""
        # The rule contracts.derive replays over the metrics log's evaluations.
        self.diverging_evals = (
            self.diverging_evals + 1 if diverging(self.previous, train_loss, heldout_loss) else 0
        )
        self.previous = (train_loss, heldout_loss)
        overfitting = bool(judge("GATE-EVAL-004", {"diverging_evals": self.diverging_evals}))
        if overfitting and self.detected_at_step is None:
            self.detected_at_step = step
        return overfitting

    def state_dict(self) -> dict[str, Any]:
        """The last evaluation, the streak and the first detection, JSON-serialisable."""
        return {
            "previous": None if self.previous is None else list(self.previous),
            "diverging_evals": self.diverging_evals,
            "detected_at_step": self.detected_at_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so a streak spanning a resume is still seen."""
        previous = state["previous"]
        self.previous = None if previous is None else (float(previous[0]), float(previous[1]))
        self.diverging_evals = int(state["diverging_evals"])
        self.detected_at_step = state["detected_at_step"]
