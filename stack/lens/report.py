"""The lens as a table for the terminal, and as plain data for --json, --csv and the evidence record.

The terminal shows one position (the last by default): per layer the KL to the final
distribution, the entropy and the top-k tokens. The data holds every position, so the site can
draw the layer × position heat map of KL (and the top-1 token in each cell) from `per_layer`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.lens_table import table_cells, table_rows
from stack.lens.readout import LayerReading, check_kl
from stack.trace.modes import Result
from stack.trace.report import num
from stack.trace.sites import TRACE_SCHEMA_VERSION

Decode = Callable[[list[int]], str]


def _token(decode: Decode, token: int) -> str:
    return repr(decode([token]))


def _top_text(top: list[tuple[int, float]], decode: Decode) -> str:
    return "  ".join(f"{_token(decode, t)} {p:.2f}" for t, p in top)


def lens_result(
    readings: list[LayerReading], tokens: list[int], decode: Decode, position: int, header: str, mode: str
) -> Result:
    """The Result of one lens reading (mode logit-lens or tuned-lens) shown at `position`."""
    *layers, final = readings
    shown = tokens[position]
    lines = [
        header,
        f"position {position} of {len(tokens)} (after {_token(decode, shown)}): "
        "KL(final ‖ layer) and entropy in nats",
        f"{'layer':>5}  {'reads':<16} {'KL to final':>11} {'entropy':>8}   top tokens",
    ]
    for r in readings:
        label = "final" if r is final else str(r.layer)
        lines.append(
            f"{label:>5}  {r.site:<16} {num(r.kl[position]):>11} {num(r.entropy[position]):>8}   "
            f"{_top_text(r.top[position], decode)}"
        )
    means = "  ".join(f"{r.layer}: {num(sum(r.kl) / len(r.kl))}" for r in layers)
    lines += ["", f"mean KL to final over all {len(tokens)} positions, per layer: {means}"]
    per_layer = [
        {
            "layer": r.layer,
            "site": r.site,
            "kl": r.kl,
            "entropy": r.entropy,
            "top1": [decode([top[0][0]]) for top in r.top],
            "top1_prob": [top[0][1] for top in r.top],
        }
        for r in layers
    ]
    data: dict[str, Any] = {
        "tokens": [decode([t]) for t in tokens],
        "position": position,
        "readings": [
            {"layer": r.layer, "site": r.site, "kl": r.kl, "entropy": r.entropy, "top": r.top}
            for r in readings
        ],
    }
    csv = [
        {
            "trace_schema_version": TRACE_SCHEMA_VERSION,
            "name": r.site,
            "layer": r.layer,
            "position": p,
            "token": decode([tokens[p]]),
            "kl_to_final": r.kl[p],
            "entropy": r.entropy[p],
            "top1": decode([r.top[p][0][0]]),
            "top1_prob": r.top[p][0][1],
        }
        for r in readings
        for p in range(len(tokens))
    ]
    return Result(mode, "read", False, lines, data, csv, per_layer)


def training_result(
    per_layer: list[dict[str, float]], losses: tuple[float, float], header: str, warning: str | None
) -> Result:
    """The Result of `stack lens --train`: the held-out comparison per layer and GATE-LENS-003's warning."""
    lines = [
        header,
        f"loss (sum over layers of KL to final): first step {num(losses[0])}, last step {num(losses[1])}",
        "held-out KL to final per layer, nats per position:",
        f"{'layer':>5}  {'logit lens':>10}  {'tuned lens':>10}",
        *(f"{int(r['layer']):>5}  {num(r['kl_logit']):>10}  {num(r['kl_tuned']):>10}" for r in per_layer),
    ]
    if warning:
        lines.append(f"WARN GATE-LENS-003: {warning}")
    csv = [{"trace_schema_version": TRACE_SCHEMA_VERSION, "name": "lens", **row} for row in per_layer]
    data = {"losses": {"first": losses[0], "last": losses[1]}, "warning": warning}
    verdict = "trained, worse than the logit lens at some layer" if warning else "trained"
    return Result("lens-train", verdict, False, lines, data, csv, per_layer)


def table_measured(written: Path, reading: dict[str, Any], decode: Decode) -> dict[str, Any]:
    """The --csv file as written, parsed back, beside the table contracts.lens_table derives from the
    reading --json holds (GATE-LENS-006, check table): rows of each, and the rows that differ."""
    with Path(written).open(newline="", encoding="utf-8") as table:
        cells = list(csv.reader(table))
    derived = table_cells(table_rows(reading, decode, TRACE_SCHEMA_VERSION))
    differing = [i for i, (a, b) in enumerate(zip(cells, derived, strict=False)) if a != b]
    return {
        "table_rows_written": len(cells) - 1,
        "table_rows_derived": len(derived) - 1,
        "table_rows_differing": len(differing),
        "table_first_differing": differing[0] if differing else None,  # 0 is the header
    }


def check_table(written: Path, reading: dict[str, Any], decode: Decode) -> None:
    """GATE-LENS-006's check table: the --csv a reading wrote holds, cell for cell, the rows its
    reading gives; the CSV is written from the same readings by other code, and nothing else reads it."""
    check_kl(table_measured(written, reading, decode))
