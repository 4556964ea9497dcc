"""Mirrored Gaussian perturbations, each named by a seed and a sign.

A member of the population is θ + sign·σ·ε(seed), ε(seed) the standard normal vector a fresh
generator seeded with `seed` draws. Naming noise by its seed is the OpenAI-ES trick (Salimans et
al., 2017): a worker regenerates the vector from eight bytes instead of receiving it, and the
gradient estimate regenerates it again, so no (population × parameters) matrix is ever held.

Mirrored (antithetic) sampling draws one seed per pair and gives it to two members, + and −.
In f(θ ± σε) = f(θ) ± σ∇fᵀε + ½σ²εᵀHε ± …, the even terms are the same for both members, so
they cancel in the pair's difference and the estimate keeps only the odd, gradient, part; this
is what GATE-ES-002 holds the sampler to and GATE-ES-004's planted quadratic relies on.

Each step's seeds are the run generator's next P/2 draws; GATE-ES-002's check seeds holds the
seeds every step's members were evaluated with to that rule as contracts.es_seeds writes it out
(from the run's seed and the step), so a generator re-seeded or restored wrongly halts the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contracts.es_seeds import SEED_BOUND
from contracts.gates import Outcome, gate_require, measure


@dataclass(frozen=True)
class Member:
    """One member of a population: the seed of its noise and the sign it is applied with."""

    seed: int
    sign: int  # +1 or -1


def mirrored(generator: torch.Generator, pairs: int) -> list[Member]:
    """`pairs` fresh seeds from `generator`, each as a + member followed by its − member."""
    seeds = torch.randint(0, SEED_BOUND, (pairs,), generator=generator).tolist()
    return [Member(seed, sign) for seed in seeds for sign in (1, -1)]


def noise(member: Member, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """The member's perturbation direction: sign · ε(seed), `dim` standard normal values."""
    epsilon = torch.randn(dim, generator=torch.Generator().manual_seed(member.seed), dtype=dtype)
    return epsilon if member.sign > 0 else -epsilon


def pairs_outcome(members: list[Member], dim: int) -> Outcome:
    """GATE-ES-002: members taken two by two, the largest |ε_a + ε_b| and the smallest ‖ε‖."""
    vectors = [noise(m, dim, torch.float32) for m in members]
    sums = [float((a + b).abs().max()) for a, b in zip(vectors[::2], vectors[1::2], strict=False)]
    measured = {
        "population": len(members),
        "pairs": len(members) // 2,
        "max_pair_sum": max(sums, default=0.0),
        "min_noise_norm": min((float(v.norm()) for v in vectors), default=0.0),
    }
    return measure("GATE-ES-002", measured, holds="the population is ± pairs")


@gate_require("GATE-ES-002", lambda members, dim: pairs_outcome(members, dim))
def check_pairs(members: list[Member], dim: int) -> None:
    """Judge a step's population before it is evaluated: mirrored, or the step does not run."""


def seeds_outcome(evaluated: list[int], seed: int, population: int, step: int) -> Outcome:
    """GATE-ES-002's check seeds: the seeds step `step`'s members were evaluated with, in population
    order, and the run's seed and population (--seed, --population) their rule starts from."""
    measured = {"seeds_run_seed": seed, "seeds_population": population, "seeds_step": step}
    measured["member_seeds"] = list(evaluated)
    return measure("GATE-ES-002", measured, step=step, holds="each step evaluates its own seeds")


@gate_require(
    "GATE-ES-002",
    lambda evaluated, seed, population, step: seeds_outcome(evaluated, seed, population, step),
)
def check_seeds(evaluated: list[int], seed: int, population: int, step: int) -> None:
    """Refuse a step whose members are not the seeds the run's rule gives it (a repeated step's)."""
