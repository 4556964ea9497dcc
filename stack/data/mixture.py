"""Source mixing: per-source weights, caps and an exclude list, turned into each epoch's window plan.

A weight multiplies a source's natural share: in one epoch, a source with n windows and weight w
contributes floor(w * n) windows (w = 1: each window once; w = 0.5: a fresh seeded half each
epoch; w = 2: each window twice). A cap bounds the tokens a source gives per epoch. An excluded
source has weight 0 whatever any dict or restored state says (GATE-DATA-006), with a warning when
a weight had to be overridden: the "zombie arm" was a removed source resurrected by a restore.

The epoch plan is a seeded permutation of the chosen window ids, a pure function of
(seed, epoch) and the mixture written out in contracts.plan, so any step of any epoch can be
recomputed on its own. A source of n windows and quota q gives each of its windows q // n times,
and q mod n of them once more: `quota_outcome` counts the ids of a plan against that
(GATE-DATA-001), so a plan drawn with replacement, which repeats some windows and never reads as
many others, cannot pass for one. The reader holds every plan it makes to that definition for
its seed and epoch (`defined_measured`, GATE-DATA-002): a plan that ignored the seed, or the
epoch, is another plan. A permutation can still be no shuffle at all: the windows in corpus
order, or the same order every epoch, or a fractional source drawing the same windows every
epoch. `order_measured` and `redrawn_measured` measure those against what a uniform shuffle and a
fresh draw of the same windows give (GATE-DATA-002), so the definition itself is held to them.

Shares. A mixture policy (stack.data.policy) speaks in shares of windows instead: a cap is a
source's maximum share, a floor its minimum, and `project_shares` turns any wanted shares into
ones that keep both and sum to 1 (contracts.curriculum.project_shares: one projection, which
GATE-DATA-008's check static applies again). An excluded source has cap 0 and floor 0, whatever else is
configured: the post-mortem's belt and braces against the zombie arm.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from contracts import plan as plan_definition
from contracts.curriculum import UNWEIGHTED, source_bounds
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure
from stack.data.hashing import ids_sha256

log = logging.getLogger(__name__)


def check_known(kind: str, names: Iterable[str], known: Iterable[str]) -> None:
    """Every name given for weights, caps or exclusion must be a source of the manifest."""
    known = sorted(known)
    for name in names:
        if name not in known:
            raise BadInput(f"{kind} names unknown source {name!r}; this DATA_DIR has: {', '.join(known)}")


def check_some_left(exclude: Iterable[str], known: Iterable[str]) -> None:
    """Refuse an exclusion of every source: nothing is left to sample, which was refused later as an
    epoch of 0 windows, "lower batch_size or seq_len", the wrong fix."""
    known = sorted(known)
    if known and set(known) <= set(exclude):
        raise BadInput(
            f"data.exclude leaves no source to sample (the data has: {', '.join(known)}); "
            "exclude fewer sources"
        )


def effective_weights(
    sources: Iterable[str], weights: Mapping[str, float], exclude: Iterable[str], origin: str
) -> dict[str, float]:
    """Weight per source (UNWEIGHTED, 1, where none is given); excluded sources get 0 and a warning if one
    was asked for."""
    effective = {}
    for name in sorted(sources):
        weight = float(weights.get(name, UNWEIGHTED))
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
        """Windows of `name` in one epoch: contracts.plan's rule (floor(w · n), capped)."""
        lo, hi = self.ranges[name]
        return plan_definition.source_quota(hi - lo, self.weights[name], self.caps.get(name), self.seq_len)

    @property
    def quotas(self) -> dict[str, int]:
        """Windows of every source in one epoch."""
        return {name: self.quota(name) for name in self.ranges}

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


def defined_quotas(mixture: Mixture) -> dict[str, int]:
    """Every source's quota as contracts.plan's rule gives it for the mixture's windows, weights and
    caps: what the checks hold a plan to, never the mixture's own `quota` (the code checked)."""
    return plan_definition.quotas(mixture.ranges, mixture.weights, mixture.caps, mixture.seq_len)


