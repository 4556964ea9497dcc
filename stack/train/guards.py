"""The training loop's gate checks at step boundaries, each bound to its gate.

All of them take Python scalars the loop already has (one host sync per step for loss and
gradient norm), so the law costs no extra device synchronisation.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.gates import Outcome, gate_require
from contracts.spec import load_spec


def _stability(clip_norm: float, warmup_steps: int, weight_decay: float) -> Outcome:
    spec = load_spec()
    max_clip = spec.threshold("GATE-TRAIN-002", "max_clip_norm")
    min_warmup = spec.threshold("GATE-TRAIN-002", "min_warmup_steps")
    min_wd = spec.threshold("GATE-TRAIN-002", "min_weight_decay")
    problems = []
    if not 0 < clip_norm <= max_clip:
        problems.append(f"train.clip_norm={clip_norm} is not in (0, {max_clip}]")
    if warmup_steps < min_warmup:
        problems.append(f"train.warmup_steps={warmup_steps} < {min_warmup}")
    if weight_decay < min_wd:
        problems.append(f"train.weight_decay={weight_decay} < {min_wd}")
    return Outcome(
        ok=not problems,
        message="the stability stack is off: " + "; ".join(problems),
        measured={"clip_norm": clip_norm, "warmup_steps": warmup_steps, "weight_decay": weight_decay},
        threshold={"max_clip_norm": max_clip, "min_warmup_steps": min_warmup, "min_weight_decay": min_wd},
    )


@gate_require("GATE-TRAIN-002", _stability)
def check_stability(clip_norm: float, warmup_steps: int, weight_decay: float) -> None:
    """Refuse a configuration without gradient clipping, warmup or decoupled weight decay."""


def _finite(loss: float, grad_norm: float, step: int) -> Outcome:
    return Outcome(
        ok=math.isfinite(loss) and math.isfinite(grad_norm),
        message=f"non-finite loss or gradient norm before optimizer step {step}; halting",
        measured={"loss": str(loss), "grad_norm": str(grad_norm)},
        step=step,
    )


@gate_require("GATE-TRAIN-003", _finite)
def check_finite(loss: float, grad_norm: float, step: int) -> None:
    """Halt before a non-finite loss or gradient reaches the weights."""


def _first_loss(loss: float, vocab: int, step: int) -> Outcome:
    tolerance = load_spec().threshold("GATE-TRAIN-004", "first_loss_tolerance")
    expected = math.log(vocab)
    return Outcome(
        ok=abs(loss - expected) <= tolerance,
        message=f"first loss {loss:.4f} is not within {tolerance} of ln({vocab}) = {expected:.4f}",
        measured=loss,
        threshold={"expected": expected, "tolerance": tolerance},
        step=step,
    )


@gate_require("GATE-TRAIN-004", _first_loss)
def check_first_loss(loss: float, vocab: int, step: int) -> None:
    """A fresh model predicts uniformly; a first loss far from ln(vocab) means a broken init or wiring."""


STEP_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "batch_sha256")


def _complete_line(line: dict[str, Any], previous_step: int | None) -> Outcome:
    missing = [k for k in STEP_FIELDS if line.get(k) is None]
    gap = previous_step is not None and line.get("step") != previous_step + 1
    return Outcome(
        ok=not missing and not gap,
        message=(
            f"metrics line lacks {', '.join(missing)}"
            if missing
            else f"metrics jump from step {previous_step} to {line.get('step')}"
        ),
        measured={"missing": missing, "previous_step": previous_step, "step": line.get("step")},
        step=line.get("step"),
    )


@gate_require("GATE-TRAIN-001", _complete_line)
def check_step_line(line: dict[str, Any], previous_step: int | None) -> None:
    """Every optimizer step leaves one complete metrics line, with no step skipped."""
