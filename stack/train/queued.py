"""An optimizer step queued ahead of its judges, and the device-side skip that makes that safe.

The loop reads each step's measurements once (loss, gradient norms, what the loss consumed) and
holds them to the gates. Read before the optimizer's step, as a probe needs, that read makes the
GPU wait for the host: nothing is queued while the host reads, checks, logs and loads the next
batch. Where the optimizer can skip a step on the device, the loop queues the optimizer's step
and, in `Trainer.run`, the next step's forwards and backwards too, and judges the step while the
GPU works (`Trainer.judge`): the GPU is then idle only when the host is slower than a step.

What a step judged late still guarantees (GATE-TRAIN-003): its optimizer step is
skipped on the device where its loss or gradient norm is not finite (`step_unless`: a fused AdamW
leaves weights, moments and its step count as they were, as it does for a loss scaler's overflow),
and the run judges every step before anything reads or keeps what it made (an evaluation, a
sample, a probe, a checkpoint, the state digests the replay compares, the end of the run), so a
gate that fires halts the run with nothing kept of the step it fired at or of the one queued
behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from stack.model.moe_checks import AuxGradients
from stack.train.consumption import Tally
from stack.train.readback import Readback


@dataclass
class QueuedStep:
    """What the host knew of one step as it queued it, and its measurements on their way back;
    `line` is its metrics line once judged."""

    step: int
    started: float  # time.perf_counter() as the step began
    applied: float  # the schedule's rate, read back from the optimizer
    phase: int | None  # the curriculum's phase when it switched at this step
    epoch_before: int  # the reader's epoch as the step began
    epoch: int  # and after its batches
    shares: dict[str, float]  # the policy's shares the step was served by
    hashes: list[str]  # each micro-batch's hash
    planned: list[str]  # each micro-batch's hash in the run's plan
    served_tokens: int
    tally: Tally  # what the step's losses consumed (GATE-TRAIN-007)
    moe: bool  # whether the model returned auxiliary losses
    aux_count: int  # how many of the measurements are the objective and its auxiliary terms
    defined_count: int  # how many are the terms as defined, recomputed from the routers
    extra_names: tuple[str, ...]  # the objective's own scalars, by name
    aux_gradients: AuxGradients
    measured: Readback  # every measurement of the step, on its way to the host
    extra_values: list[float] = field(default_factory=list)  # the objective's scalars, once read
    line: dict[str, Any] | None = None


def step_unless(optimizer: torch.optim.Optimizer, not_finite: torch.Tensor) -> None:
    """`optimizer.step()`, which a fused AdamW skips on the device where `not_finite` (a bool on the
    parameters' device) is true: its found_inf, the flag a loss scaler hands it, read by the
    kernel, not by the host."""
    optimizer.found_inf = not_finite.float()  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # type: ignore[attr-defined]
