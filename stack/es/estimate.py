"""The evolution-strategies gradient estimate from a population's shaped weights.

    ĝ = 1 / (P·σ) · Σ_i w_i · ε_i

over the P members (ε_i their signed noise, w_i their shaped weights): the Monte-Carlo estimate
of the gradient of the Gaussian-smoothed fitness E[f(θ + σε)] (Salimans et al., 2017, eq. 2).
It is written for any population, mirrored or not, so a sampler that stops mirroring still
produces an estimate; GATE-ES-002 and GATE-ES-004 are what catch it.
"""

from __future__ import annotations

import torch

from stack.es.noise import Member, noise


def gradient_estimate(
    members: list[Member], weights: torch.Tensor, sigma: float, dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """ĝ of the fitness at the population's centre, `dim` values of `dtype`."""
    total = torch.zeros(dim, dtype=dtype)
    for member, weight in zip(members, weights.tolist(), strict=True):
        total.add_(noise(member, dim, dtype), alpha=weight)
    return total / (len(members) * sigma)
