"""The estimator checked where the true gradient is known: a planted quadratic (GATE-ES-004).

Before every `stack es` run the run's own sampler (`noise.mirrored`), shaping
(`shaping.centered_ranks`) and estimator (`estimate.gradient_estimate`) estimate the gradient of

    f(x) = −½ Σ_j h_j (x_j − x*_j)²,   h evenly spaced from 1 to 4,  ‖x*‖ = 1,

at x = 0, where it is H·x*. The case is planted so that a wrong estimator is visible: at the
spec's noise scale (toy_sigma, in units of ‖x*‖) the curvature term ½σ²εᵀHε outweighs the
gradient term σ∇fᵀε in every fitness value. Mirrored pairs share that even term and cancel it;
unmirrored noise lets it decide the ranks, and the estimate then points tens of degrees away
(a constant offset would not do: rank shaping removes it whatever the noise). The dimension, the
pairs and σ are the spec's (GATE-ES-004's thresholds), and the draw is seeded by the run's seed.
"""

from __future__ import annotations

import math

import torch

from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec
from stack.es import estimate, noise, shaping

CURVATURE = (1.0, 4.0)  # the smallest and largest h_j


def _case(dimension: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The curvatures h and the optimum x* (a random unit vector) of the planted quadratic."""
    curvature = torch.linspace(*CURVATURE, dimension, dtype=torch.float64)
    optimum = torch.randn(dimension, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return curvature, optimum / optimum.norm()


def planted_angle(seed: int) -> dict[str, float]:
    """The self-test's measurement: the case it used and the angle (degrees) of ĝ to H·x*."""
    spec = load_spec()
    dimension = int(spec.threshold("GATE-ES-004", "toy_dimension"))
    pairs = int(spec.threshold("GATE-ES-004", "toy_pairs"))
    sigma = float(spec.threshold("GATE-ES-004", "toy_sigma"))
    curvature, optimum = _case(dimension, seed)
    members = noise.mirrored(torch.Generator().manual_seed(seed), pairs)
    points = torch.stack([sigma * noise.noise(m, dimension, torch.float64) for m in members])
    fitness = -0.5 * (curvature * (points - optimum).square()).sum(dim=1)
    weights = shaping.centered_ranks(fitness)
    estimated = estimate.gradient_estimate(members, weights, sigma, dimension, torch.float64)
    true = curvature * optimum
    cosine = float(estimated @ true / (estimated.norm() * true.norm()))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine)))) if math.isfinite(cosine) else math.nan
    return {"angle_degrees": angle, "dimension": dimension, "pairs": pairs, "sigma": sigma}


def angle_outcome(seed: int) -> Outcome:
    """GATE-ES-004 on the planted quadratic drawn with `seed`."""
    return measure("GATE-ES-004", planted_angle(seed), holds="the estimated gradient points at the true one")


@gate_require("GATE-ES-004", lambda seed: angle_outcome(seed))
def check_estimator(seed: int) -> None:
    """Judge the estimator on the planted quadratic before a run takes its first step."""
