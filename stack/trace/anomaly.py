"""Single-model anomaly mode: a layer whose site stands out from the same site in other layers.

Layers of a healthy model look alike: the std of `ffn_swiglu` in layer 3 is of the order of
its std in layers 0, 1, 2 and 4. A site whose std exceeds k times the median of the same site
over all the other layers (k = GATE-TRACE-003's anomaly_std_multiple) is an anomaly. Reported
in forward order, the first one is where things went wrong; the ones after it are the cascade.
A site holding NaN/Inf is always an anomaly (its std is not a number to compare).

A site can be empty: an expert no token of the prompt was routed to, or the feed-forward of a
mixture-of-depths block that routed none, sees zero rows. Its std (0 by stack.trace.stats'
convention) says nothing about the layer, so an empty site is never a candidate and never part
of another layer's baseline: a zero baseline would make every nonzero std an infinite ratio.
`empty_sites` names them for the report instead.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from contracts.judges import judge
from contracts.spec import load_spec
from stack.trace.sites import split
from stack.trace.tracer import Trace


@dataclass(frozen=True)
class Anomaly:
    """One site of one layer against its baseline: the median std of that site in other layers."""

    name: str
    layer: int
    site: str
    std: float
    baseline: float
    baseline_layers: tuple[int, ...]
    ratio: float
    nonfinite: bool


def std_multiple() -> float:
    """k: how many times the baseline a site's std may reach."""
    return float(load_spec().threshold("GATE-TRACE-003", "anomaly_std_multiple"))


def empty_sites(trace: Trace, names: list[str]) -> list[str]:
    """The sites among `names` that saw no element (count 0), in forward order."""
    return [name for name in names if trace.stat(name, "count") == 0]


def find_anomalies(trace: Trace, names: list[str]) -> list[Anomaly]:
    """The anomalous sites among `names`, in forward order (none for a one-layer model)."""
    found = []
    for name in names:
        layer, site = split(name)
        if layer is None or trace.stat(name, "count") == 0:
            continue
        # The same site in the other blocks that have it (a routed block has sites others lack)
        # and saw something: an empty site is no baseline (module docstring).
        others = [
            j
            for j in range(trace.n_layers)
            if j != layer
            and f"layers.{j}.{site}" in trace.sites
            and trace.stat(f"layers.{j}.{site}", "count")
        ]
        if not others:
            continue
        record = trace.sites[name]
        stds = {j: trace.stat(f"layers.{j}.{site}", "std") for j in others}
        used = tuple(j for j in others if math.isfinite(stds[j]))  # a NaN layer is no baseline
        baseline = statistics.median(stds[j] for j in used) if used else math.nan
        std = record.stats["std"]
        bad = record.stats["nan"] + record.stats["inf"] > 0 or not math.isfinite(std)
        ratio = _ratio(std, baseline)
        # GATE-TRACE-003's judge decides; JSON has no infinity, the judge reads "inf" back.
        measured = {"std_ratio": ratio if math.isfinite(ratio) else str(ratio), "nonfinite": bad}
        if judge("GATE-TRACE-003", measured):
            found.append(Anomaly(name, layer, site, std, baseline, used, ratio, bad))
    return found


def _ratio(std: float, baseline: float) -> float:
    """std / baseline, where a zero baseline makes any spread infinitely large."""
    if baseline == 0:
        return math.inf if std > 0 else 1.0
    return std / baseline
