"""The ledger dashboard: the state of things on one page, the landing page of the reference.

Which gates fired in which runs (a runs × gates matrix coloured by verdict, with stale verdicts
and the proof by mutation marked), what needs attention now, and what the latest release rests
on. Every count is computed from the evidence on each build; none is typed. Filtering by run
kind and status is a set of pre-rendered pages linked from chips, not a script, so it works in
any browser and any site generator, and every filter link is checked by the strict build.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from tools.integrity.audit import LoadedEvidence
from tools.site.formatting import (
    BANNER,
    SHORT,
    badge,
    code,
    gate_path,
    link,
    run_path,
    short_sha,
    status_badge,
    table,
    tally,
    text,
    verdict_badge,
)
from tools.site.gates import proof_badge, proof_line
from tools.site.ledger import Ledger, record_of
from tools.site.runs import run_link, run_tally

LEDGER_DIR = "ledger"
# Newest runs shown as matrix columns: enough to see a trend, few enough to fit a phone's width.
MATRIX_RUNS = 10
ALL = "all"


@dataclass(frozen=True)
class View:
    """One filter of the dashboard: a run kind and a status, either of them `all`."""

    kind: str = ALL
    status: str = ALL

    @property
    def path(self) -> str:
        """Its page, relative to docs/reference/: the unfiltered view is the landing page."""
        if self.kind == ALL and self.status == ALL:
            return "index.md"
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self.kind}--{self.status}")
        return f"{LEDGER_DIR}/{slug}.md"

    def runs(self, ledger: Ledger) -> list[LoadedEvidence]:
        """The runs this view shows, newest first."""
        return [
            e
            for e in ledger.runs
            if self.kind in (ALL, record_of(e).run.kind)
            and self.status in (ALL, record_of(e).run.status.value)
        ]


def views(ledger: Ledger) -> list[View]:
    """Every view with at least one run (and the unfiltered one, even for an empty ledger)."""
    pairs = {(record_of(e).run.kind, record_of(e).run.status.value) for e in ledger.runs}
    kinds = sorted({k for k, _ in pairs})
    statuses = sorted({s for _, s in pairs})
    found = [View()] + [View(k) for k in kinds] + [View(status=s) for s in statuses]
    return found + [View(k, s) for k, s in sorted(pairs)]


def _chips(view: View, ledger: Ledger, available: set[View]) -> list[str]:
    """Filter links: each kind keeps the status chosen, each status the kind chosen."""
    kinds = [ALL, *sorted({record_of(e).run.kind for e in ledger.runs})]
    statuses = [ALL, *sorted({record_of(e).run.status.value for e in ledger.runs})]

    def chip(target: View, label: str, chosen: bool) -> str:
        if chosen:
            return f'<span class="gs-chip gs-chip-on">{text(label)}</span>'
        if target not in available:
            return ""
        return f"[{text(label)}]({link(view.path, target.path)})"

    kind_chips = [chip(View(k, view.status), k, k == view.kind) for k in kinds]
    status_chips = [chip(View(view.kind, s), s, s == view.status) for s in statuses]
    return [
        "**Run kind:** " + " · ".join(c for c in kind_chips if c) + "  ",
        "**Status:** " + " · ".join(c for c in status_chips if c) + "\n",
    ]


def _legend() -> str:
    shown = [verdict_badge(v, short=True) + f" {v}" for v in SHORT]
    shown.append(
        verdict_badge("PASS", stale=True, short=True) + " stale (outlined: judged under an older rule)"
    )
    shown.append('<span class="gs-none">·</span> not judged by the run')
    return (
        "Cells: " + " · ".join(shown) + ". Proof: ✔ red when forced off (* the proof is not current), "
        "✘ not proven, ? not in the proof. Click a cell for its run."
    )


def _matrix(view: View, ledger: Ledger) -> list[str]:
    """Gates as rows, the view's newest runs as columns, each cell the run's verdict on the gate."""
    page = view.path
    judging = [e for e in view.runs(ledger) if record_of(e).gates]
    columns = judging[:MATRIX_RUNS]
    if not columns:
        return ["The runs of this view judge no gate."]
    ids = [record_of(e).run.id for e in columns]
    wanted = set(ids)
    judged = {gate for (run, gate) in ledger.verdicts if run in wanted}
    rows = [r for r in ledger.rows if view == View() or r.gate.id in judged]
    header = ['<span class="gs-matrix">gate</span>', "proof"] + [
        f"[{n}]({link(page, run_path(run))})" for n, run in enumerate(ids, 1)
    ]
    body = []
    for row in rows:
        gate = row.gate
        cells = [
            f"[{gate.id.removeprefix('GATE-')}]({link(page, gate_path(gate.id))})",
            proof_badge(ledger.proof, gate.id, short=True),
        ]
        for run in ids:
            verdict = ledger.verdicts.get((run, gate.id))
            if verdict is None:
                cells.append('<span class="gs-none" title="not judged">·</span>')
                continue
            tip = f"{gate.id} in {run}: {verdict.label}"
            cells.append(
                f"[{verdict_badge(verdict.verdict, verdict.stale, short=True, title=tip)}]"
                f"({link(page, run_path(run))})"
            )
        body.append(cells)
    out = table(header, body)
    if len(judging) > len(columns):
        older = len(judging) - len(columns)
        out.append(
            f"\n{older} older run(s) of this view judged gates too: see the "
            f"[evidence index]({link(page, 'evidence/index.md')})."
        )
    out.append("\n" + _legend() + "\n")
    return out


def _key(view: View, ledger: Ledger) -> list[str]:
    """The runs of the view: number (the matrix column), id, kind, start, status and verdicts."""
    page = view.path
    runs = view.runs(ledger)
    judging = [record_of(e).run.id for e in runs if record_of(e).gates][:MATRIX_RUNS]
    rows = []
    for loaded in runs:
        r = record_of(loaded)
        column = str(judging.index(r.run.id) + 1) if r.run.id in judging else ""
        rows.append(
            [
                column,
                f"{run_link(page, r.run.id)}<br>{text(r.run.kind)}, {r.run.started:%Y-%m-%d %H:%M}",
                status_badge(r.run.status.value),
                run_tally(ledger, r.run.id),
            ]
        )
    return table(["#", "run", "status", "verdicts"], rows)


def _counts(view: View, ledger: Ledger) -> str:
    """The view's totals, counted from the records."""
    runs = view.runs(ledger)
    verdicts = [v for e in runs for v in ledger.run_verdicts(record_of(e).run.id)]
    statuses = Counter(record_of(e).run.status.value for e in runs)
    judging = sum(bool(record_of(e).gates) for e in runs)
    shown = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    return (
        f"**{len(runs)} run(s)** ({shown or 'none'}), {judging} of them judged gates · "
        f"**{len(verdicts)} verdicts**: "
        + tally([v.verdict for v in verdicts], sum(v.stale for v in verdicts))
    )


