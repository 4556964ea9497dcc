"""The judge of GATE-KERNEL-001 (spec/gates/kernel.yaml): the Triton attention matches the reference."""

from __future__ import annotations

from contracts.judges.base import Judges, Measured, Thresholds, deviations, flag, has
from contracts.judges.integ import falsifiers_pass

judges = Judges()


@judges("GATE-KERNEL-001", checks={"parity": ("outputs+", "low_precision"), "falsifiers": ("falsifiers+",)})
def _kernel_parity(m: Measured, t: Thresholds) -> list[str]:
    """Each output within atol + rtol × the reference's largest magnitude, per input precision.

    The conformance record (the falsifier tests' outcomes) is judged too, like any test gate.
    """
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "outputs", "low_precision"):
        prefix = "lowp" if flag(m, "low_precision") else "fp32"
        problems += deviations(m["outputs"], "output", t[f"{prefix}_atol"], t[f"{prefix}_rtol"])
    return problems
