"""What a person reads: the site × layer table, the first anomaly or divergence, the cascade.

Text for the terminal, and the same content as plain data for `--json`, `--csv` and the
evidence record. Every output carries the trace schema version. Numbers are printed with
three significant digits: enough to decide, not a wall to read.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from typing import Any

from contracts.trace_anomaly import SiteBaseline, read_site
from stack.trace.ablation import AblationEffect
from stack.trace.bisect import Bisection, NonFinite
from stack.trace.compare import ErrorStats, SiteComparison
from stack.trace.sites import MODEL_SITES, STATS, TRACE_SCHEMA_VERSION, inputs_of, split
from stack.trace.tracer import SiteRecord, Trace

SHOWN_STATS = ("mean", "std", "min", "max", "absmax", "nan", "inf", "zero")
ERROR_FIELDS = ("max", "mean", "median", "p99")
CASCADE_SHOWN = 12  # sites of a cascade named before "... and N more"
WIDTH = 100  # columns of the wrapped lists


def num(value: float) -> str:
    """A number in three significant digits (integers of counts stay integers)."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.3g}" if value != int(value) or abs(value) >= 1e6 else str(int(value))


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def grid(trace: Trace, names: list[str], statistic: str, marked: set[str]) -> list[str]:
    """One statistic as a table: a row per site kind, a column per selected layer; `!` marks anomalies."""
    chosen = set(names)
    layers = sorted({layer for layer in (split(n)[0] for n in names) if layer is not None})
    lines = [f"{statistic} per site × layer" + ("  (! = anomaly)" if marked else "")]
    if layers:
        width = max(14, *(len(k) + 1 for k in trace.layout.kinds))
        lines.append(f"{'site':<{width}}" + "".join(f"{'layer ' + str(i):>11}" for i in layers))
        for site in trace.layout.kinds:
            cells = []
            for layer in layers:
                name = f"layers.{layer}.{site}"
                text = (
                    num(trace.stat(name, statistic)) + ("!" if name in marked else "")
                    if name in chosen
                    else ""
                )
                cells.append(f"{text:>11}")
            if any(c.strip() for c in cells):
                lines.append(f"{site:<{width}}" + "".join(cells))
    model = [f"{n} {num(trace.stat(n, statistic))}" for n in MODEL_SITES if n in chosen]
    if model:
        lines.append("model sites:   " + "   ".join(model))
    return lines


def stats_line(label: str, record: SiteRecord) -> str:
    return f"  {label:<10}" + "".join(f"{num(record.stats[s]):>11}" for s in SHOWN_STATS)


def _errors(label: str, errors: ErrorStats) -> str:
    return f"  {label:<10}" + "  ".join(f"{f} {num(getattr(errors, f))}" for f in ERROR_FIELDS)


def divergence(c: SiteComparison) -> list[str]:
    """The Polygraphy-style block of one diverging site."""
    layer, site = split(c.name)
    where = f"layer {layer}, site {site}" if layer is not None else f"model site {site}"
    lines = [f"FIRST DIVERGENCE: {c.name} ({where})"]
    if c.a.shape != c.b.shape:
        return [*lines, f"  shapes differ: A {shape_text(c.a.shape)}, B {shape_text(c.b.shape)}"]
    sample = f" (a fixed sample of {int(c.a.stats['count'])})" if c.sampled else ""
    lines += [
        f"  shape {shape_text(c.a.shape)}, dtype A {c.a.dtype}, B {c.b.dtype}, {c.elements} elements{sample}",
        f"  {'':<10}" + "".join(f"{s:>11}" for s in SHOWN_STATS),
        stats_line("A", c.a),
        stats_line("B", c.b),
        _errors("abs error", c.abs_error),
        _errors("rel error", c.rel_error),
        f"  cosine similarity {c.cosine:.6f}   SQNR {num(c.sqnr_db)} dB",
        f"  tolerance  atol {num(c.tolerance.atol)}, rtol {num(c.tolerance.rtol)} ({c.tolerance.source}): "
        f"{c.failing} of {c.elements} elements fail"
        + (f", {c.nonfinite_mismatch} of them NaN/Inf on one side only" if c.nonfinite_mismatch else ""),
        f"  minimum tolerance that passes: atol {num(c.min_atol)} (at rtol {num(c.tolerance.rtol)}) "
        f"or rtol {num(c.min_rtol)} (at atol {num(c.tolerance.atol)})",
    ]
    return lines


