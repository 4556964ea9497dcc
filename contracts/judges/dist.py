"""The judge of GATE-DIST-001 (spec/gates/dist.yaml): data-parallel training equals one process."""

from __future__ import annotations

from contracts.judges.base import Judges, Measured, Thresholds, count, has, items, number
from contracts.judges.integ import falsifiers_pass

judges = Judges()


@judges(
    "GATE-DIST-001",
    checks={
        "parity": ("max_loss_diff", "batches_differ_at", "steps_missing"),
        "falsifiers": ("falsifiers+",),
    },
)
def _data_parallel_matches(m: Measured, t: Thresholds) -> list[str]:
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "max_loss_diff", "batches_differ_at", "steps_missing"):
        diff, differ = number(m, "max_loss_diff"), items(m, "batches_differ_at")
        if differ:
            problems.append(f"different batches at step(s) {', '.join(map(str, differ[:5]))}")
        if not diff <= t["loss_atol"]:
            problems.append(f"losses differ by up to {diff:.3g} (atol {t['loss_atol']})")
        if count(m, "steps_missing"):
            problems.append(f"{count(m, 'steps_missing')} step(s) logged by one run only")
    return problems
