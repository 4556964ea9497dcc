"""The training loop's gate checks at step boundaries, each bound to its gate.

All of them take Python scalars the loop already has (one host sync per step for loss and
gradient norm), so the law costs no extra device synchronisation.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.gates import Outcome, gate_require, measure


def _stability(clip_norm: float, warmup_steps: int, weight_decay: float) -> Outcome:
    measured = {"clip_norm": clip_norm, "warmup_steps": warmup_steps, "weight_decay": weight_decay}
    return measure("GATE-TRAIN-002", measured, holds="clipping, warmup and weight decay are on")


@gate_require("GATE-TRAIN-002", _stability)
def check_stability(clip_norm: float, warmup_steps: int, weight_decay: float) -> None:
    """Refuse a configuration without gradient clipping, warmup or decoupled weight decay."""


def _finite(loss: float, grad_norm: float, step: int) -> Outcome:
    # Non-finite floats are kept as text: JSON has no NaN, and the judge reads 'nan' back.
    measured = {
        name: v if math.isfinite(v) else str(v) for name, v in (("loss", loss), ("grad_norm", grad_norm))
    }
    return measure("GATE-TRAIN-003", measured, step=step, holds="loss and gradient norm are finite")


@gate_require("GATE-TRAIN-003", _finite)
def check_finite(loss: float, grad_norm: float, step: int) -> None:
    """Halt before a non-finite loss or gradient reaches the weights."""


def _first_loss(loss: float, vocab: int, step: int) -> Outcome:
    return measure("GATE-TRAIN-004", {"loss": loss, "vocab": vocab}, step=step)


@gate_require("GATE-TRAIN-004", _first_loss)
def check_first_loss(loss: float, vocab: int, step: int) -> None:
    """A fresh model predicts uniformly; a first loss far from ln(vocab) means a broken init or wiring."""


STEP_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "batch_sha256")


def _complete_line(line: dict[str, Any], previous_step: int | None) -> Outcome:
    missing = [k for k in STEP_FIELDS if line.get(k) is None]
    step = line.get("step")
    measured = {
        "missing": missing,
        "previous_step": previous_step,
        "step": step if isinstance(step, int) else -1,
    }
    return measure("GATE-TRAIN-001", measured, step=step if isinstance(step, int) else None)


@gate_require("GATE-TRAIN-001", _complete_line)
def check_step_line(line: dict[str, Any], previous_step: int | None) -> None:
    """Every optimizer step leaves one complete metrics line, with no step skipped."""
