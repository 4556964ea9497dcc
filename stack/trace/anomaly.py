"""Single-model anomaly mode: a layer whose site stands out from the same site in other layers.

The rule is GATE-TRACE-003's, in contracts.trace_anomaly: a site's std against the median of the
same site over the other layers (k = anomaly_std_multiple; a site with a role in a healthy model,
a mixture's layer-0 write or the last block's output, at its role's calibrated multiple); a site a
block computes from its own sites by its weights (contracts.trace_anomaly.GAIN_READS), and a
router (ROUTER_READS), by its gain, its std over its reads', against the median gain
(gain_std_multiple; router_gain_std_multiple for a router); a site holding NaN/Inf always
an anomaly, an empty site (no token routed there) never judged and never a baseline. Reported in
forward order, the first one is where things went wrong; the ones after it are the cascade.
`empty_sites` names the empty ones for the report.

What the report names is judged again before it is believed (`check_anomalies`, GATE-TRACE-003's
check `anomalies`): its anomalies, each with the layers of its baseline, must be those the rule
gives from the statistics the trace measured, so a baseline that takes in the site's own layer,
or an anomaly lost on the way to the report, stops the trace instead of reporting it clean.
"""

from __future__ import annotations

from typing import Any

from contracts.evidence import plain
from contracts.gates import Outcome, gate_require, measure
from contracts.judges import judge
from contracts.spec import load_spec
from contracts.trace_anomaly import (
    MEASURE_THRESHOLDS,
    ROLES,
    SiteBaseline,
    SiteStats,
    block_site,
    gain_reads,
    read_site,
    site_baselines,
)
from stack.trace.tracer import Trace

# The statistics of a site that every baseline reads.
BASELINE_STATS = ("count", "std", "nan", "inf")


def measure_multiples() -> dict[str, float]:
    """How many times the median of the same site in the other layers each measure a site is judged
    by may reach (SiteBaseline.measure: its std at k, a gain at its own multiple), by measure; a
    measure whose threshold the spec does not hold is left out."""
    thresholds = load_spec().gate("GATE-TRACE-003").thresholds
    named = {"std": "anomaly_std_multiple", **MEASURE_THRESHOLDS}
    return {measure: float(thresholds[key].value) for measure, key in named.items() if key in thresholds}


def role_multiples() -> dict[str, float]:
    """The multiple of each role the current rule has (contracts.trace_anomaly.Role.threshold), by
    role name (a role of an earlier revision only, whose threshold the spec no longer holds, is left out)."""
    thresholds = load_spec().gate("GATE-TRACE-003").thresholds
    return {
        role.name: float(thresholds[role.threshold].value) for role in ROLES if role.threshold in thresholds
    }


def empty_sites(trace: Trace, names: list[str]) -> list[str]:
    """The sites among `names` that saw no element (count 0), in forward order."""
    return [name for name in names if trace.stat(name, "count") == 0]


def site_stats(trace: Trace) -> dict[str, dict[str, Any]]:
    """What the baselines read, as JSON data (non-finite as text), in forward order: every block site
    of the trace, and any other site a gain is over (the embedding, which a router in block 0 reads)."""
    read = {
        read_site(where[0], kind)
        for where in map(block_site, trace.sites)
        if where is not None
        for kind in gain_reads(where[1])
    }
    return {
        name: plain({key: record.stats[key] for key in BASELINE_STATS})
        for name, record in trace.sites.items()
        if block_site(name) is not None or name in read
    }


def judged_sites(trace: Trace, names: list[str]) -> list[SiteBaseline]:
    """Every block site among `names` that is judged, against its baseline, in forward order."""
    return site_baselines(site_stats(trace), names)


def is_anomaly(site: SiteBaseline) -> bool:
    """GATE-TRACE-003's judge on one site: its std beyond k × its baseline, or NaN/Inf in it."""
    return bool(judge("GATE-TRACE-003", site.measured()))


def find_anomalies(trace: Trace, names: list[str]) -> list[SiteBaseline]:
    """The anomalous sites among `names`, in forward order (none for a one-layer model)."""
    return [site for site in judged_sites(trace, names) if is_anomaly(site)]


def anomalies_outcome(stats: SiteStats, names: list[str], found: list[SiteBaseline]) -> Outcome:
    """GATE-TRACE-003's check `anomalies`: the statistics the trace measured, the sites judged, and
    the anomalies the report names with the layers of their baselines."""
    measured = {
        "site_stats": dict(stats),
        "sites_judged": list(names),
        "anomalies_named": [{"name": a.name, "baseline_layers": list(a.baseline_layers)} for a in found],
    }
    return measure(
        "GATE-TRACE-003", measured, holds="the anomalies named are those its sites' statistics give"
    )


@gate_require("GATE-TRACE-003", lambda stats, names, found: anomalies_outcome(stats, names, found))
def check_anomalies(stats: SiteStats, names: list[str], found: list[SiteBaseline]) -> None:
    """Refuse a report whose anomalies are not those of the statistics its trace measured."""
