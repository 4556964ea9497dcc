"""GATE-TRACE-003's anomaly rule: each site of a block against the same site in the other blocks.

Layers of a healthy model look alike: the std of `ffn_swiglu` in layer 3 is of the order of its
std in layers 0, 1, 2 and 4. A site's baseline is the median std of the same site over the other
layers, never its own: a layer that blew up would otherwise pull its own baseline up with it
(with two layers, halfway), and a site at 27 times its neighbours would pass as clean. Whether a
site is an anomaly is GATE-TRACE-003's judge's to say from the ratio of its std to its baseline,
or from NaN/Inf in it (its std is then not a number to compare).

One site of one layer is no baseline (rev 7): layer 0's `attn_residual` (stack.trace.sites' name
for x + attn_out, the stream between attention and FFN). Its stream is the embedding plus the
first attention's write, which no block has yet written into whole; from layer 1 on the stream
carries every earlier block's FFN write too. A trained model's embedding is a fraction of that (std
0.13 against 1.13 in a two-layer `tiny` run), so as the only other layer it made every trained
two-layer model's second `attn_residual` an anomaly at 8.6 to 9.2 times. It is still judged
against the later layers, as every site with a baseline is.

A site can be empty: an expert no token was routed to, or the feed-forward of a mixture-of-depths
block that routed none, sees zero rows. Its std (0 by convention) says nothing about the layer, so
an empty site is never judged and never part of another layer's baseline: a zero baseline would
make every nonzero std an infinite ratio. A layer whose std is not finite is no baseline either.

This module is the one account of the baselines: `stack trace` finds its anomalies with it, the
judge of GATE-TRACE-003's check `anomalies` re-derives them from the per-site statistics the run
measured, and tools/check_integrity.py from those its report (trace.json) holds. It reads only
site names and statistics (JSON data: a non-finite number may be the string "nan" or "inf").
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# name → its statistics ("count", "std", "nan", "inf" at least), as the trace measured them.
SiteStats = Mapping[str, Mapping[str, Any]]

_BLOCK_SITE = re.compile(r"^layers\.(\d+)\.(.+)$")

# (layer, site) of the stream no block has written into whole (module docstring): no baseline.
EMBEDDING_STREAM = (0, "attn_residual")
# GATE-TRACE-003's revision from which it is no baseline; a record judged earlier is derived again
# by the rule it was judged under.
EMBEDDING_STREAM_SINCE = 7


@dataclass(frozen=True)
class SiteBaseline:
    """One site of one layer against its baseline: the median std of that site in other layers."""

    name: str
    layer: int
    site: str
    std: float
    baseline: float
    baseline_layers: tuple[int, ...]
    ratio: float
    nonfinite: bool

    def measured(self) -> dict[str, Any]:
        """What GATE-TRACE-003's check `site` reads; JSON has no infinity, the judge reads "inf" back."""
        ratio = self.ratio if math.isfinite(self.ratio) else str(self.ratio)
        return {"std_ratio": ratio, "nonfinite": self.nonfinite}


def block_site(name: str) -> tuple[int, str] | None:
    """`layers.3.ffn_up` → (3, "ffn_up"); a site of no block (embed, logits) → None."""
    match = _BLOCK_SITE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def _number(value: Any) -> float:
    """A statistic as a float: JSON writes NaN and ±Inf as strings; anything else unreadable is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _seen(stats: Mapping[str, Any]) -> bool:
    """Whether the site saw any element (an empty site is no candidate and no baseline)."""
    return _number(stats.get("count")) > 0


def _ratio(std: float, baseline: float) -> float:
    """std / baseline, where a zero baseline makes any spread infinitely large."""
    if baseline == 0:
        return math.inf if std > 0 else 1.0
    return std / baseline


def _same_site(stats: SiteStats, site: str) -> list[tuple[int, Mapping[str, Any]]]:
    """(layer, statistics) of every block that has `site` (a routed block has sites others lack)."""
    found = []
    for name, held in stats.items():
        where = block_site(name)
        if where is not None and where[1] == site:
            found.append((where[0], held))
    return sorted(found, key=lambda pair: pair[0])


def site_baselines(
    stats: SiteStats, names: Sequence[str], revision: int = EMBEDDING_STREAM_SINCE
) -> list[SiteBaseline]:
    """Each non-empty block site among `names` that another layer has and saw something in, against
    its baseline, in the order of `names` (none for a one-layer model). The baseline is taken over
    the other layers only, those of them whose std is finite (a NaN layer is no baseline), and from
    GATE-TRACE-003 `revision` 7 on never over the embedding's stream (EMBEDDING_STREAM)."""
    judged = []
    for name in names:
        where, held = block_site(name), stats.get(name)
        if where is None or held is None or not _seen(held):
            continue
        layer, site = where
        others = [
            (j, other)
            for j, other in _same_site(stats, site)
            if j != layer and _seen(other) and _baseline(j, site, revision)
        ]
        if not others:
            continue
        stds = {j: _number(other.get("std")) for j, other in others}
        used = tuple(j for j, std in stds.items() if math.isfinite(std))
        baseline = statistics.median(stds[j] for j in used) if used else math.nan
        std = _number(held.get("std"))
        bad = _number(held.get("nan")) + _number(held.get("inf")) > 0 or not math.isfinite(std)
        judged.append(SiteBaseline(name, layer, site, std, baseline, used, _ratio(std, baseline), bad))
    return judged


def _baseline(layer: int, site: str, revision: int) -> bool:
    """Whether `site` of `layer` may stand in another layer's baseline under `revision`."""
    return revision < EMBEDDING_STREAM_SINCE or (layer, site) != EMBEDDING_STREAM


def anomalies(
    stats: SiteStats, names: Sequence[str], anomalous: Callable[[SiteBaseline], bool]
) -> list[SiteBaseline]:
    """The anomalous sites among `names`, in their order; `anomalous` is GATE-TRACE-003's decision
    on one site (the judge's, at run time under the spec's thresholds, in a judge under its own)."""
    return [b for b in site_baselines(stats, names) if anomalous(b)]