def _listing(head: str, names: list[str]) -> list[str]:
    """`head` followed by the first CASCADE_SHOWN names, wrapped to the width of the report."""
    shown = ", ".join(names[:CASCADE_SHOWN]) or "none"
    more = f", ... and {len(names) - CASCADE_SHOWN} more" if len(names) > CASCADE_SHOWN else ""
    return textwrap.wrap(f"{head}{shown}{more}", WIDTH, initial_indent="  ", subsequent_indent="    ")


def bisection(result: Bisection, shadow: Bisection | None) -> list[str]:
    """The first divergence, what follows it, and the per-layer picture (with shadow, local vs inherited)."""
    first = result.first
    if first is None:
        lines = [f"paths agree at all {len(result.comparisons)} compared sites"]
    else:
        later = [c.name for c in result.failing[1:]]
        after = len(result.comparisons) - result.comparisons.index(first) - 1
        lines = [*divergence(first), f"cascade: {len(later)} of the {after} sites after it diverge"]
        if later:
            lines += _listing("", later)
    verdicts = result.layer_verdicts()
    local = shadow.layer_verdicts() if shadow is not None else {}
    if verdicts:
        header = f"{'layer':>5}  {'first diverging site':<22}{'max |a-b| at output':>21}{'cosine':>11}"
        lines += [
            "per layer:",
            header + ("   error made in this layer (shadow)" if shadow is not None else ""),
        ]
        by_name = {c.name: c for c in result.comparisons}
        for layer, verdict in verdicts.items():
            out = by_name.get(f"layers.{layer}.output")
            row = f"{layer:>5}  {(split(verdict.name)[1] if verdict else '-'):<22}"
            row += f"{num(out.abs_error.max):>21}{out.cosine:>11.6f}" if out else f"{'':>32}"
            if shadow is not None:
                made = local.get(layer)
                inherited = "no, inherited" if verdict else "-"
                row += "   " + (f"yes, at {split(made.name)[1]}" if made else inherited)
            lines.append(row)
    return lines


def _ratio(a: SiteBaseline) -> str:
    return f"{num(a.ratio)}×" if math.isfinite(a.ratio) else "-"


def empty(names: list[str]) -> list[str]:
    """The sites that saw nothing, which no baseline includes (stack.trace.anomaly)."""
    if not names:
        return []
    return _listing(f"{len(names)} empty site(s), no token routed there, left out of every baseline: ", names)


def roles(judged: list[SiteBaseline], multiples: dict[str, float]) -> list[str]:
    """The judged sites with a role of their own, each with why and the multiple it was held to."""
    return [
        f"  {b.name}: {b.role.why}, held to {multiples[b.role.name]:g} × its baseline "
        f"(calibrated on healthy models): {_ratio(b)}"
        for b in judged
        if b.role is not None and not b.nonfinite
    ]


def anomalies(found: list[SiteBaseline], multiples: Mapping[str, float], n_layers: int) -> list[str]:
    """The first anomaly and the cascade after it, with baselines and ratios: a site judged by its
    std, or by a gain (its std over its reads'), at the multiple of its measure (`multiples`, by
    SiteBaseline.measure)."""
    if n_layers < 2:
        return ["anomaly mode needs at least two layers to compare a layer with the others"]
    k, gain_k = multiples["std"], multiples["gain"]
    router_k = multiples.get("router_gain", gain_k)
    if not found:
        routers = "" if router_k == gain_k else f" ({router_k:g} × for a router)"
        return [
            f"no anomaly: no site's std exceeds {k:g} × the median of the same site in the other layers, "
            f"and no sub-operation's gain {gain_k:g} × the median gain{routers}"
        ]
    first, rest = found[0], found[1:]
    layers = ",".join(map(str, first.baseline_layers))
    if first.nonfinite:
        headline = f"FIRST ANOMALY: {first.name} holds NaN/Inf"
    elif first.reads:
        reads = " × ".join(read_site(first.layer, read) for read in first.reads)
        headline = (
            f"FIRST ANOMALY: {first.name}: gain {num(first.gain)} (std {num(first.std)} over {reads}) is "
            f"{_ratio(first)} the median gain {num(first.baseline)} of {first.site} in layers {layers} "
            f"(k = {multiples.get(first.measure, k):g})"
        )
    else:
        headline = (
            f"FIRST ANOMALY: {first.name}: std {num(first.std)} is {_ratio(first)} the median "
            f"{num(first.baseline)} of {first.site} in layers {layers} (k = {k:g})"
        )
    lines = [headline, f"cascade after it: {len(rest)} more site(s)"]
    if rest:
        lines.append(f"  {'site':<26}{'by':>5}{'value':>11}{'baseline':>11}  {'of layers':<14}{'ratio':>10}")
        for a in rest[:CASCADE_SHOWN]:
            flag = "  NaN/Inf" if a.nonfinite else ""
            of = ",".join(map(str, a.baseline_layers))
            by, value = ("gain", a.gain) if a.reads else ("std", a.std)
            lines.append(
                f"  {a.name:<26}{by:>5}{num(value):>11}{num(a.baseline):>11}  {of:<14}{_ratio(a):>10}{flag}"
            )
        if len(rest) > CASCADE_SHOWN:
            lines.append(f"  ... and {len(rest) - CASCADE_SHOWN} more")
    return lines


