"""The noise seeds of an evolution-strategies run, step by step: the rule GATE-ES-002 holds them to.

Each member of an ES population is named by the seed of its noise and a sign (stack.es.noise).
A run draws every step's P/2 seeds from one generator, seeded once with the run's seed and carried
from step to step (and in every checkpoint): step k, counted from 1, takes draws (k − 1)·P/2 up to
k·P/2 − 1 of `torch.randint(0, SEED_BOUND)` on torch's CPU generator seeded with the run's seed,
so no two steps evaluate the same ± pairs. The rule lives here, apart from the sampler, because a
generator re-seeded every step (every step then explores step 1's directions), restored from
another step or drawn from twice still gives a mirrored population whose members were evaluated
at their own weights, and every check within one step passes: GATE-ES-002's check seeds derives
each step's seeds again from (seed, step), and the integrity check does the same from the
record's config and every step line of its log. Torch's generator is part of the definition
(imported when seeds are derived, so the judges load without torch).
"""

from __future__ import annotations

# Seeds are drawn below 2**62: any such value is a valid torch seed and a JSON-safe integer.
SEED_BOUND = 2**62


def run_seeds(seed: int, steps: int, pairs: int) -> list[list[int]]:
    """The seeds of steps 1..`steps` of a run seeded `seed` with `pairs` ± pairs per step, in order:
    one draw of steps × pairs values, which torch's CPU generator gives exactly as `steps` draws of
    `pairs` values one after another."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(0, SEED_BOUND, (steps * pairs,), generator=generator).tolist()
    return [drawn[index * pairs : (index + 1) * pairs] for index in range(steps)]


def member_seeds(seeds: list[int]) -> list[int]:
    """The seed of every member of a mirrored population of one step's pair `seeds`, in population
    order: each seed twice, its + member then its − member."""
    return [seed for seed in seeds for _sign in (1, -1)]
