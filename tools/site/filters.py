"""The drop report of a `prepare` record: per source, documents in and out, dropped %, why, the
scripts the script filter kept, and the canaries that prove each filter ran.

Read from the record's `metrics.filters` alone (what `stack prepare --evidence-dir` filed), so
the page shows what the run measured; GATE-DATA-014's judge checks the same numbers add up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.evidence import EvidenceRecord
from tools.site.formatting import code, number, table, text


def _reasons(dropped: Mapping[str, Any]) -> str:
    return ", ".join(f"{code(reason)} {number(n)}" for reason, n in sorted(dropped.items())) or "—"


def _canaries(tallies: Any) -> str:
    """Per filter, its canaries dropped of planted (GATE-DATA-013): `leak 3/3`."""
    if not isinstance(tallies, Mapping):
        return "—"
    cells = [
        f"{code(name)} {tally.get('dropped')}/{tally.get('planted')}"
        for name, tally in sorted(tallies.items())
        if isinstance(tally, Mapping)
    ]
    return ", ".join(cells) or "—"


def drops_section(record: EvidenceRecord) -> list[str]:
    """The "Filters" section of a run page: a table of sources, or nothing for a record without filters."""
    reports = record.metrics.get("filters")
    if not isinstance(reports, Mapping) or not reports:
        return []
    rows = []
    for name, report in sorted(reports.items()):
        if not isinstance(report, Mapping):
            continue
        documents_in, dropped = report.get("documents_in", 0), report.get("dropped", {})
        dropped = dropped if isinstance(dropped, Mapping) else {}
        total = sum(n for n in dropped.values() if isinstance(n, int))
        share = (
            f"{100 * total / documents_in:.2f} %" if isinstance(documents_in, int) and documents_in else "—"
        )
        waiver = report.get("waiver")
        filters = (
            f"waived: {text(waiver)}"
            if waiver is not None
            else ", ".join(code(f) for f in report.get("filters", []))
        )
        if report.get("pre_clean"):
            filters += " (marked pre-clean)"
        rows.append(
            [
                code(name),
                filters,
                number(documents_in),
                number(report.get("documents_out", 0)),
                share,
                _reasons(dropped),
                ("multilingual: " if report.get("multilingual") else "") + ", ".join(code(s) for s in scripts)
                if isinstance(scripts := report.get("scripts"), list)
                else "—",
                _canaries(report.get("canaries")),
            ]
        )
    out = ["\n## Filters\n", "Documents per source before and after the filters of `stack prepare`:\n"]
    header = ["source", "filters", "in", "out", "dropped", "by reason", "scripts kept", "canaries dropped"]
    return out + table(header, rows)