def _attention(ledger: Ledger) -> list[str]:
    """What a person should look at now, one line per gate: its latest verdict when that is not
    a current PASS, an ACTIVE gate never judged, not covered or not proven; then the proof by
    mutation when it is not current, and records that do not validate."""
    page = "index.md"
    items = []
    for row in ledger.rows:
        problems = []
        active = row.gate.status.value == "ACTIVE"
        if row.verdicts:
            latest = row.verdicts[0]
            if latest.verdict != "PASS" or latest.stale:
                where = f"{run_link(page, latest.run)}"
                problems.append(f"latest verdict {verdict_badge(latest.verdict, latest.stale)} in {where}")
        elif active:
            kinds = [k for k, kind in ledger.spec.run_kinds.items() if row.gate.id in kind.gates]
            # A gate no run kind judges (the integrity check's own) has no verdict to miss.
            if kinds:
                problems.append(f"never judged: no record of kind {', '.join(map(code, kinds))} judged it")
        if active and not row.covered:
            problems.append("not covered (a binding or a falsifier is missing)")
        if active and ledger.proof.of(row.gate.id) is not True:
            problems.append(proof_badge(ledger.proof, row.gate.id))
        if problems:
            status = "" if active else f" ({text(row.gate.status.value)})"
            gate = f"[{row.gate.id}]({link(page, gate_path(row.gate.id))}){status}"
            items.append(f"{gate}: " + " · ".join(problems))
    if ledger.proof.present and not ledger.proof.current:
        items.append(proof_line(ledger.proof, page))
    broken = [e for e in ledger.records if e.record is None]
    items += [f"{code(e.path.parent.name)} does not validate: {text(e.error)}" for e in broken]
    if not items:
        return [
            "Nothing: every gate's latest verdict is a current PASS, "
            "and every ACTIVE gate is covered and proven."
        ]
    return [f"- {item}" for item in items]


