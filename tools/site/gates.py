"""The gate pages and the traceability matrix: each gate's rule, the code that enforces it, the
tests that prove it can turn red, and what every run said of it.

Bindings, falsifiers and the YAML that defines a gate are links to the line (`site_source`), and
a gate page lists its whole verdict history, not only the latest, so a reader sees when a gate
started to warn and under which revision each verdict was judged.
"""

from __future__ import annotations

import re

from contracts.proof_lock import LOCK_FILE
from tools.integrity.audit import CoverageRow, GateVerdict
from tools.site.formatting import (
    BANNER,
    badge,
    code,
    gate_path,
    link,
    record_json_path,
    scalar,
    table,
    text,
    unit_of,
    values_cell,
    verdict_badge,
)
from tools.site.ledger import Ledger, MutationProof, record_of
from tools.site.runs import run_link
from tools.site.source import SourceLinks, line_of


def gate_status_badge(status: str) -> str:
    """ACTIVE, PROPOSED or DEPRECATED as a badge."""
    return badge(status, f"g-{status.lower()}")


def proof_badge(proof: MutationProof, gate_id: str, short: bool = False) -> str:
    """Whether the latest proof by mutation saw this gate's falsifiers turn red with it off.

    `short` gives ✔ / ✘ / ? for the matrix, where a word would not fit; the title says it all.
    """
    state = proof.of(gate_id)
    if state is None:
        return badge("?" if short else "not in proof", "p-none", "the proof lock has no entry for this gate")
    if not state:
        return badge(
            "✘" if short else "not proven", "p-no", "its falsifiers stayed green with the gate forced off"
        )
    stale = "*" if gate_id in proof.stale else ""
    note = " (its code changed since it was proven)" if stale else ""
    return badge(("✔" if short else "proven") + stale, "p-yes", "red when forced off" + note)


def proof_line(proof: MutationProof, page: str) -> str:
    """One sentence on the proof lock behind the proof badges, and whether it still holds."""
    if not proof.present:
        return f"No proof lock yet: run `make proofs` to write {LOCK_FILE}."
    state = (
        "current"
        if proof.current
        else f"**not current** for {len(proof.stale)} gate(s): run `make proofs` (badges marked *)"
    )
    return f"Proof by mutation from the proof lock, `{LOCK_FILE}` ({state})."


def _history(row: CoverageRow, ledger: Ledger, page: str) -> list[str]:
    """Every run's verdict on the gate, newest first, with the numbers that made it.

    Each verdict's JSON is a link to its record, never inlined: the run's own page inlines it,
    and a page listing a hundred runs' JSON weighed a megabyte and took a fifth of a site build.
    """
    if not row.verdicts:
        return ["No evidence cites this gate yet."]
    rows = []
    for verdict in row.verdicts:
        loaded = ledger.by_id[verdict.run]
        record = record_of(loaded)
        result = next(g for g in record.gates if g.id == row.gate.id)
        whole = link(page, record_json_path(verdict.run))
        rows.append(
            [
                f"{run_link(page, verdict.run)}<br>"
                f"{text(record.run.kind)}, {record.run.started:%Y-%m-%d %H:%M}",
                verdict_badge(verdict.verdict, verdict.stale) + f"<br>rev {verdict.revision}",
                values_cell(result.measured, result.threshold, result.message, whole, inline_chars=0),
            ]
        )
    return table(["run", "verdict", "measured (limit)"], rows)


def gate_page(row: CoverageRow, ledger: Ledger, sources: SourceLinks) -> str:
    """One gate: its rule, why it exists, its thresholds, what enforces and proves it, its history."""
    gate, spec = row.gate, ledger.spec
    page = gate_path(gate.id)
    defined = f"spec/{spec.gate_files[gate.id]}"
    where = sources.link(page, defined, line_of(ledger.root, defined, rf"id:\s*{re.escape(gate.id)}\b"))
    out = [BANNER, f"# {gate.id}: {text(gate.title)}\n"]
    counts = [v.verdict for v in row.verdicts]
    out.append(
        f"{gate_status_badge(gate.status.value)} "
        f"{text(gate.kind.value)} · {text(gate.severity.value)} · revision {gate.revision} · "
        f"defined in {where} · {proof_badge(ledger.proof, gate.id)} · judged in {len(counts)} run(s)\n"
    )
    out.append(f"## Statement\n\n{text(gate.statement)}\n")
    out.append(f"## Origin: the failure it prevents\n\n{text(gate.origin)}\n")
    if gate.thresholds:
        out.append("## Thresholds\n")
        out += table(
            ["name", "value", "meaning"],
            [[code(k), scalar(t.value, unit_of(k)), text(t.description)] for k, t in gate.thresholds.items()],
        )
        out.append("")
    history = spec.revisions.get(gate.id, [])
    if history:
        out.append("## Revisions\n")
        out += table(
            ["revision", "since spec", "thresholds sha256"],
            [[str(r.revision), text(r.spec_version), code(r.thresholds_sha256[:12])] for r in history],
        )
        out.append("")
    out.append("## Contract bindings\n")
    out += [f"- {sources.link(page, b.file, b.line)}" for b in row.bindings] or ["None."]
    out.append("\n## Falsifier tests\n")
    out += [f"- {code(f.name)} in {sources.link(page, f.file, f.line)}" for f in row.falsifiers] or [
        "None yet."
    ]
    out.append(f"\n{proof_line(ledger.proof, page)}\n")
    out.append("## Verdict history\n")
    out += _history(row, ledger, page)
    return "\n".join(out) + "\n"


def _mark(items: list[object], label: str) -> str:
    return f"✔ {len(items)} {label}" if items else f"✘ no {label}"


def _latest(verdicts: list[GateVerdict], page: str) -> str:
    if not verdicts:
        return "—"
    newest = verdicts[0]
    return f"{verdict_badge(newest.verdict, newest.stale)}<br>{run_link(page, newest.run)}"


def gates_index(ledger: Ledger) -> str:
    """The catalogue with the traceability matrix: gate × bindings / falsifiers / proof / evidence."""
    page = "gates/index.md"
    rows = ledger.rows
    active = [r for r in rows if r.gate.status.value == "ACTIVE"]
    covered = sum(r.covered for r in active)
    proven = sum(bool(ledger.proof.of(r.gate.id)) for r in active)
    out = [BANNER, f"# Gates and traceability (spec {text(ledger.spec.version)})\n"]
    out.append(
        f"{len(rows)} gates, {len(active)} ACTIVE, {covered} of them covered, {proven} proven by mutation. "
        "A runtime gate is covered when it has a contract binding and a falsifier test; any other "
        "gate when it has a falsifier. Counts are computed from the source on every build.\n"
    )
    out.append(
        "*Has a falsifier* means a test plants the gate's bug; *proven* means that test fails when the "
        f"gate is forced off (`make proofs`). {proof_line(ledger.proof, page)}\n"
    )
    table_rows = []
    for row in rows:
        gate = row.gate
        bindings = _mark(row.bindings, "binding(s)") if gate.kind.value == "runtime" else "no binding needed"
        table_rows.append(
            [
                f"[{gate.id}]({gate.id}.md)<br>{text(gate.title)}",
                f"{gate_status_badge(gate.status.value)}<br>{text(gate.kind.value)}",
                "<br>".join(
                    (bindings, _mark(row.falsifiers, "falsifier(s)"), proof_badge(ledger.proof, gate.id))
                ),
                _latest(row.verdicts, page),
            ]
        )
    out += table(["gate", "status", "coverage", "latest verdict"], table_rows)
    return "\n".join(out) + "\n"
