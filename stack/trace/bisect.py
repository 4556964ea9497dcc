"""Bisection: the first site, in forward order, where path B leaves path A.

Forward order is a topological order of the data flow, so at the first diverging site every
input still agreed: that site is where the error was made. Later sites may only inherit it.
Shadow mode tells the two apart everywhere: B's block i is fed A's input to block i, so a
layer that still diverges makes error of its own, and one that agrees in shadow only inherits.

`nonfinite` does the same for NaN/Inf within one trace: a producer is a site with non-finite
values whose inputs (stack.trace.sites.inputs_of) are all finite; every other non-finite site
only passes them on. Both verdicts, a site that diverges and a site that produces NaN/Inf, are
GATE-TRACE-003's judge's, from what was measured at the site.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure
from contracts.judges import judge
from contracts.site_statistics import strict
from contracts.trace_tolerance import tolerance_margins
from stack.trace.compare import SiteComparison, TolerancePolicy, compare_site
from stack.trace.sites import inputs_of, split
from stack.trace.tracer import Trace


@dataclass(frozen=True)
class Bisection:
    """A against B over the selected sites, in forward order."""

    comparisons: list[SiteComparison]

    @property
    def first(self) -> SiteComparison | None:
        """The first site that diverges, or None when the paths agree."""
        return next((c for c in self.comparisons if not c.passed), None)

    @property
    def failing(self) -> list[SiteComparison]:
        return [c for c in self.comparisons if not c.passed]

    def layer_verdicts(self) -> dict[int, SiteComparison | None]:
        """Per layer, its first diverging site (None if the layer agrees)."""
        verdicts: dict[int, SiteComparison | None] = {}
        for comparison in self.comparisons:
            layer = split(comparison.name)[0]
            if layer is not None and verdicts.get(layer) is None:
                verdicts[layer] = None if comparison.passed else comparison
        return verdicts


def check_comparable(a: Trace, b: Trace) -> None:
    """Traces of different depth, or made at different schema versions, cannot be bisected."""
    if a.schema_version != b.schema_version:
        raise BadInput(
            f"trace schema versions differ ({a.schema_version} vs {b.schema_version}); "
            "make both with the same gatestack version"
        )
    if a.n_layers != b.n_layers:
        raise BadInput(f"the paths have {a.n_layers} and {b.n_layers} layers; bisection needs the same depth")
    if a.layout != b.layout:
        raise BadInput("the paths' blocks have different sites (dense against experts, or other experts)")


def margins_outcome(result: Bisection, a: Trace, b: Trace) -> Outcome:
    """GATE-TRACE-003's check `margins`: each compared site's reported min_atol and min_rtol (the
    first decides the site) against contracts.trace_tolerance.tolerance_margins of the two traces'
    values there, at the tolerance the site was judged at."""
    reported, recomputed = {}, {}
    for c in result.comparisons:
        reported[c.name] = strict({"min_atol": c.min_atol, "min_rtol": c.min_rtol})
        again = tolerance_margins(a.values[c.name], b.values[c.name], c.tolerance.atol, c.tolerance.rtol)
        recomputed[c.name] = strict(again)
    measured = {"margins_reported": reported, "margins_recomputed": recomputed}
    return measure("GATE-TRACE-003", measured, holds="every site's margins are its values'")


@gate_ensure("GATE-TRACE-003", lambda result, a, b: margins_outcome(result, a, b))
def bisect(a: Trace, b: Trace, policy: TolerancePolicy, names: list[str]) -> Bisection:
    """Compare every selected site of A and B (values of both traces are needed). Bound to
    GATE-TRACE-003 (check margins): the minimum tolerances it reports, which decide each site, are
    held to those the sites' values give, before anything is reported."""
    check_comparable(a, b)
    comparisons = [
        compare_site(
            name,
            a.sites[name],
            b.sites[name],
            a.values[name],
            b.values[name],
            policy.for_site(name),
            sampled=a.values[name].numel() < a.stat(name, "count"),
        )
        for name in names
    ]
    return Bisection(comparisons)


@dataclass(frozen=True)
class NonFinite:
    """Where NaN/Inf appear in one trace: the sites that make them and those that pass them on."""

    producers: list[str]
    carriers: list[str]

    @property
    def first(self) -> str | None:
        return self.producers[0] if self.producers else None


def nonfinite(trace: Trace) -> NonFinite:
    """The producers and carriers of non-finite values, in forward order."""
    held = {n: int(r.stats["nan"] + r.stats["inf"]) for n, r in trace.sites.items()}
    producers, carriers = [], []
    for name in trace.names:
        if held.get(name):
            sources = inputs_of(name, trace.n_layers, trace.layout)
            measured = {
                "nonfinite_elements": held[name],
                "nonfinite_inputs": sum(1 for source in sources if held.get(source)),
            }
            (producers if judge("GATE-TRACE-003", measured) else carriers).append(name)
    return NonFinite(producers, carriers)