def _release(ledger: Ledger) -> list[str]:
    """The latest standing release and the records it rests on, checked by content here."""
    page = "index.md"
    model = ledger.latest_release
    if model is None:
        return ["No release stands yet."]
    out = [
        f"**{text(model.name)} {text(model.version)}** · spec {text(model.spec_version)} · commit "
        f"{short_sha(model.git_sha)} · {text(model.license)} · [released models]({link(page, 'models.md')})\n"
    ]
    weights = model.artifact("model.safetensors")
    rows = []
    for citation in model.evidence:
        loaded = ledger.by_id.get(citation.run)
        if loaded is None:
            rows.append([code(citation.run), "not in the ledger", "—", "—"])
            continue
        record = record_of(loaded)
        bytes_ok = ledger.cited_bytes_match(citation.run, citation.sha256)
        hashed = record.checkpoint.files.get("model.safetensors") if record.checkpoint else None
        same = weights is not None and hashed is not None and hashed.sha256 == weights.sha256
        rows.append(
            [
                f"{run_link(page, citation.run)}<br>{text(record.run.kind)}, "
                f"{status_badge(record.run.status.value)}",
                run_tally(ledger, citation.run),
                badge("record as cited", "s-ok")
                if bytes_ok
                else badge("record changed since cited", "s-bad"),
                badge("weights = its checkpoint", "s-ok")
                if same
                else badge("weights not its checkpoint", "s-bad"),
            ]
        )
    out += table(["rests on", "verdicts", "record", "weights"], rows)
    waived = [
        (c.run, w)
        for c in model.evidence
        if c.run in ledger.by_id
        for w in record_of(ledger.by_id[c.run]).waivers
    ]
    out.append(
        "\nWaivers it rests on: "
        + ("; ".join(f"{code(w.gate)} in {text(r)}: {text(w.reason)}" for r, w in waived) or "none")
        + "."
    )
    withdrawn = [m for m in ledger.registry.models if m.withdrawn]
    if withdrawn:
        out.append("Withdrawn: " + ", ".join(f"{text(m.name)} {text(m.version)}" for m in withdrawn) + ".")
    return out


def _spec_counts(ledger: Ledger) -> str:
    rows = ledger.rows
    active = [r for r in rows if r.gate.status.value == "ACTIVE"]
    proven = sum(ledger.proof.of(r.gate.id) is True for r in active)
    return (
        f"Spec {text(ledger.spec.version)}: **{len(rows)} gates**, {len(active)} ACTIVE, "
        f"{sum(r.covered for r in active)} covered, {proven} proven by mutation "
        f"([traceability]({link('index.md', 'gates/index.md')}))."
    )


def dashboard_page(view: View, ledger: Ledger, available: set[View]) -> str:
    """One view of the dashboard; the unfiltered one also carries attention and release."""
    landing = view == View()
    title = "Ledger" if landing else f"Ledger: kind {view.kind}, status {view.status}"
    out = ["---\nhide:\n  - toc\n---\n\n", BANNER, f"# {text(title)}\n"]
    if landing:
        out.append(_spec_counts(ledger) + "  ")
    out.append(_counts(view, ledger) + "\n")
    if landing:
        out.append("## Needs attention\n")
        out += _attention(ledger)
        out.append("\n## Latest release\n")
        out += _release(ledger)
    out.append("\n## Runs × gates\n")
    out += _chips(view, ledger, available)
    out += _matrix(view, ledger)
    out.append("\n## Runs\n")
    out += _key(view, ledger)
    return "\n".join(out) + "\n"


def dashboard_pages(ledger: Ledger) -> dict[str, str]:
    """page path → text of the landing dashboard and every filtered view."""
    found = views(ledger)
    available = set(found)
    return {view.path: dashboard_page(view, ledger, available) for view in found}
