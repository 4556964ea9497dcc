"""GATE-ES-006: the step a run takes is Adam's ascent of its gradient estimate, on the weights written.

Measured where the step acts: the weights the model holds once the step has written them (what
every checkpoint saves and the next step perturbs) and Adam's two moments, against Adam's step
recomputed in float64 from θ, ĝ and the moments before it, with the run's rate and Adam's betas
and eps (stack.es.optimizer). The recomputation is the one GATE-TRAIN-008 holds AdamW to
(`stack.train.stepping.adam_errors`), climbing instead of descending and without decay, and the
judge is its rule, within the same tolerance. An optimizer that subtracts its step, a loop that
hands it −ĝ or never writes θ into the model, a second step or other betas all show here, while
the fitness still moves and every other gate holds. It costs copies of θ and both moments per step.

Check estimate holds the ĝ the step handed Adam to ĝ as contracts.es_noise defines it,
1/(P·σ) · Σ w_i · sign_i · ε(seed_i), recomputed in float64 from the step's shaped weights and its
members' seeds and signs at the σ the record states: an estimator that drops the 1/σ (or another
factor) leaves Adam, nearly scale-invariant, taking almost the same steps, and the update check,
which takes ĝ as handed, holds. It costs one more regeneration of every member's noise per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from contracts.es_noise import gradient_estimate
from contracts.gates import Outcome, gate_require, measure
from stack.es.noise import Member
from stack.es.optimizer import BETAS, EPS, EsAdam
from stack.train.stepping import MOMENTS, AdamWSettings, adam_errors, update_values


@dataclass(frozen=True)
class Before:
    """θ and Adam's moments as a step found them (zeros before the first), and its count of steps."""

    theta: torch.Tensor
    moments: tuple[torch.Tensor, torch.Tensor]
    steps: int


def before_step(optimizer: EsAdam) -> Before:
    """Copies of what the optimizer's next step will read."""
    theta = optimizer.theta.detach().clone()
    state = optimizer.state.get(optimizer.theta, {})
    if not state:
        return Before(theta, (torch.zeros_like(theta), torch.zeros_like(theta)), 0)
    first, second = (state[k].detach().clone() for k in MOMENTS)
    return Before(theta, (first, second), int(state["step"]))


def update_measured(
    before: Before, gradient: torch.Tensor, written: torch.Tensor, optimizer: EsAdam, lr: float
) -> dict[str, Any]:
    """GATE-ES-006's values: the weights `written` into the model and the moments after the step
    against Adam's ascent of `gradient` from `before` at the run's rate `lr`, and the optimizer's
    steps taken (once)."""
    state = optimizer.state.get(optimizer.theta, {})
    if not all(k in state for k in MOMENTS):
        return update_values([("θ (no Adam moments)", math.inf)], 1, 0)
    adam = AdamWSettings(lr, *BETAS, EPS, weight_decay=0.0, adapter_weight_decay=0.0, adapters=frozenset())
    handed, after = (before.theta, gradient, *before.moments), (written, *(state[k] for k in MOMENTS))
    errors = adam_errors(handed, after, adam, before.steps + 1, ascent=True)
    return update_values(((f"θ {q}", e) for q, e in errors), 1, int(state["step"]) - before.steps)


def estimate_measured(
    members: list[Member], weights: torch.Tensor, sigma: float, applied: torch.Tensor
) -> dict[str, Any]:
    """GATE-ES-006's check estimate: the ĝ `applied` (handed to Adam) against contracts' ĝ of the
    members and their shaped `weights` at the stated `sigma`, as ‖applied − ĝ‖ / ‖ĝ‖ in float64."""
    seeds, signs = [m.seed for m in members], [m.sign for m in members]
    reference = gradient_estimate(seeds, signs, weights.tolist(), sigma, applied.numel(), applied.dtype)
    error = float((applied.detach().to(torch.float64) - reference).norm() / reference.norm())
    return {
        "estimate_error": error if math.isfinite(error) else str(error),  # JSON has no infinity
        "estimate_norm": float(applied.detach().to(torch.float64).norm()),
        "estimate_reference_norm": float(reference.norm()),
    }


def _outcome(measured: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-ES-006", measured, step=step, holds="the step is Adam's ascent of ĝ")


@gate_require("GATE-ES-006", _outcome)
def check_update(measured: dict[str, Any], step: int) -> None:
    """Judge a step's update once its weights are written, before anything saves or perturbs them."""
