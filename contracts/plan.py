"""The epoch plan, written out: which windows one epoch reads, in which order, keyed by (seed, epoch).

A source's quota, its windows in one epoch, is floor(w · n) for a source of n windows and weight
w, and at most ⌊cap / seq_len⌋ where a cap of tokens is set (`source_quota`): the reader's
mixture calls it, and GATE-DATA-001 counts every plan against it, never against the mixture's
own quotas, so a mixture that rounds its quotas otherwise cannot vouch for itself.

A step's fingerprint, the `batch_sha256` its metrics line logs, is the sha256 of the token ids of
the windows it read, every column of each (T+1) and every rank's rows in rank order
(`int64_sha256`), one per micro-batch, combined in order where there are several
(`step_sha256`). GATE-DATA-001 holds each line's fingerprint to that of the windows the plan
says its step read, so a fingerprint taken of less than the batch served cannot stand for it.

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

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

# The tag of the generator that shuffles the sources' parts together; a source's tag is above it.
SHUFFLE_TAG = 0


def source_quota(windows: int, weight: float, cap_tokens: int | None, seq_len: int) -> int:
    """Windows of one epoch of a source of `windows` windows and weight `weight`: floor(w · n), so
    a weight of 1 reads each window once and a fractional one never more than it asks; at most
    `cap_tokens` // `seq_len` where a cap is set (None: none)."""
    quota = math.floor(weight * windows)
    return quota if cap_tokens is None else min(quota, cap_tokens // seq_len)


def quotas(
    ranges: Mapping[str, tuple[int, int]], weights: Mapping[str, float], caps: Mapping[str, int], seq_len: int
) -> dict[str, int]:
    """Every source's quota (`source_quota`): `ranges` gives each source's window ids [lo, hi)."""
    return {
        name: source_quota(hi - lo, weights[name], caps.get(name), seq_len)
        for name, (lo, hi) in ranges.items()
    }


def share_weights(shares: Mapping[str, float], windows: Mapping[str, int]) -> dict[str, float]:
    """The weights that serve a policy's `shares` of an epoch's windows: a share p of a source of n
    windows is weight p · N / n, N the split's windows, so its quota is floor(p · N). A source with
    no windows takes none. The reader serves a policy's shares by these weights
    (stack.data.reader), and the checker derives a policy run's plan from its logged shares by them."""
    total = sum(windows.values())
    return {name: shares.get(name, 0.0) * total / n for name, n in windows.items() if n}


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


def int64_sha256(values: np.ndarray) -> str:
    """The hex sha256 of integers as contiguous little-endian int64, so it does not depend on the
    dtype they were read in: a batch's fingerprint, of its windows (rows, T+1) row after row, and
    a plan's, of its window ids."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest()


def step_sha256(hashes: Sequence[str]) -> str:
    """A step's fingerprint from its micro-batches' (`int64_sha256`, in order): the one's own,
    else the sha256 of their hex digests concatenated."""
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()
