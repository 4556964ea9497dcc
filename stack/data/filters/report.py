"""Drop reports as people read them: one line per source, and the reasons behind each drop.

The same rows go to `stack prepare`'s output and to the site's prepare-record page
(tools/site_runs.py), so what a user saw at the terminal is what the site shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def drop_rows(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per source: in, out, dropped % and the drops by reason, or the waiver in place of filters."""
    rows = []
    for name, report in sorted(reports.items()):
        documents_in, dropped = int(report["documents_in"]), dict(report["dropped"])
        share = 100.0 * sum(dropped.values()) / documents_in if documents_in else 0.0
        rows.append(
            {
                "source": name,
                "in": documents_in,
                "out": int(report["documents_out"]),
                "dropped_percent": share,
                "reasons": dropped,
                "filters": list(report["filters"]),
                "waiver": report["waiver"],
                "pre_clean": bool(report["pre_clean"]),
            }
        )
    return rows


def drop_lines(reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The report as indented text lines, one per source."""
    lines = []
    for row in drop_rows(reports):
        if row["waiver"] is not None:
            lines.append(
                f"  {row['source']}: not filtered, waived: {row['waiver']} ({row['in']:,} document(s))"
            )
            continue
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in row["reasons"].items()) or "none"
        marked = " (marked pre-clean, filtered all the same)" if row["pre_clean"] else ""
        lines.append(
            f"  {row['source']}: {row['in']:,} in, {row['out']:,} out, {row['dropped_percent']:.2f}% "
            f"dropped ({reasons}){marked}"
        )
    return lines
