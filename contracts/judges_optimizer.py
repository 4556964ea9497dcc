"""Judges of GATE-TRAIN-008 and GATE-ES-006: a step updates the weights as its optimizer is defined to.

Imported at the end of contracts.judges, which registers them; pure functions of what
`stack.train.stepping` measured: the read-back and scheduled rates and the gradients left over
(every step); which tensors the optimizer holds (at set-up, after every load of weights and at
the probes); the weights the run starts from against those it states (check start); and at the
probes, the gradient the optimizer was handed against the step's own, its update against AdamW's
recomputed, and the parameters its step changed. An evolution-strategies
step's update against Adam's ascent of its gradient estimate (GATE-ES-006) is judged by the same
rule as a training step's against AdamW's (`update_problems`).
"""

from __future__ import annotations

from contracts.judges import Measured, Thresholds, count, flag, has, judges, number

_CHECKS = {
    "schedule": ("applied_lr", "scheduled_lr"),
    "fresh": ("stale_gradients",),
    "held": ("unheld_parameters", "stale_held_parameters", "unlisted_parameters", "untied_heads"),
    "gradient": ("gradient_compared",),
    "update": ("update_error", "update_worst", "updated_parameters", "optimizer_steps"),
    "moved": ("stepped_parameters", "moved_parameters", "unoptimized_parameters"),
    # rev 3: the weights step 1 starts from are the ones the run states it starts from
    "start": ("start_from", "start_seed", "start_tensors", "start_sha256", "stated_start_sha256"),
}
# What a run's first step may start from (stack.train.stepping.start_measured).
START_FROM = ("seed", "checkpoint")

# The step a training step's update is recomputed as, and what a miss suggests.
_ADAMW = (
    "AdamW's",
    "recomputed from its inputs with the configured betas, eps and decoupled weight decay at the "
    "schedule's rate: another optimizer, swapped betas or decay on the wrong tensors",
)


@judges("GATE-TRAIN-008", checks=_CHECKS)
def _steps_as_scheduled(m: Measured, t: Thresholds) -> list[str]:
    """Each check present is judged: the rate within lr_rtol of the schedule's, no gradient left
    from the step before, an optimizer that holds the model's trained tensors, a gradient and an
    update within their tolerances of the recomputed ones, and a step that changed the weights
    wherever a gradient was not all zeros (where none was, as under a clip of 0 or a DPO β of 0,
    there was nothing to apply: the loss's own gates judge that)."""
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
    update = update_problems(m, t["update_rtol"], *_ADAMW) if "update_error" in m else []
    return [*problems, *_held(m), *_gradient(m, t), *update, *_start(m)]


def _start(m: Measured) -> list[str]:
    """The sha256 of the weights the run holds before its first step against that of the weights it
    states it starts from: a fresh run's drawn again from train.seed, a fine-tune's read from its
    checkpoint, both apart from the model the loop trains."""
    if "start_sha256" not in m:
        return []
    origin, tensors = m.get("start_from"), count(m, "start_tensors")
    if origin not in START_FROM:
        return [f"the run states it starts from {origin!r}, not one of {', '.join(START_FROM)}"]
    if tensors and m.get("start_sha256") == m.get("stated_start_sha256"):
        return []
    stated = (
        f"GPT's initialisation drawn from train.seed {count(m, 'start_seed')} in a fresh generator"
        if origin == "seed"
        else "the weights its --init-from checkpoint holds"
    )
    return [
        f"the {tensors} tensor(s) the run starts from are not {stated} (sha256 "
        f"{str(m.get('start_sha256'))[:12]} against {str(m.get('stated_start_sha256'))[:12]}): another "
        "seed, a load that never happened, or weights changed before the first step"
    ]


def _held(m: Measured) -> list[str]:
    if "unheld_parameters" not in m:
        return []
    problems = []
    unheld, stale = count(m, "unheld_parameters"), count(m, "stale_held_parameters")
    if unheld or stale:
        problems.append(
            f"{unheld} of the model's trained parameter(s) are in no parameter group of the optimizer and "
            f"{stale} it holds are not the model's: the optimizer steps other tensors than the model "
            "trains (did a load of weights replace the model's tensors?)"
        )
    if unlisted := count(m, "unlisted_parameters"):
        problems.append(
            f"{unlisted} parameter(s) differ between the model's trained parameters and the loop's list "
            "of them, which it clips and checks"
        )
    if count(m, "untied_heads"):
        problems.append("the config ties the head to the embedding but the model's head is another tensor")
    return problems


