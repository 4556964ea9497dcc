"""The four things `stack trace` can do, each ending in one `Result`.

single      one path: the site × layer table, anomalies (and NaN/Inf producers), optional dump
two_paths   A against B in this process (another checkpoint, backend or dtype), optional shadow
dumps       A against B from two dump files, made wherever
ablation    one path with and without some sites zeroed

A Result holds the verdict (and whether it is a finding, exit 3), the text for the terminal,
the plain data for --json, --csv and the evidence record, and a per-layer summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.trace_anomaly import SiteBaseline, not_judged
from stack.trace import report
from stack.trace.ablation import ablation_effect, check_samples, greedy_sample
from stack.trace.anomaly import (
    check_anomalies,
    empty_sites,
    find_anomalies,
    judged_sites,
    measure_multiples,
    role_multiples,
    site_stats,
)
from stack.trace.bisect import Bisection, bisect, check_comparable, nonfinite
from stack.trace.calibrate import TracePath, check_dtypes, combined, reference_error, run
from stack.trace.compare import TolerancePolicy, ToleranceRule
from stack.trace.dump import Dump, check_dump, write_dump
from stack.trace.sites import TRACE_SCHEMA_VERSION
from stack.trace.tracer import Trace, trace_forward


@dataclass
class Result:
    """What one mode found, ready to print, save and file as evidence."""

    mode: str
    verdict: str  # clean | anomaly | nonfinite | agree | divergence | ablation
    found: bool  # an anomaly, a divergence or a NaN/Inf producer: exit 3
    lines: list[str]
    data: dict[str, Any]
    csv: list[dict[str, Any]]
    per_layer: list[dict[str, Any]]
    first: str | None = None

    def payload(self) -> dict[str, Any]:
        """The whole result as JSON-ready data (what --json writes)."""
        return {
            "trace_schema_version": TRACE_SCHEMA_VERSION,
            "mode": self.mode,
            "verdict": self.verdict,
            "first": self.first,
            "per_layer": self.per_layer,
            **self.data,
        }


def _trace_data(trace: Trace, names: list[str]) -> dict[str, Any]:
    return {"n_layers": trace.n_layers, "sites": [report.site_json(trace.sites[n]) for n in names]}


def _anomaly_json(a: SiteBaseline) -> dict[str, Any]:
    return {
        "name": a.name,
        "std": a.std,
        "baseline": a.baseline,
        "baseline_layers": list(a.baseline_layers),
        "ratio": a.ratio,
        "nonfinite": a.nonfinite,
        # A site judged by its gain: the sites it reads and its gain, which `baseline` is the median of.
        **({"reads": list(a.reads), "gain": a.gain} if a.reads else {}),
        # Why the site was compared as it was: its role and the multiple it answers to, if any.
        **({"role": a.role.name, "why": a.role.why} if a.role else {}),
    }


def single(
    path: TracePath,
    idx: torch.Tensor,
    names: list[str],
    statistic: str,
    stop_on_nonfinite: bool,
    dump: Path | None,
) -> Result:
    """Trace one path; name the first anomaly (or, with stop_on_nonfinite, the first NaN/Inf producer).

    A dump's calibration (the fp64 and the reference path's forwards) runs before the traced
    forward, never after: each forward's GATE-TRACE-002 values settle into the record, the last
    one's standing, and the record's statistics and identities must be those of the forward the
    report shows (a calibration run after it leaves the naive path's numbers in the record: 22
    GATE-INTEG-001 lines on a correct `--dump`).
    """
    calibration = reference_error(path, idx) if dump is not None else None
    trace, _ = trace_forward(path.model(), idx, keep=dump is not None)
    check_dtypes({"A": (path, trace)})  # GATE-TRACE-002, check dtype
    if dump is not None and calibration is not None:
        meta = {"label": path.label, "backend": path.backend, "dtype": path.dtype, "device": idx.device.type}
        write_dump(dump, trace, idx[0].tolist(), meta, calibration)
        check_dump(dump, trace)  # GATE-TRACE-002, check dump: the file read back against the sites
    found = find_anomalies(trace, names)
    stats = site_stats(trace)
    check_anomalies(stats, names, found)  # GATE-TRACE-003: the rule again, on what was measured
    empty = empty_sites(trace, names)
    bad = nonfinite(trace)
    lines = [
        f"stack trace: {path.describe()} on {idx.shape[1]} tokens, {trace.n_layers} layers, "
        f"trace schema {TRACE_SCHEMA_VERSION}",
        *report.grid(trace, names, statistic, {a.name for a in found}),
        "",
    ]
    if stop_on_nonfinite and bad.first is not None:
        verdict, first = "nonfinite", bad.first
        lines += report.nonfinite_lines(bad, trace, path.describe())
    else:
        verdict = "anomaly" if found else "clean"
        first = found[0].name if found else None
        lines += report.anomalies(found, measure_multiples(), trace.n_layers)
        lines += report.roles(judged_sites(trace, names), role_multiples())
        lines += report.empty(empty)
        if bad.first is not None:
            lines.append("  NaN/Inf present: rerun with --stop-on-nonfinite to name the site that makes them")
    per_layer = [
        {
            "layer": i,
            "output_std": trace.stat(f"layers.{i}.output", "std"),
            "output_absmax": trace.stat(f"layers.{i}.output", "absmax"),
            "nonfinite_sites": sum(1 for n in bad.producers + bad.carriers if n.startswith(f"layers.{i}.")),
            "anomalies": [a.site for a in found if a.layer == i],
        }
        for i in range(trace.n_layers)
    ]
    data = {
        "paths": {"A": path.describe()},
        "stat": statistic,  # the table's statistic: config.stat restates it
        "trace": _trace_data(trace, names),
        "anomalies": [_anomaly_json(a) for a in found],
        # What every baseline read, and each judged site's baseline: tools/check_integrity.py
        # derives the anomalies and the verdict from them again (contracts.trace_anomaly).
        "site_stats": stats,
        "baselines": [_anomaly_json(a) for a in judged_sites(trace, names)],
        # Each block site that was not compared, and why (contracts.trace_anomaly.not_judged).
        "not_judged": not_judged(stats, names),
        "empty": empty,
        "nonfinite": {"producers": bad.producers, "carriers": bad.carriers},
    }
    csv = report.csv_rows(trace, names, None, None)
    return Result("single", verdict, verdict != "clean", lines, data, csv, per_layer, first)


def _bisection_result(
    mode: str,
    header: list[str],
    a: Trace,
    b: Trace,
    result: Bisection,
    shadow: Bisection | None,
    names: list[str],
    stop_on_nonfinite: bool,
) -> Result:
    lines = [*header]
    if stop_on_nonfinite:
        for label, trace in (("A", a), ("B", b)):
            bad = nonfinite(trace)
            if bad.first is not None:
                lines += report.nonfinite_lines(bad, trace, f"path {label}")
                data = {"nonfinite": {"path": label, "producers": bad.producers, "carriers": bad.carriers}}
                return Result(mode, "nonfinite", True, lines, data, [], [], bad.first)
    lines += report.bisection(result, shadow)
    first = result.first
    local = shadow.layer_verdicts() if shadow is not None else {}
    by_name = {c.name: c for c in result.comparisons}
    per_layer = []
    for layer, verdict in result.layer_verdicts().items():
        out = by_name.get(f"layers.{layer}.output")
        row: dict[str, Any] = {
            "layer": layer,
            "first_diverging_site": verdict.name if verdict else None,
            "output_max_abs_error": out.abs_error.max if out else None,
            "output_cosine": out.cosine if out else None,
        }
        if shadow is not None:
            row["local_error_site"] = local[layer].name if local.get(layer) else None
        per_layer.append(row)
    data: dict[str, Any] = {
        "traces": {"A": _trace_data(a, names), "B": _trace_data(b, names)},
        "comparisons": [report.comparison_json(c) for c in result.comparisons],
    }
    if shadow is not None:
        data["shadow"] = [report.comparison_json(c) for c in shadow.comparisons]
    csv = report.csv_rows(a, names, b, result)
    verdict_name = "divergence" if first else "agree"
    return Result(
        mode, verdict_name, first is not None, lines, data, csv, per_layer, first.name if first else None
    )


def _header(a: str, b: str, tokens: int, n_layers: int, names: list[str]) -> list[str]:
    return [
        f"stack trace: bisection on {tokens} tokens, {n_layers} layers, {len(names)} sites, "
        f"trace schema {TRACE_SCHEMA_VERSION}",
        f"  A: {a}",
        f"  B: {b}",
        "  an element fails only when |a-b| > atol and |a-b|/|a| > rtol; by default atol is m × the",
        "  larger of the two paths' reference errors from fp64 at that site (m in GATE-TRACE-003)",
        "",
    ]


def two_paths(
    a: TracePath,
    b: TracePath,
    idx: torch.Tensor,
    names: list[str],
    rules: list[ToleranceRule],
    shadow: bool,
    stop_on_nonfinite: bool,
) -> Result:
    """Bisect two in-process paths; with shadow, also feed B's blocks A's inputs."""
    trace_a, trace_b = run(a, idx), run(b, idx)
    check_dtypes({"A": (a, trace_a), "B": (b, trace_b)})  # GATE-TRACE-002, check dtype
    check_comparable(trace_a, trace_b)  # before calibrating: the tolerances are per site of both
    errors: dict[tuple[int, str, bool], dict[str, float]] = {}

    def calibrated(local: bool) -> TolerancePolicy:
        # A's then B's, each once: the same weights in the same dtype need calibrating once.
        keys = list(dict.fromkeys((id(p.weights), p.dtype, local) for p in (a, b)))
        for path in (a, b):
            key = (id(path.weights), path.dtype, local)
            if key not in errors:
                errors[key] = reference_error(path, idx, shadow=local)
        return TolerancePolicy(combined(*(errors[k] for k in keys)), rules)

    result = bisect(trace_a, trace_b, calibrated(False), names)
    shadowed = None
    if shadow:
        shadowed = bisect(trace_a, run(b, idx, feed=trace_a.values), calibrated(True), names)
    header = _header(a.describe(), b.describe(), idx.shape[1], trace_a.n_layers, names)
    return _bisection_result("bisect", header, trace_a, trace_b, result, shadowed, names, stop_on_nonfinite)


def dumps(
    a: Dump,
    b: Dump,
    names: list[str],
    rules: list[ToleranceRule],
    stop_on_nonfinite: bool,
    labels: tuple[str, str],
) -> Result:
    """Bisect two dumps; both must trace the same tokens and sample alike."""
    if a.tokens != b.tokens:
        raise BadInput("the dumps traced different tokens; dump both with the same --prompt and tokenizer")
    if a.sample_limit != b.sample_limit:
        raise BadInput("the dumps sample sites differently; dump both with the same gatestack version")
    policy = TolerancePolicy(combined(a.reference_error, b.reference_error), rules)
    result = bisect(a.trace, b.trace, policy, names)

    def describe(label: str, path: dict[str, str]) -> str:
        return f"{label}: {path['label']} ({path['backend']}, {path['dtype']}, {path['device']})"

    described = (describe(labels[0], a.path), describe(labels[1], b.path))
    header = _header(*described, len(a.tokens), a.trace.n_layers, names)
    return _bisection_result("compare", header, a.trace, b.trace, result, None, names, stop_on_nonfinite)


def ablation(
    path: TracePath,
    idx: torch.Tensor,
    sites: tuple[str, ...],
    names: list[str],
    sample: int,
    decode: Callable[[list[int]], str],
) -> Result:
    """Trace with and without `sites` zeroed; optionally continue the prompt both ways."""
    model = path.model()
    intact, _ = trace_forward(model, idx, keep=True)
    check_dtypes({"A": (path, intact)})  # GATE-TRACE-002, check dtype
    ablated, _ = trace_forward(model, idx, keep=True, ablate=sites)
    effect = ablation_effect(intact, ablated, sites)
    lines = [
        f"stack trace: {path.describe()} on {idx.shape[1]} tokens, trace schema {TRACE_SCHEMA_VERSION}",
        *report.ablation_lines(effect),
    ]
    samples = {}
    if sample:
        ids = {"intact": greedy_sample(model, idx, sample)}
        ids["ablated"] = greedy_sample(model, idx, sample, sites)
        check_samples(ids, sample)
        samples = {k: decode(v) for k, v in ids.items()}
        lines += [f"  greedy continuation, {sample} tokens:"]
        lines += [f"    {k:<8} {v!r}" for k, v in samples.items()]
    per_layer = [{"layer": i, "output_change": v} for i, v in effect.output_change.items()]
    data = {
        "paths": {"A": path.describe()},
        "ablated": list(sites),
        "zeroed": list(ablated.zeroed),
        "logits": report.comparison_json(effect.logits),
        "argmax_changed": effect.argmax_changed,
        "positions": effect.positions,
        "mean_kl": effect.mean_kl,
        "samples": samples,
        "traces": {"intact": _trace_data(intact, names), "ablated": _trace_data(ablated, names)},
    }
    csv = report.csv_rows(intact, names, ablated, None)
    return Result("ablation", "ablation", False, lines, data, csv, per_layer)
