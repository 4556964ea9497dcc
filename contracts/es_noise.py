"""The noise of an evolution-strategies run and its estimator's self-test, written out apart from the
sampler (stack.es): what the integrity check derives GATE-ES-002's noise norms and GATE-ES-004's
planted angle again by.

A member's noise ε(seed) is the standard normal vector of the run's parameter count that torch's CPU
generator, freshly seeded with the member's seed, draws (`noise_vector`); GATE-ES-002 states the
smallest Euclidean norm, in float32, over the members of the step it judged (`noise_norm`).

GATE-ES-006's check estimate holds the gradient estimate a step hands to Adam to
ĝ = 1/(P·σ) · Σ_i w_i · sign_i · ε(seed_i) over the step's P members, w_i their shaped weights
(`gradient_estimate`): each ε drawn in the weights' dtype, as the stack draws it, the sum in float64.

GATE-ES-004's self-test estimates the gradient of the planted quadratic
f(x) = −½ Σ_j h_j (x_j − x*_j)², h evenly spaced from 1 to 4 over `dimension` coordinates, x* a
standard normal vector drawn by a CPU generator seeded with the run's seed and made a unit vector,
at x = 0 from `pairs` mirrored pairs (the pair seeds: contracts.es_seeds' first step), each member
at σ·sign·ε in float64, its fitness replaced by its centered rank (stable: ties keep the population's
order; the lowest −0.5, the highest +0.5), ĝ = Σ_i w_i·sign_i·ε_i / (P·σ); the angle is that of ĝ to
the true gradient H·x*, in degrees (`planted_angle`). The operations are those of the stack in the
same order, so a record of the stack as written states the angle this gives.

Torch's generator is part of the definition, imported where a value is derived so the judges load
without torch.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.es_seeds import member_seeds, run_seeds

# The smallest and largest curvature h_j of the planted quadratic.
CURVATURE = (1.0, 4.0)


def noise_vector(seed: int, dim: int, dtype: Any) -> Any:
    """ε(seed): `dim` standard normal values of `dtype` from a CPU generator seeded with `seed`."""
    import torch

    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def noise_norm(seed: int, dim: int) -> float:
    """‖ε(seed)‖ in float32, as GATE-ES-002 states the members' norms."""
    import torch

    return float(noise_vector(seed, dim, torch.float32).norm())


def gradient_estimate(
    seeds: list[int], signs: list[int], weights: list[float], sigma: float, dim: int, dtype: Any
) -> Any:
    """ĝ = 1/(P·σ) · Σ_i w_i · sign_i · ε(seed_i) in float64, each ε drawn in `dtype` (the weights')."""
    import torch

    total = torch.zeros(dim, dtype=torch.float64)
    for seed, sign, weight in zip(seeds, signs, weights, strict=True):
        total.add_(sign * noise_vector(seed, dim, dtype).to(torch.float64), alpha=weight)
    return total / (len(seeds) * sigma)


def planted_angle(seed: int, dimension: int, pairs: int, sigma: float) -> float:
    """The angle (degrees) of the self-test's estimate to the planted quadratic's true gradient."""
    import torch

    curvature = torch.linspace(*CURVATURE, dimension, dtype=torch.float64)
    optimum = torch.randn(dimension, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    optimum = optimum / optimum.norm()
    seeds = member_seeds(run_seeds(seed, 1, pairs)[0])
    signs = [1, -1] * pairs
    vectors = [sign * noise_vector(s, dimension, torch.float64) for s, sign in zip(seeds, signs, strict=True)]
    points = torch.stack([sigma * v for v in vectors])
    fitness = -0.5 * (curvature * (points - optimum).square()).sum(dim=1)
    order = torch.argsort(fitness, stable=True)
    ranks = torch.empty(len(fitness), dtype=torch.float64)
    ranks[order] = torch.arange(len(fitness), dtype=torch.float64)
    weights = ranks / (len(fitness) - 1) - 0.5
    estimated = gradient_estimate(seeds, signs, weights.tolist(), sigma, dimension, torch.float64)
    true = curvature * optimum
    cosine = float(estimated @ true / (estimated.norm() * true.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine)))) if math.isfinite(cosine) else math.nan
