"""Activation patching as a report: the terminal lines, and the data for --json, --csv and evidence.

A sweep is a grid of recovered fractions, a row per layer and a column per position; the
evidence record's `per_layer` holds one row of it per layer, which the site draws as the
layer × position heat map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stack.trace.modes import Result
from stack.trace.patch import Metric, PatchRun
from stack.trace.report import num
from stack.trace.sites import TRACE_SCHEMA_VERSION, split

Decode = Callable[[list[int]], str]
CELL = 7  # characters per position column of the sweep grid


def _metric_text(metric: Metric, decode: Decode) -> str:
    target = repr(decode([metric.target]))
    if metric.foil is None:
        return f"log p({target}) at the last position"
    return f"logit({target}) - logit({decode([metric.foil])!r}) at the last position"


def patch_result(run: PatchRun, metric: Metric, clean: list[int], decode: Decode) -> Result:
    """The Result of one patch (a site, a position) or a sweep (a site kind, every layer × position)."""
    lines = [
        f"stack trace: activation patching on {len(clean)} tokens, trace schema {TRACE_SCHEMA_VERSION}",
        f"  metric {_metric_text(metric, decode)}: clean {num(run.clean)}, corrupted {num(run.corrupted)}",
        "  recovered = (patched - corrupted) / (clean - corrupted): 0 the corrupted run, 1 the clean one",
        "  controls: the clean run patched with itself is unchanged bit for bit (GATE-PATCH-001); the",
        f"  embedding patched at every position recovers {num(run.full_recovered)}, "
        "the clean logits bit for bit (GATE-PATCH-002)",
        "",
    ]
    tokens = [decode([t]) for t in clean]
    if run.sweep:
        lines.append("recovered fraction per layer × position (columns: the clean prompt's tokens)")
        lines.append(f"{'layer':>5}  " + "".join(f"{repr(t)[: CELL - 1]:>{CELL}}" for t in tokens))
        for site, row in run.recovered.items():
            lines.append(f"{split(site)[0]:>5}  " + "".join(f"{v:>{CELL}.2f}" for v in row))
    else:
        (site, row), position = next(iter(run.recovered.items())), run.positions[0]
        lines.append(
            f"PATCH {site} at position {position} ({tokens[position]!r}): "
            f"recovered {num(row[0])} of the difference"
        )
    per_layer = [
        {
            "layer": split(site)[0],
            "site": site,
            "positions": list(run.positions),
            "recovered": row,
            "patched": run.patched[site],
        }
        for site, row in run.recovered.items()
    ]
    data: dict[str, Any] = {
        "metric": {
            "target": metric.target,
            "foil": metric.foil,
            "clean": run.clean,
            "corrupted": run.corrupted,
        },
        "tokens": tokens,
        "full_recovered": run.full_recovered,
        "full_patched": run.full_patched,
    }
    csv = [
        {
            "trace_schema_version": TRACE_SCHEMA_VERSION,
            "name": site,
            "layer": split(site)[0],
            "position": p,
            "token": tokens[p],
            "recovered": value,
        }
        for site, row in run.recovered.items()
        for p, value in zip(run.positions, row, strict=True)
    ]
    return Result("patch-sweep" if run.sweep else "patch", "patched", False, lines, data, csv, per_layer)