def quota_outcome(mixture: Mixture, plan: np.ndarray) -> Outcome:
    """GATE-DATA-001's check of an epoch plan: a permutation of the sources' quotas, each quota
    the rule's (`defined_quotas`), so a mixture that rounds a quota up plans more windows than
    the quotas sum to.

    Each window id of a source with n windows and quota q must occur q // n or q // n + 1 times
    (exactly q // n when n divides q; never for a source of quota 0), and the source's ids q times
    in all. Ids outside every source's range count as off quota.
    """
    total = max((hi for _, hi in mixture.ranges.values()), default=0)
    inside = (plan >= 0) & (plan < total)
    counts = np.bincount(plan[inside], minlength=total)
    off_windows = int(np.count_nonzero(~inside))
    off_sources = []
    quotas = defined_quotas(mixture)
    for name, (lo, hi) in sorted(mixture.ranges.items()):
        quota, found = quotas[name], counts[lo:hi]
        repeats, rest = divmod(quota, hi - lo) if hi > lo else (0, 0)
        off_windows += int(np.count_nonzero((found < repeats) | (found > repeats + (rest > 0))))
        if int(found.sum()) != quota:
            off_sources.append(name)
    measured = {
        "plan_windows": len(plan),
        "quota_windows": sum(quotas.values()),
        "windows_off_quota": off_windows,
        "sources_off_quota": off_sources,
    }
    return measure("GATE-DATA-001", measured, holds="the epoch plan is a permutation of the sources' quotas")


def _excess_z(hits: int, expected: float, trials: int) -> float:
    """How many standard deviations `hits` of `trials` lie above `expected`, the count a uniform
    shuffle gives on average, with a binomial's spread counted as at least one (0 at or below the
    mean). A count moves by whole ones: where a shuffle expects a few hundredths (a small source's
    few windows drawn from thousands), an honest plan's one or two hits would otherwise be tens of
    deviations, and a blocking gate would stop a healthy run."""
    if trials == 0 or hits <= expected:
        return 0.0
    p = expected / trials
    return (hits - expected) / max(math.sqrt(trials * p * (1.0 - p)), 1.0)


def order_measured(plan: np.ndarray, previous: np.ndarray | None) -> dict[str, object]:
    """GATE-DATA-002's shuffle checks of an epoch plan, against a uniform shuffle of its windows.

    In corpus order: consecutive pairs that repeat a window or take the next one, which a shuffle of
    windows with counts c gives (Σ c_a(c_a − 1) + Σ c_a·c_{a+1}) / L times on average over L
    windows. Against the epoch before (`previous`, None in the first): positions holding the
    same window, Σ c_a·c'_a / L on average. Each excess is in binomial standard deviations, so a
    plan of few windows, or of one window many times, is held to what its shuffle can show.
    """
    size = len(plan)
    counts = np.bincount(plan, minlength=1).astype(np.float64) if size else np.zeros(1)
    steps = np.diff(plan)
    ordered = int(np.count_nonzero((steps == 0) | (steps == 1)))
    expected = (float(counts @ (counts - 1)) + float(counts[:-1] @ counts[1:])) / size if size else 0.0
    measured: dict[str, object] = {"plan_windows": size, "order_z": _excess_z(ordered, expected, size - 1)}
    if previous is not None:
        width = min(size, len(previous))
        before = np.bincount(previous, minlength=len(counts)).astype(np.float64)
        counts = np.pad(counts, (0, len(before) - len(counts)))
        same = int(np.count_nonzero(plan[:width] == previous[:width]))
        measured["repeat_z"] = _excess_z(same, float(counts @ before) / max(size, 1), width)
    return measured


def redrawn_measured(mixture: Mixture, plan: np.ndarray, previous: np.ndarray) -> dict[str, object]:
    """GATE-DATA-002's membership check of an epoch plan against the epoch before: for each source
    whose quota q is no multiple of its n windows (a fractional weight, 0.5 or 2.5), which windows
    each plan drew, read from the plans themselves (those it holds once more than q // n times),
    and how many both drew. The judge holds that overlap to what two independent draws give
    (hypergeometric); nothing is measured where no source draws. One count of each plan's ids."""
    total = max((hi for _, hi in mixture.ranges.values()), default=0)
    now, before = (np.bincount(ids, minlength=total) for ids in (plan, previous))
    sources = []
    for name, (lo, hi) in sorted(mixture.ranges.items()):
        repeats, rest = divmod(mixture.quota(name), hi - lo) if hi > lo else (0, 0)
        if rest:
            drawn, drawn_before = now[lo:hi] > repeats, before[lo:hi] > repeats
            sources.append(
                {
                    "source": name,
                    "windows": hi - lo,
                    "drawn": int(np.count_nonzero(drawn)),
                    "drawn_before": int(np.count_nonzero(drawn_before)),
                    "kept": int(np.count_nonzero(drawn & drawn_before)),
                }
            )
    return {"subsamples": sources} if sources else {}


