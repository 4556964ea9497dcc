"""The epoch plan, written out: which windows one epoch reads, in which order, keyed by (seed, epoch).

A source of n windows (ids lo..hi−1) and quota q gives each of its windows q // n times, in id
order, then the first q mod n of a permutation of its n windows drawn from the generator seeded
(seed, epoch, its tag): a fractional weight subsamples afresh each epoch. The sources' parts,
concatenated in the order of their names, are shuffled together by the generator seeded
(seed, epoch, 0). Nothing else decides a plan: the same seed, epoch and quotas give the same
ids on any machine, and another seed or epoch another order.

It lives in contracts because it is a rule two sides apply, as the learning-rate schedule is
(contracts.schedule): the reader serves every epoch from the plan this function gives for the
run's seed (stack.data.mixture), and GATE-DATA-002 holds every plan the reader made to the one
written here, by the digest of its ids, so no code of the stack between the two (the seed or epoch it passes,
its cache of plans, a restored state) can serve another plan. Numpy's generators are part of the
definition: a plan is reproduced by drawing from the same ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

# The tag of the generator that shuffles the sources' parts together; a source's tag is above it.
SHUFFLE_TAG = 0


def source_tag(name: str) -> int:
    """The tag of source `name`'s generator: its name's CRC-32, plus one so it is never SHUFFLE_TAG."""
    return zlib.crc32(name.encode()) + 1


def epoch_plan(
    ranges: Mapping[str, tuple[int, int]], quotas: Mapping[str, int], seed: int, epoch: int
) -> np.ndarray:
    """The window ids of `epoch`, in the order they are read (module docstring): `ranges` gives
    each source's ids [lo, hi), `quotas` its windows this epoch."""
    parts = [np.empty(0, dtype=np.int64)]
    for name in sorted(ranges):
        (lo, hi), quota = ranges[name], quotas[name]
        if quota == 0:
            continue
        repeats, rest = divmod(quota, hi - lo)
        drawn = np.random.default_rng([seed, epoch, source_tag(name)]).permutation(hi - lo)[:rest]
        parts.append(lo + np.tile(np.arange(hi - lo, dtype=np.int64), repeats))
        parts.append(lo + drawn.astype(np.int64))
    return np.random.default_rng([seed, epoch, SHUFFLE_TAG]).permutation(np.concatenate(parts))