def _gradient(m: Measured, t: Thresholds) -> list[str]:
    """The logged norm before the clip within gradient_rtol of the reference's, and the worst tensor's
    gradient at the optimizer within gradient_rtol of its clipped reference (a sharded model's is
    not compared: nothing to judge). Where the probe found non-deterministic kernels allowed, both
    within nondeterministic_gradient_rtol: its two backward passes need not sum in one order. A
    record from before the probe said (no `deterministic_kernels`) is held to gradient_rtol."""
    if "gradient_compared" not in m or not flag(m, "gradient_compared"):
        return []
    strict = "deterministic_kernels" not in m or flag(m, "deterministic_kernels")
    name = "gradient_rtol" if strict else "nondeterministic_gradient_rtol"
    problems, rtol = [], t[name]
    reference, logged = number(m, "reference_grad_norm"), number(m, "logged_grad_norm")
    if not abs(logged - reference) <= rtol * reference:
        problems.append(
            f"the gradient norm before the clip is {logged:.6g}, the step's mean objective's {reference:.6g} "
            f"({name} {rtol:g}): the loss is scaled on its way to the gradient (grad_accum, the loss scale), "
            "or the norm is not the whole gradient's"
        )
    error = number(m, "applied_gradient_error")
    if not error <= rtol:
        problems.append(
            f"the gradient the optimizer was handed is {error:.3g} of its own size from the step's clipped "
            f"gradient at {m.get('applied_gradient_worst')} ({name} {rtol:g}): a clip before the loss scale "
            "is taken off, over some of the parameters, or a gradient scaled after the backward"
        )
    return problems


def update_problems(m: Measured, rtol: float, reference: str, recomputed: str) -> list[str]:
    """The worst tensor's weights or moment after the step within `rtol` of the `reference` step
    recomputed as `recomputed` says (and what a miss suggests), and one optimizer step in the step."""
    problems = []
    if (steps := count(m, "optimizer_steps")) != 1:
        problems.append(f"the optimizer stepped {steps} time(s) in one step of the loop, not once")
    error = number(m, "update_error")
    if error <= rtol:
        return problems
    return [
        *problems,
        f"the optimizer's step is {error:.3g} of its own size from {reference} at {m.get('update_worst')} "
        f"(rtol {rtol:g}), {recomputed}",
    ]


@judges(
    "GATE-ES-006",
    checks={
        "update": _CHECKS["update"],
        # rev 2: the ĝ handed to Adam is contracts.es_noise's 1/(P·σ) Σ w_i·sign_i·ε_i of the step
        "estimate": ("estimate_error", "estimate_norm", "estimate_reference_norm"),
    },
)
def _es_climbs(m: Measured, t: Thresholds) -> list[str]:
    """The weights an ES step wrote, and Adam's moments, are Adam's ascent of the step's estimate ĝ;
    and that ĝ is the estimate the method defines of the step's members and shaped weights."""
    problems = (
        update_problems(
            m,
            t["update_rtol"],
            "Adam's ascent of the gradient estimate",
            "recomputed in float64 from θ, ĝ and the moments before the step with the run's rate and "
            "Adam's betas and eps: a step downhill, another optimizer, or weights written that are not θ",
        )
        if has(m, "update_error")
        else []
    )
    if has(m, "estimate_error") and not (error := number(m, "estimate_error")) <= t["estimate_rtol"]:
        problems.append(
            f"the gradient estimate handed to Adam (|ĝ| {number(m, 'estimate_norm'):.6g}) is {error:.3g} of "
            f"its own size from 1/(P·σ) Σ w_i·ε_i recomputed from the step's shaped weights and its "
            f"members' noise (|ĝ| {number(m, 'estimate_reference_norm'):.6g}, contracts.es_noise; rtol "
            f"{t['estimate_rtol']:g}): a factor such as 1/σ or 1/P lost, or other weights or noise summed"
        )
    return problems
