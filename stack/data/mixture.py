"""Source mixing: per-source weights, caps and an exclude list, turned into each epoch's window plan.

A weight multiplies a source's natural share: in one epoch, a source with n windows and weight w
contributes floor(w * n) windows (w = 1: each window once; w = 0.5: a fresh seeded half each
epoch; w = 2: each window twice). A cap bounds the tokens a source gives per epoch. An excluded
source has weight 0 whatever any dict or restored state says (GATE-DATA-006), with a warning when
a weight had to be overridden: the "zombie arm" was a removed source resurrected by a restore.

The epoch plan is a seeded permutation of the chosen window ids, a pure function of
(seed, epoch) and the mixture, so any step of any epoch can be recomputed on its own.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure

log = logging.getLogger(__name__)


def check_known(kind: str, names: Iterable[str], known: Iterable[str]) -> None:
    """Every name given for weights, caps or exclusion must be a source of the manifest."""
    known = sorted(known)
    for name in names:
        if name not in known:
            raise BadInput(f"{kind} names unknown source {name!r}; this DATA_DIR has: {', '.join(known)}")


def effective_weights(
    sources: Iterable[str], weights: Mapping[str, float], exclude: Iterable[str], origin: str
) -> dict[str, float]:
    """Weight per source (default 1.0); excluded sources get 0 and a warning if one was asked for."""
    effective = {}
    for name in sorted(sources):
        weight = float(weights.get(name, 1.0))
        if not math.isfinite(weight) or weight < 0:
            raise BadInput(f"weight {weight} for source {name!r} in {origin} must be finite and >= 0")
        effective[name] = weight
    for name in sorted(set(exclude) & set(effective)):
        if weights.get(name, 0.0) > 0:
            log.warning(
                "source %r is excluded: its weight %s from %s is set to 0 (GATE-DATA-006)",
                name,
                weights[name],
                origin,
            )
        effective[name] = 0.0
    return effective


@dataclass(frozen=True)
class Mixture:
    """What one epoch draws from each source: window id ranges, weights, caps, exclusions."""

    ranges: dict[str, tuple[int, int]]
    weights: dict[str, float]
    caps: dict[str, int]  # tokens per epoch
    excluded: frozenset[str]
    seq_len: int

    def quota(self, name: str) -> int:
        """Windows of `name` in one epoch."""
        lo, hi = self.ranges[name]
        windows = math.floor(self.weights[name] * (hi - lo))
        if name in self.caps:
            windows = min(windows, self.caps[name] // self.seq_len)
        return windows

    @property
    def windows_per_epoch(self) -> int:
        """Length of every epoch's plan."""
        return sum(self.quota(name) for name in self.ranges)


def excluded_outcome(mixture: Mixture, plan: np.ndarray) -> Outcome:
    """GATE-DATA-006's check: no window of an excluded source is in the plan."""
    hits = {}
    for name in sorted(mixture.excluded & set(mixture.ranges)):
        lo, hi = mixture.ranges[name]
        if count := int(np.count_nonzero((plan >= lo) & (plan < hi))):
            hits[name] = count
    return measure("GATE-DATA-006", {"excluded_windows": sum(hits.values()), "by_source": hits})


def _source_tag(name: str) -> int:
    return zlib.crc32(name.encode()) + 1  # 0 is the tag of the epoch-wide shuffle


@gate_ensure("GATE-DATA-006", lambda mixture, result: excluded_outcome(mixture, result))
def epoch_plan(mixture: Mixture, seed: int, epoch: int) -> np.ndarray:
    """The window ids of one epoch, in order: each source's quota, shuffled together."""
    parts = [np.empty(0, dtype=np.int64)]
    for name, (lo, hi) in sorted(mixture.ranges.items()):
        quota, n = mixture.quota(name), hi - lo
        if quota == 0:
            continue
        rng = np.random.default_rng([seed, epoch, _source_tag(name)])
        repeats, rest = divmod(quota, n)
        parts.append(lo + np.tile(np.arange(n, dtype=np.int64), repeats))
        parts.append(lo + rng.permutation(n)[:rest].astype(np.int64))
    return np.random.default_rng([seed, epoch, 0]).permutation(np.concatenate(parts))
