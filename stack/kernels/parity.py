"""GATE-KERNEL-001's comparison: the Triton attention's outputs and gradients against a reference.

The tests (and a GPU check) compute the kernel's out, dq, dk, dv and the same four from the naive
attention in fp32 on the same inputs; this module turns them into the numbers the gate's judge
reads, so the tolerance rule lives in one place (contracts/judges/kernel.py) and switching the gate off
in a mutation run really does let a broken kernel through.
"""

from __future__ import annotations

import torch

from contracts.gates import Outcome, measure

GATE = "GATE-KERNEL-001"


def deviation(actual: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Max |actual - reference| and max |reference|, in float64 (inf when the shapes differ)."""
    if actual.shape != reference.shape:
        return {"max_abs_diff": float("inf"), "ref_absmax": 0.0}
    actual, reference = actual.double(), reference.double()
    if actual.numel() == 0:
        return {"max_abs_diff": 0.0, "ref_absmax": 0.0}
    diff = (actual - reference).abs().max().item()
    return {
        "max_abs_diff": diff if diff == diff else float("inf"),
        "ref_absmax": reference.abs().max().item(),
    }


def kernel_parity(
    ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], low_precision: bool
) -> Outcome:
    """The gate's outcome for named outputs (out, dq, dk, dv) of the kernel against the reference.

    `low_precision` selects the fp16/bf16 tolerances: the kernel's inputs were rounded to that
    dtype, and so is its output.
    """
    outputs = {name: deviation(ours[name], reference[name]) for name in ours}
    for values in outputs.values():
        if values["max_abs_diff"] == float("inf"):
            values["max_abs_diff"] = "inf"  # JSON has no infinity; the judge reads the text back
    return measure(GATE, {"low_precision": low_precision, "outputs": outputs}, holds="the kernel matches")
