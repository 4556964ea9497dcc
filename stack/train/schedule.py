"""The learning-rate schedule: linear warmup, then cosine decay to min_lr.

A pure function of the step, so a resumed run needs no scheduler object to restore: the step
alone puts the learning rate exactly where the uninterrupted run had it.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (1-based)."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
