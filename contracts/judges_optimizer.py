"""Judge of GATE-TRAIN-008: a step updates the weights from its own gradients at the scheduled rate.

Imported at the end of contracts.judges, which registers it; a pure function of what
`stack.train.stepping` measured: the read-back and scheduled rates and the gradients left over
(every step), and the parameters the optimizer's step changed (at the probes).
"""

from __future__ import annotations

from contracts.judges import Measured, Thresholds, count, judges, number

_CHECKS = {
    "schedule": ("applied_lr", "scheduled_lr"),
    "fresh": ("stale_gradients",),
    "moved": ("stepped_parameters", "moved_parameters", "unoptimized_parameters"),
}


@judges("GATE-TRAIN-008", checks=_CHECKS)
def _steps_as_scheduled(m: Measured, t: Thresholds) -> list[str]:
    """Each check present is judged: the rate within lr_rtol of the schedule's, no gradient left
    from the step before, and an optimizer that holds every parameter with a gradient and whose
    step changed the weights wherever a gradient was not all zeros (where none was, as under a
    clip of 0 or a DPO β of 0, there was nothing to apply: the loss's own gates judge that)."""
    problems = []
    if "applied_lr" in m:
        applied, scheduled = number(m, "applied_lr"), number(m, "scheduled_lr")
        if not abs(applied - scheduled) <= t["lr_rtol"] * abs(scheduled):
            problems.append(
                f"the optimizer's learning rate is {applied:.6g}, the schedule's {scheduled:.6g} "
                f"(rtol {t['lr_rtol']:g}): the rate applied is not the one the schedule and the log say"
            )
    if "stale_gradients" in m and (stale := count(m, "stale_gradients")):
        problems.append(
            f"{stale} trained parameter(s) held a gradient before the step's first backward: "
            "the gradients of earlier steps are being added in (is zero_grad called after each step?)"
        )
    if "stepped_parameters" in m:
        stepped, moved = count(m, "stepped_parameters"), count(m, "moved_parameters")
        if unoptimized := count(m, "unoptimized_parameters"):
            problems.append(
                f"{unoptimized} parameter(s) with a gradient are in no parameter group of the optimizer: "
                "their gradients are computed and never applied"
            )
        if stepped and moved < 1:  # with no nonzero gradient there was nothing to apply
            problems.append(
                f"none of the {stepped} parameter(s) with a nonzero gradient changed in the optimizer's "
                "step: it did not step, or stepped other tensors than the model's"
            )
    return problems
