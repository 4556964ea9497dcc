"""GATE-TRAIN-008: every optimizer step updates the weights from its own gradients at the scheduled rate.

Three facts about a step that no other gate looks at, each measured where its bug would act:

* `fresh`: before the step's first backward, no trained parameter holds a gradient. A loop that
  forgets `zero_grad` applies the sum of every gradient so far, and trains; only the gradients
  left on the parameters show it. A check of `p.grad is None` per parameter: no device work.
* `schedule`: the rate the optimizer will use, read back from its parameter groups, is the
  schedule's for the step (`contracts.schedule.lr_at`), and that read-back rate is what the
  metrics line logs, so the integrity check re-derives this check from the log and config.
* `moved`: at the probes (the first step of every invocation, then every evaluation step), the
  optimizer holds every trained parameter that received a gradient, and its step changed at
  least one of those whose gradient is not all zeros. A loop whose optimizer never steps, steps
  a copy of the model, or leaves a parameter group out trains with every other gate green. Not
  every such parameter need change: a LoRA A matrix has a zero gradient while B is 0, and a rate
  below a weight's float resolution (a test's lr of 1e-9 on a norm gain of 1) leaves it bit for
  bit as it was. It costs one copy of the trained parameters at those steps only.

A step the fp16 loss scaler skipped (it found an overflow) or one at a rate of exactly 0 moves
nothing by design: `moved` is not judged there, and the next step is watched instead. Under
data or fully sharded parallelism each rank counts its own parameters (replicas, or its shards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from contracts.gates import Outcome, gate_require, measure
from stack.train.distributed import local_shard


def stale_gradients(parameters: Sequence[torch.Tensor]) -> int:
    """How many of `parameters` hold a gradient (none should, before a step's first backward)."""
    return sum(p.grad is not None for p in parameters)


def applied_lr(optimizer: torch.optim.Optimizer, scheduled: float) -> float:
    """The rate the optimizer will apply: of its parameter groups' rates, the farthest from `scheduled`."""
    return max((float(group["lr"]) for group in optimizer.param_groups), key=lambda lr: abs(lr - scheduled))


def _schedule(applied: float, scheduled: float, stale: int, step: int) -> Outcome:
    measured = {"applied_lr": applied, "scheduled_lr": scheduled, "stale_gradients": stale}
    return measure("GATE-TRAIN-008", measured, step=step, holds="the step starts clean at the scheduled rate")


@gate_require("GATE-TRAIN-008", _schedule)
def check_step_start(applied: float, scheduled: float, stale: int, step: int) -> None:
    """Every step, before its first backward: no gradient left over, the optimizer at the scheduled rate."""


@dataclass
class UpdateWatch:
    """The trained parameters with a gradient as they were before the optimizer's step."""

    parameters: list[torch.Tensor]
    before: list[torch.Tensor]
    unoptimized: int

    @classmethod
    def taken(cls, parameters: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer) -> UpdateWatch:
        """A copy of every parameter whose gradient is not all zeros (one device read), and the
        count of parameters with a gradient that no parameter group of `optimizer` holds."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        graded = [p for p in parameters if p.grad is not None]
        nonzero = torch.stack([local_shard(p.grad).ne(0).any() for p in graded]).tolist() if graded else []
        stepped = [local_shard(p) for p, flag in zip(graded, nonzero, strict=True) if flag]
        unoptimized = sum(id(p) not in held for p in graded)
        return cls(stepped, [p.detach().clone() for p in stepped], unoptimized)

    def moved(self) -> int:
        """How many of the watched parameters the step changed (one device read)."""
        if not self.parameters:
            return 0
        changed = torch.stack([(p != b).any() for p, b in zip(self.parameters, self.before, strict=True)])
        return int(changed.sum().item())


def _moved(stepped: int, moved: int, unoptimized: int, step: int) -> Outcome:
    measured = {
        "stepped_parameters": stepped,
        "moved_parameters": moved,
        "unoptimized_parameters": unoptimized,
    }
    return measure(
        "GATE-TRAIN-008", measured, step=step, holds="the step moved the weights the loss differentiated"
    )


@gate_require("GATE-TRAIN-008", _moved)
def check_moved(stepped: int, moved: int, unoptimized: int, step: int) -> None:
    """At a probe: the optimizer holds every parameter with a gradient, and its step changed the weights."""
