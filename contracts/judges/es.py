"""The judges of the evolution-strategies gates (spec/gates/es.yaml).

The fitness and the step are held to the rules a training step is held to: what a fitness
consumed against what its batch states (`consumed_problems`), and the step's update against
Adam's ascent of the gradient estimate (`update_problems`), both from contracts/judges/train.py.
"""

from __future__ import annotations

import math

from contracts.es_seeds import member_seeds, run_seeds
from contracts.judges.base import (
    Judges,
    Measured,
    Thresholds,
    count,
    has,
    items,
    number,
    reals,
)
from contracts.judges.train import (
    CONSUMED,
    STEP_CHECKS,
    consumed_problems,
    logged_problems,
    update_problems,
)

judges = Judges()


@judges("GATE-ES-001", needs=("evaluations", "grad_enabled", "graph_outputs", "grads_set"))
def _no_graph(m: Measured, t: Thresholds) -> list[str]:
    evaluations = count(m, "evaluations")
    if not evaluations:
        return ["no fitness evaluation was checked"]
    found = {
        "grad_enabled": "ran with gradient recording on",
        "graph_outputs": "returned a value that requires a gradient or carries a graph",
    }
    problems = [
        f"{count(m, key)} of {evaluations} fitness evaluation(s) {what}"
        for key, what in found.items()
        if count(m, key)
    ]
    if count(m, "grads_set"):
        problems.append(f"{count(m, 'grads_set')} parameter tensor(s) hold a .grad after the step")
    return problems


@judges(
    "GATE-ES-002",
    checks={
        "pairs": ("population", "pairs", "max_pair_sum", "min_noise_norm"),
        # every forward of every member read θ + sign·σ·ε(seed), to the roundings of its sum,
        # and each evaluation is at its member's place
        "applied": (
            "evaluated_members",
            "misplaced_members",
            "unread_members",
            "perturbation_outliers",
            "perturbation_error",
        ),
        # each step's members are the seeds the run's rule gives that step, none an earlier step's
        "seeds": ("seeds_run_seed", "seeds_population", "seeds_step", "member_seeds+"),
        # the σ every forward's weights were perturbed by, as read, is the σ the record states
        "sigma": ("sigma_read+", "sigma_stated"),
    },
)
def _mirrored(m: Measured, t: Thresholds) -> list[str]:
    problems = _pairs_problems(m) if has(m, "population") else []
    if has(m, "evaluated_members"):
        problems += _applied_problems(m)
    if has(m, "sigma_read", "sigma_stated"):
        problems += _sigma_problems(m, t["sigma_rtol"])
    if has(m, "seeds_run_seed", "seeds_population", "seeds_step", "member_seeds"):
        problems += _seeds_problems(m)
    return problems


