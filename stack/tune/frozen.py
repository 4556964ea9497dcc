"""A frozen model beside the one that trains: the DPO reference, the distillation teacher.

`freeze` puts the model in eval mode, turns off every parameter's gradient and returns the
sha256 of its weights; `frozen_outcome` re-reads all of that after the run. A reference or
teacher that trains with the policy or student (its parameters handed to the optimizer, its
forward run with autograd on, or a `.grad` left to accumulate) moves the target it is meant
to hold still: DPO would measure the policy against itself, a distillation against a teacher
that drifts towards the student. Both gates judge the same measurement.
"""

from __future__ import annotations

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


def frozen_measured(model: GPT, sha_before: str) -> dict[str, object]:
    """What GATE-DPO-002 / GATE-KD-002 judge: the hash before and after, and how frozen it is now."""
    params = list(model.parameters())
    return {
        "sha256_before": sha_before,
        "sha256_after": weights_sha256(model),
        "training_mode": model.training,
        "requires_grad": sum(1 for p in params if p.requires_grad),
        "with_grad": sum(1 for p in params if p.grad is not None),
    }


def frozen_outcome(gate_id: str, model: GPT, sha_before: str) -> Outcome:
    """`gate_id` (GATE-DPO-002 or GATE-KD-002) over the model after the run."""
    return measure(gate_id, frozen_measured(model, sha_before), holds="the frozen model did not change")


@gate_require("GATE-DPO-002", lambda model, sha_before: frozen_outcome("GATE-DPO-002", model, sha_before))
def check_reference(model: GPT, sha_before: str) -> None:
    """Judge the DPO reference at the end of an invocation."""


@gate_require("GATE-KD-002", lambda model, sha_before: frozen_outcome("GATE-KD-002", model, sha_before))
def check_teacher(model: GPT, sha_before: str) -> None:
    """Judge the distillation teacher at the end of an invocation."""
