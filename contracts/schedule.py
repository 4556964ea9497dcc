"""The learning-rate schedules: linear warmup, then cosine decay to min_lr; the tuned lens's linear decay.

A pure function of the step, so a resumed run needs no scheduler object to restore: the step
alone puts the learning rate exactly where the uninterrupted run had it. It lives in contracts
because it is a rule two sides apply: the training loop sets each step's rate with it, and the
integrity check re-derives GATE-TRAIN-008's schedule check from a record's config and metrics
log with the same function (contracts.derive.training).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (1-based)."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# The train settings that decide the schedule: the loop logs them at the start of every
# invocation (an event "schedule" in metrics.jsonl), since a resume may change them.
SCHEDULE_KEYS = ("lr", "min_lr", "warmup_steps", "steps")


def scheduled(step: int, settings: Mapping[str, Any]) -> float:
    """`lr_at` of `step` under `settings` (the SCHEDULE_KEYS of a train config or a schedule event)."""
    return lr_at(
        step,
        lr=settings["lr"],
        min_lr=settings["min_lr"],
        warmup_steps=settings["warmup_steps"],
        total_steps=settings["steps"],
    )


def linear_decay_at(step: int, *, lr: float, total_steps: int) -> float:
    """The tuned lens's rate for optimizer step `step` (1-based) of `total_steps`: lr · (1 − (step − 1)
    / total_steps), lr at the first step and decayed linearly toward 0, no warmup (the tuned-lens
    package's SGD schedule). `stack lens --train` sets each step's rate with it, and GATE-LENS-002
    holds the rate its optimizer applied at every step to it, at run time and in the checker."""
    return lr * (1 - (step - 1) / total_steps)


def linear_decay(lr: float, total_steps: int) -> list[float]:
    """`linear_decay_at` of every step 1..total_steps: a lens run's whole schedule."""
    return [linear_decay_at(step, lr=lr, total_steps=total_steps) for step in range(1, total_steps + 1)]