def nonfinite_lines(found: NonFinite, trace: Trace, label: str) -> list[str]:
    """The producer of NaN/Inf (its inputs all finite) and the sites that only carry them."""
    if found.first is None:
        return [f"{label}: no NaN/Inf at any site"]
    record = trace.sites[found.first]
    inputs = ", ".join(inputs_of(found.first, trace.n_layers, trace.layout))
    lines = [
        f"NON-FINITE in {label}: first produced at {found.first}",
        f"  nan {num(record.stats['nan'])}, inf {num(record.stats['inf'])} of {num(record.stats['count'])} "
        f"elements, while its inputs ({inputs}) are finite",
    ]
    if found.producers[1:]:
        lines += _listing("also produced (inputs finite) at: ", found.producers[1:])
    lines += _listing(f"passed on by {len(found.carriers)} site(s): ", found.carriers)
    return lines


def ablation_lines(effect: AblationEffect) -> list[str]:
    """How much the ablated sites carried."""
    c = effect.logits
    changes = "  ".join(f"{layer}: {num(v)}" for layer, v in effect.output_change.items())
    return [
        f"ABLATION: {', '.join(effect.sites)} zeroed",
        f"  logits: max |Δ| {num(c.abs_error.max)}, cosine {c.cosine:.6f}, SQNR {num(c.sqnr_db)} dB",
        f"  next-token argmax changes at {effect.argmax_changed} of {effect.positions} positions; "
        f"mean KL(intact ‖ ablated) {num(effect.mean_kl)} nats",
        f"  change of each layer's output, ‖Δ‖/‖intact‖: {changes}",
    ]


def site_json(record: SiteRecord) -> dict[str, Any]:
    layer, site = split(record.name)
    return {
        "name": record.name,
        "layer": layer,
        "site": site,
        "shape": list(record.shape),
        "dtype": record.dtype,
        "stats": record.stats,
    }


def comparison_json(c: SiteComparison) -> dict[str, Any]:
    return {
        "name": c.name,
        "passed": c.passed,
        "shape_a": list(c.a.shape),
        "shape_b": list(c.b.shape),
        "elements": c.elements,
        "sampled": c.sampled,
        "failing": c.failing,
        "nonfinite_mismatch": c.nonfinite_mismatch,
        "abs_error": vars(c.abs_error),
        "rel_error": vars(c.rel_error),
        "cosine": c.cosine,
        "sqnr_db": c.sqnr_db,
        "tolerance": vars(c.tolerance),
        "min_atol": c.min_atol,
        "min_rtol": c.min_rtol,
        "stats_a": c.a.stats,
        "stats_b": c.b.stats,
    }


def csv_rows(a: Trace, names: list[str], b: Trace | None, result: Bisection | None) -> list[dict[str, Any]]:
    """One row per site: A's statistics, then B's (b_*), then the errors when there is a bisection."""
    by_name = {c.name: c for c in result.comparisons} if result is not None else {}
    rows = []
    for name in names:
        layer, site = split(name)
        record = a.sites[name]
        row: dict[str, Any] = {
            "trace_schema_version": TRACE_SCHEMA_VERSION,
            "name": name,
            "layer": "" if layer is None else layer,
            "site": site,
            "shape": shape_text(record.shape),
            "dtype": record.dtype,
            **{s: record.stats[s] for s in STATS},
        }
        if b is not None:
            row.update({f"b_{s}": b.sites[name].stats[s] for s in STATS})
        c = by_name.get(name)
        if c is not None:
            row.update({f"abs_{f}": getattr(c.abs_error, f) for f in ERROR_FIELDS})
            row.update({f"rel_{f}": getattr(c.rel_error, f) for f in ERROR_FIELDS})
            row.update(
                cosine=c.cosine,
                sqnr_db=c.sqnr_db,
                atol=c.tolerance.atol,
                rtol=c.tolerance.rtol,
                min_atol=c.min_atol,
                min_rtol=c.min_rtol,
                failing=c.failing,
                passed=c.passed,
            )
        rows.append(row)
    return rows
