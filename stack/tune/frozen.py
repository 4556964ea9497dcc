"""A frozen model beside the one that trains: the DPO reference, the distillation teacher.

`freeze` puts the model in eval mode, turns off every parameter's gradient and returns the
sha256 of its weights; `ForwardWatch` sees every forward the model runs in the invocation, in the
state it runs in; `frozen_outcome` re-reads all of that after the run. A reference or teacher
that trains with the policy or student (its parameters handed to the optimizer, its forward run
with autograd on, or a `.grad` left to accumulate) moves the target it is meant to hold still:
DPO would measure the policy against itself, a distillation against a teacher that drifts towards
the student. A teacher that scores the steps in train mode (dropout on, depth routing by batch)
gives the loss other targets than the frozen model's, and the state after the run need not show
it: a teacher registered under the student is put back in eval mode by the last evaluation. Both
gates judge the same measurement.
"""

from __future__ import annotations

from typing import Any

import torch

from contracts.evidence import canonical_sha256
from contracts.gates import Outcome, gate_require, measure
from stack.model.gpt import GPT
from stack.model.lora import tensor_hashes


def weights_sha256(model: GPT) -> str:
    """One sha256 over every tensor of the model's state (each by dtype, shape and bytes)."""
    return canonical_sha256(tensor_hashes(model))


def freeze(model: GPT) -> str:
    """Eval mode, no gradients, and the weights' sha256 to compare after the run."""
    model.eval()
    model.requires_grad_(False)
    return weights_sha256(model)


class ForwardWatch:
    """Every forward a frozen model runs from now on, seen as it starts (a forward pre-hook): how
    many, how many with a module in training mode, and how many with autograd on over a weight
    that requires a gradient (a forward whose output the backward would reach the weights by)."""

    def __init__(self, model: GPT) -> None:
        self.forwards = self.in_training = self.tracking_weights = 0
        model.register_forward_pre_hook(self._seen)

    def _seen(self, module: torch.nn.Module, _inputs: Any) -> None:
        self.forwards += 1
        self.in_training += any(m.training for m in module.modules())
        self.tracking_weights += torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())

    def measured(self) -> dict[str, int]:
        """The counts GATE-DPO-002 / GATE-KD-002 judge beside the state after the run."""
        return {
            "forwards": self.forwards,
            "forwards_in_training": self.in_training,
            "forwards_tracking_weights": self.tracking_weights,
        }


def frozen_measured(model: GPT, sha_before: str, watch: ForwardWatch | None = None) -> dict[str, object]:
    """What GATE-DPO-002 / GATE-KD-002 judge: the hash before and after, how frozen it is now, and
    (given the watch over the invocation) how its forwards ran."""
    params = list(model.parameters())
    return {
        "sha256_before": sha_before,
        "sha256_after": weights_sha256(model),
        "training_mode": model.training,
        "requires_grad": sum(1 for p in params if p.requires_grad),
        "with_grad": sum(1 for p in params if p.grad is not None),
        **(watch.measured() if watch is not None else {}),
    }


def frozen_outcome(gate_id: str, model: GPT, sha_before: str, watch: ForwardWatch | None) -> Outcome:
    """`gate_id` (GATE-DPO-002 or GATE-KD-002) over the model after the run."""
    measured = frozen_measured(model, sha_before, watch)
    return measure(gate_id, measured, holds="the frozen model did not change and ran frozen")


@gate_require(
    "GATE-DPO-002",
    lambda model, sha_before, watch: frozen_outcome("GATE-DPO-002", model, sha_before, watch),
)
def check_reference(model: GPT, sha_before: str, watch: ForwardWatch | None = None) -> None:
    """Judge the DPO reference at the end of an invocation."""


@gate_require(
    "GATE-KD-002",
    lambda model, sha_before, watch: frozen_outcome("GATE-KD-002", model, sha_before, watch),
)
def check_teacher(model: GPT, sha_before: str, watch: ForwardWatch | None = None) -> None:
    """Judge the distillation teacher at the end of an invocation."""