def _seeds_problems(m: Measured) -> list[str]:
    """The seeds a step's members were evaluated with, in population order, against the run's rule
    (contracts.es_seeds) for its seed, its population's P/2 pairs and that step, and against every
    seed the rule gave the steps before it."""
    seed, step, evaluated = count(m, "seeds_run_seed"), count(m, "seeds_step"), items(m, "member_seeds")
    population = count(m, "seeds_population")
    if not step or population < 2 or population % 2:
        return [f"step {step} of a population of {population} cannot be ± pairs"]
    *earlier, due = run_seeds(seed, step, population // 2)
    problems = []
    if evaluated != member_seeds(due):
        problems.append(
            f"step {step} evaluated the members of seeds {evaluated[::2]}; the run's rule (seed {seed}, "
            f"contracts.es_seeds) gives that step {due}: a generator re-seeded, restored from another "
            "step or drawn twice"
        )
    before = {s for seeds in earlier for s in seeds}
    if reused := sorted(set(evaluated) & before):
        problems.append(f"step {step} evaluated seed(s) {reused[:4]} that an earlier step of the run drew")
    return problems


def _sigma_problems(m: Measured, rtol: float) -> list[str]:
    """Each forward's perturbation scale, ⟨read − θ, sign·ε⟩ / ‖ε‖² of the weights it read, within
    `rtol` of the σ the record states: the estimate divides by the stated σ, so members perturbed
    by another make ĝ another multiple of the gradient than the record says."""
    read, stated = reals(m, "sigma_read"), number(m, "sigma_stated")
    off = [sigma for sigma in read if not abs(sigma - stated) <= rtol * abs(stated)]
    if not off:
        return []
    return [
        f"{len(off)} of {len(read)} forward(s) read weights perturbed by σ {off[0]:.6g} along their "
        f"member's noise, but the record states σ {stated:g} (rtol {rtol:g}), which the estimate divides by"
    ]


def _pairs_problems(m: Measured) -> list[str]:
    """The noise list: P/2 pairs whose two members' noise are each other's negation, none zero."""
    population, pairs = count(m, "population"), count(m, "pairs")
    problems = (
        []
        if pairs and population == 2 * pairs
        else [f"a population of {population} is not {pairs} ± pair(s)"]
    )
    largest = number(m, "max_pair_sum")
    if largest != 0:
        problems.append(
            f"the two members of a pair are not each other's negation (|ε⁺ + ε⁻| up to {largest:.3g})"
        )
    if not number(m, "min_noise_norm") > 0:
        problems.append("a member's noise is zero")
    return problems


def _applied_problems(m: Measured) -> list[str]:
    """The weights each member's fitness read against θ + sign·σ·ε(seed) regenerated from its seed."""
    evaluated = count(m, "evaluated_members")
    if not evaluated:
        return ["no member's evaluation was checked"]
    problems = []
    if has(m, "population") and evaluated != count(m, "population"):
        problems.append(f"{evaluated} member(s) were evaluated of a population of {count(m, 'population')}")
    if misplaced := count(m, "misplaced_members"):
        problems.append(
            f"{misplaced} evaluation(s) are not at their member's place in the population: the estimate "
            "weights one member's noise by another's fitness"
        )
    if unread := count(m, "unread_members"):
        problems.append(
            f"the fitness of {unread} of {evaluated} member(s) read the model's weights in no forward"
        )
    if outliers := count(m, "perturbation_outliers"):
        problems.append(
            f"the weights the fitness forwards read differ from θ + sign·σ·ε(seed) beyond rounding in "
            f"{outliers} element(s) (the worst forward {number(m, 'perturbation_error'):.3g} × ‖σε‖ off): "
            "a member evaluated on the other side, at another scale, or at another member's weights"
        )
    return problems


@judges("GATE-ES-003", needs=("weight_sum",))
def _weights_centered(m: Measured, t: Thresholds) -> list[str]:
    total = number(m, "weight_sum")
    if abs(total) <= t["max_abs_weight_sum"]:
        return []
    return [
        f"the {count(m, 'population')} shaped weights sum to {total:.6g}, not 0: the fitness was not shaped"
    ]


@judges("GATE-ES-004", needs=("dimension", "pairs", "sigma", "angle_degrees"))
def _estimate_points_true(m: Measured, t: Thresholds) -> list[str]:
    case = {"dimension": "toy_dimension", "pairs": "toy_pairs", "sigma": "toy_sigma"}
    problems = [
        f"the self-test used {key} {number(m, key):g}, the spec's case has {t[name]:g}"
        for key, name in case.items()
        if number(m, key) != t[name]
    ]
    angle = number(m, "angle_degrees")
    if not angle <= t["max_angle_degrees"]:
        problems.append(
            f"on the planted quadratic the estimated gradient is {angle:.2f}° from the true one "
            f"(allowed {t['max_angle_degrees']:g}°)"
        )
    return problems


@judges("GATE-ES-005", checks={"consumed": CONSUMED, "logged": ("logged_loss", "forward_loss")})
def _fitness_consumed_as_stated(m: Measured, t: Thresholds) -> list[str]:
    """Every fitness evaluation of an ES step read what the step's batch states (the language-model
    fitness: its windows and each position's next token), and where the fitness is the negative of
    the loss it scored, the population loss the step logs is the one its forwards computed: by the
    rules a training step's loss is held to."""
    problems = consumed_problems(m) if has(m, "scorings") else []
    if has(m, "logged_loss", "forward_loss"):
        problems += logged_problems(m)
    return problems


@judges(
    "GATE-ES-006",
    checks={
        "update": STEP_CHECKS["update"],
        # the ĝ handed to Adam is contracts.es_noise's 1/(P·σ) Σ w_i·sign_i·ε_i of the step
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


@judges("GATE-ES-007", needs=("steps", "window"))
def _loss_not_risen(m: Measured, t: Thresholds) -> list[str]:
    """The run's population loss at its last steps is not above that of its first by more than
    max_rise_sds standard errors (contracts.es_trend); a run of fewer than four steps is too short to
    tell and is not judged."""
    steps, window = count(m, "steps"), count(m, "window")
    if window != min(int(t["window_steps"]), steps // 2):
        return [
            f"the run's {steps} steps were compared in windows of {window}, not the spec's "
            f"{t['window_steps']:g} (or half the steps)"
        ]
    if window < 2:
        return []
    first, last, se = number(m, "first_loss"), number(m, "last_loss"), number(m, "rise_se")
    rise = last - first
    if rise > 0 and not rise <= t["max_rise_sds"] * se:
        return [
            f"the population loss rose from {first:.4f} over the first {window} steps to {last:.4f} over "
            f"the last {window}, {rise:.4g} nats or {rise / se if se else math.inf:.3g} standard errors "
            f"(at most {t['max_rise_sds']:g}): the steps moved the weights away from lower loss; take "
            "--lr (and --sigma) smaller in a new run, e.g. ten times, as a trained model wants"
        ]
    return []