def defined_measured(mixture: Mixture, seed: int, epoch: int, plan: np.ndarray) -> dict[str, object]:
    """GATE-DATA-002's check that the plan served is the one its (seed, epoch) defines: the digest
    of `plan` beside that of contracts.plan's for the same sources, quotas, seed and epoch, drawn
    here from the definition itself rather than through `epoch_plan`, the code it checks."""
    defined = plan_definition.epoch_plan(mixture.ranges, defined_quotas(mixture), seed, epoch)
    return {
        "plan_seed": seed,
        "plan_epoch": epoch,
        "plan_sha256": ids_sha256(plan),
        "defined_sha256": ids_sha256(defined),
    }


def plan_outcome(
    mixture: Mixture, seed: int, epoch: int, plan: np.ndarray, previous: np.ndarray | None
) -> Outcome:
    """GATE-DATA-002 on an epoch plan the reader made: the one its seed and epoch define, shuffled,
    and otherwise than the epoch before, in order and in the windows a fractional source drew."""
    measured = {
        **defined_measured(mixture, seed, epoch, plan),
        **order_measured(plan, previous),
        **(redrawn_measured(mixture, plan, previous) if previous is not None else {}),
    }
    holds = "the epoch plan is its seed's, shuffled afresh each epoch"
    return measure("GATE-DATA-002", measured, holds=holds)


@gate_ensure("GATE-DATA-006", lambda mixture, result: excluded_outcome(mixture, result))
def epoch_plan(mixture: Mixture, seed: int, epoch: int) -> np.ndarray:
    """The window ids of one epoch, in order: each source's quota, shuffled together, as
    contracts.plan defines them for (seed, epoch)."""
    return plan_definition.epoch_plan(mixture.ranges, mixture.quotas, seed, epoch)


def check_bounds(
    where: str, caps: Mapping[str, float], floors: Mapping[str, float], exclude: Iterable[str]
) -> None:
    """Caps and floors of one mixture, checked together: shares in [0, 1], floor <= cap, floors
    summing to at most 1, and an excluded source capped at 0 with no floor (exclude => cap 0)."""
    for kind, bounds in (("cap", caps), ("floor", floors)):
        for name, value in bounds.items():
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise BadInput(
                    f"config {where}: {kind} {value!r} of source {name!r} must be a share in [0, 1]"
                )
    for name in sorted(set(caps) & set(floors)):
        if floors[name] > caps[name]:
            raise BadInput(
                f"config {where}: source {name!r} has floor {floors[name]} above its cap {caps[name]}"
            )
    if (total := math.fsum(floors.values())) > 1.0:
        raise BadInput(f"config {where}: floors sum to {total:.6g}; shares cannot sum to 1 above that")
    for name in sorted(set(exclude)):
        if caps.get(name, 0.0) > 0 or floors.get(name, 0.0) > 0:
            raise BadInput(
                f"config {where}: source {name!r} is excluded but given a cap or floor above 0; an excluded "
                "source is capped at 0: drop its cap and floor"
            )


def share_bounds(
    sources: Iterable[str], caps: Mapping[str, float], floors: Mapping[str, float], exclude: Iterable[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """(caps, floors) for every source: 1 and 0 where unset, 0 and 0 for an excluded source."""
    excluded = set(exclude)
    bounds = {name: source_bounds(name, caps, floors, name in excluded) for name in sorted(sources)}
    cap = {name: bound[0] for name, bound in bounds.items()}
    floor = {name: bound[1] for name, bound in bounds.items()}
    if math.fsum(cap.values()) < 1.0:
        raise BadInput(
            f"caps of the sources add up to {math.fsum(cap.values()):.6g} (excluded sources count 0): "
            "shares cannot sum to 1; raise a cap or drop one"
        )
    return cap, floor
