"""The curriculum's rules that the run and the integrity check both apply, so they cannot drift apart.

Which phase serves an optimizer step, and the cap and floor a phase gives a source: the stack's
reader and mixture policy (stack.data.curriculum, stack.data.mixture) serve by them, and
contracts/derive/restated.py re-derives GATE-DATA-008 and GATE-DATA-009 from a record's config by
them. Phase 0 is the `[data]` mixture after step 0; each configured phase serves every step after
its `after_step`. A source a phase leaves unbounded has cap 1 and floor 0; an excluded one, 0 and 0.

A static policy (no bandit) serves each source its weight times its natural share of the split's
windows, projected onto the phase's caps and floors (`static_shares`): the statute GATE-DATA-008's
check static holds the shares a static policy serves to, from the phase's configured weights and
the windows of the manifest's shards (`split_windows`), apart from the policy's own arithmetic.
`project_shares` is the one projection onto caps and floors: the policy serves by it, and the
check applies it again to the rule's shares.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from contracts.errors import BadInput

UNCAPPED, UNFLOORED = 1.0, 0.0
# A source's weight where its phase names none (stack.data.mixture.effective_weights reads the same).
UNWEIGHTED = 1.0


def phase_at(after_steps: Sequence[int], step: int) -> int:
    """The index of the phase serving optimizer step `step` (the first step is 1), given each
    phase's `after_step` in order (the first is 0)."""
    return max(i for i, after in enumerate(after_steps) if after < step)


def source_bounds(
    name: str, caps: Mapping[str, float], floors: Mapping[str, float], excluded: bool
) -> tuple[float, float]:
    """(cap, floor) of source `name` under a phase's caps and floors."""
    if excluded:
        return 0.0, 0.0
    return float(caps.get(name, UNCAPPED)), float(floors.get(name, UNFLOORED))


def eligible_arms(arms: Iterable[str], weights: Mapping[str, float], caps: Mapping[str, float]) -> list[str]:
    """The bandit arms a phase lets the bandit choose among: a phase's weight 0, or cap 0, takes an
    arm out of it (weights and caps as configured; UNWEIGHTED and UNCAPPED where unset)."""
    return [
        arm
        for arm in sorted(arms)
        if float(weights.get(arm, UNWEIGHTED)) > 0 and float(caps.get(arm, UNCAPPED)) > 0
    ]


def split_windows(shards: Iterable[Mapping[str, Any]], split: str, window: int) -> dict[str, int]:
    """Windows of each source of `split` read in windows of `window` targets, as the reader numbers
    them: ⌊(n − 1) / window⌋ in each shard of n tokens; `shards` as a manifest lists them (each with
    its split, source and tokens)."""
    windows: dict[str, int] = {}
    for shard in shards:
        if shard.get("split") == split and isinstance(shard.get("tokens"), int):
            source = str(shard.get("source"))
            windows[source] = windows.get(source, 0) + max(shard["tokens"] - 1, 0) // window
    return windows


def weighted_shares(
    weights: Mapping[str, float], windows: Mapping[str, int], excluded: Collection[str]
) -> dict[str, float]:
    """Each source's weight (UNWEIGHTED where `weights` names none, 0 when excluded) times its windows,
    over the sum of those products: a static policy's shares before caps and floors ({} when no
    source has windows and weight)."""
    product = {
        name: 0.0 if name in excluded else float(weights.get(name, UNWEIGHTED)) * n
        for name, n in windows.items()
    }
    total = math.fsum(product.values())
    return {name: value / total for name, value in product.items()} if total > 0 else {}


def static_shares(
    weights: Mapping[str, float],
    windows: Mapping[str, int],
    excluded: Collection[str],
    caps: Mapping[str, float],
    floors: Mapping[str, float],
) -> dict[str, float]:
    """The shares a static policy serves under a phase of `weights`, `caps` and `floors` (as
    configured): `weighted_shares` projected onto each source's bounds (`source_bounds`)."""
    bounds = {name: source_bounds(name, caps, floors, name in excluded) for name in windows}
    return project_shares(
        weighted_shares(weights, windows, excluded),
        {name: cap for name, (cap, _) in bounds.items()},
        {name: floor for name, (_, floor) in bounds.items()},
    )


def project_shares(
    wanted: Mapping[str, float], caps: Mapping[str, float], floors: Mapping[str, float]
) -> dict[str, float]:
    """Shares in [floor, cap] per source that sum to 1, in the ratios of `wanted` where no bound binds.

    share(τ) = clip(τ·wanted, floor, cap) is piecewise linear in τ, with breaks where a source
    reaches its floor or cap; the segment where the sum crosses 1 is found among the breaks and
    τ solved there exactly. Scaling (not adding) keeps a source the policy gave nothing at its floor.
    """
    names = sorted(caps)
    weight = {n: float(wanted.get(n, 0.0)) for n in names}

    def share(n: str, tau: float) -> float:
        # Compared as τ against the source's breaks, so a source at a break is exactly at its bound;
        # the cap first, for a floor and cap so close that their breaks are one float.
        if weight[n] == 0:
            return floors[n]
        if tau >= caps[n] / weight[n]:
            return caps[n]
        return floors[n] if tau <= floors[n] / weight[n] else tau * weight[n]

    def shares(tau: float) -> dict[str, float]:
        return {n: share(n, tau) for n in names}

    def total(tau: float) -> float:
        return math.fsum(shares(tau).values())

    breaks = sorted({0.0, *(b / weight[n] for n in names if weight[n] > 0 for b in (floors[n], caps[n]))})
    if total(breaks[-1]) < 1.0:
        raise BadInput(
            "the mixture cannot sum to 1: the sources with weight > 0 reach their caps first; give "
            "another source weight, raise a cap or a floor"
        )
    upper = next(i for i, tau in enumerate(breaks) if total(tau) >= 1.0)
    if upper == 0 or total(breaks[upper]) == 1.0:
        return shares(breaks[upper])
    inside = shares((breaks[upper - 1] + breaks[upper]) / 2)
    free = [n for n in names if weight[n] > 0 and floors[n] < inside[n] < caps[n]]
    tau = (1.0 - math.fsum(inside[n] for n in names if n not in free)) / math.fsum(weight[n] for n in free)
    return {**inside, **{n: tau * weight[n] for n in free}}
