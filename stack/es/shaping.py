"""Fitness shaping: a population's fitness values replaced by their centered ranks.

The member with the lowest fitness gets −0.5, the highest +0.5, the others evenly spaced
between: w_i = rank_i / (P − 1) − 0.5 (ties keep the population's order, so the weights are a
pure function of the values). As in OpenAI-ES (Salimans et al., 2017), this makes the update
invariant to any increasing transformation of the fitness, so one outlier batch or a reward on
another scale cannot swamp the step, and the weights sum to zero, so a constant offset (a loss
near 5 nats for every member) moves nothing. GATE-ES-003 holds the weights to that sum.
"""

from __future__ import annotations

import torch

from contracts.gates import Outcome, gate_require, measure


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """The centered rank in [−0.5, 0.5] of each of the P values of `fitness` (float64, P ≥ 2)."""
    order = torch.argsort(fitness, stable=True)
    ranks = torch.empty(len(fitness), dtype=torch.float64)
    ranks[order] = torch.arange(len(fitness), dtype=torch.float64)
    return ranks / (len(fitness) - 1) - 0.5


def weights_outcome(weights: torch.Tensor) -> Outcome:
    """GATE-ES-003: the sum of a step's shaped weights."""
    measured = {"population": len(weights), "weight_sum": float(weights.double().sum())}
    return measure("GATE-ES-003", measured, holds="the shaped weights sum to zero")


@gate_require("GATE-ES-003", lambda weights: weights_outcome(weights))
def check_weights(weights: torch.Tensor) -> None:
    """Judge a step's shaped weights before the gradient is estimated from them."""
