"""Write the site's generated pages from the spec and the evidence.

    python tools/render_site.py [--root DIR] [--run RUN_DIR]... [--compare RUN_A RUN_B]...

Everything under docs/reference/ is produced here and replaced on every run; it is ignored by
git and never edited by hand. Hand-written pages link into it. The pages are plain Markdown with
inline HTML, written by plain Python (this file and tools/site_*.py): mkdocs only turns them
into HTML, so the site can change builders without changing what the pages say.

RUN_A and RUN_B of --compare are run ids of the ledger (or of a --run directory) or run
directories; each pair gets a comparison page beside those listed in tools/site_config.toml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, EvidenceRecord, runs_named
from contracts.registry import Registry
from contracts.schemas import json_schemas
from contracts.spec import Spec
from tools.integrity.audit import GENERATED, evidence_paths
from tools.site.accepts import PAGE as ACCEPTS_PAGE
from tools.site.accepts import accepts_page
from tools.site.compare import COMPARE_DIR, compare_index, compare_page, compare_path, compare_plots
from tools.site.config import load_site_config
from tools.site.dashboard import dashboard_pages
from tools.site.formatting import (
    BANNER,
    badge,
    code,
    gate_path,
    number,
    record_json_path,
    run_path,
    scalar,
    table,
    text,
    unit_of,
    verdict_badge,
)
from tools.site.gates import gate_page, gates_index
from tools.site.ledger import Ledger, load_ledger, record_of
from tools.site.lineage import lineage_pages
from tools.site.matrix import PAGE as MATRIX_PAGE
from tools.site.matrix import options_matrix_snippet
from tools.site.runs import checkpoint_manifest, evidence_index, run_link, run_page, run_plots
from tools.site.source import SourceLinks


def _benchmarks_of(metrics: dict[str, object]) -> list[str]:
    """The benchmark goals a record measured: its `benchmark`, plus any it lists under `also`."""
    also = metrics.get("also")
    return [str(metrics.get("benchmark")), *(also if isinstance(also, list) else [])]


# Where a benchmark record measured (`measured_where`): device, preset, precision, prompt.
Place = tuple[str, str, str, str]


def _prompt(metrics: dict[str, object]) -> str:
    """A prompt shorter than its model's context, as `<tokens>-token prompt`: a trace of a dozen
    tokens weighs tracing's cost per site against a forward a fraction of a full-context one's,
    another series than the goal's full-context prompt. Blank for a full-context prompt, and for a
    record that does not state its tokens and its model's context."""
    model = metrics.get("model")
    tokens, context = metrics.get("tokens"), model.get("ctx") if isinstance(model, dict) else None
    if isinstance(tokens, int) and isinstance(context, int) and tokens < context:
        return f"{tokens}-token prompt"
    return ""


def measured_where(record: EvidenceRecord) -> Place:
    """Where a benchmark record measured: its device, and the preset, precision and prompt it names
    (blank where it names none). Records of one goal made in different places are different series:
    a CPU's number does not stand for a GPU's, nor `small`'s for `gpt2`'s, nor fp32's for bf16's,
    nor a short prompt's for a full context's."""
    metrics = record.metrics
    named = str(metrics.get("preset") or ""), str(metrics.get("precision") or "")
    return record.env.device, *named, _prompt(metrics)


def _names_more(newer: Place, older: Place) -> bool:
    """Whether `newer` is `older` with a part `older` left blank named: a record made before its
    benchmark stated that part (the precision, say) is the same series as the newer ones that do.
    The prompt is no such part: blank is a full-context prompt, a series of its own."""
    return (
        newer != older
        and newer[-1] == older[-1]
        and all(not part or part == named for part, named in zip(older, newer, strict=True))
    )


def newest_by_place(goal: str, ledger: Ledger) -> dict[Place, EvidenceRecord]:
    """The newest record of each place (`measured_where`) that measured `goal`, newest first; a
    place whose newest record is older than one that names more of the same place is left out."""
    newest: dict[Place, EvidenceRecord] = {}
    for loaded in ledger.runs:  # newest first
        record = record_of(loaded)
        where = measured_where(record)
        if goal in _benchmarks_of(record.metrics) and not any(_names_more(seen, where) for seen in newest):
            newest.setdefault(where, record)
    return newest


def benchmarks_page(ledger: Ledger) -> str:
    """Each benchmark goal of the spec with the newest measurement of each place it was measured."""
    page = "benchmarks.md"
    out = [BANNER, "# Benchmarks\n"]
    out.append(
        "Goals come from `spec/benchmarks.yaml`; measurements from the benchmark evidence records, the "
        "newest of each place a goal was measured: its device, preset, precision and, where it was "
        "shorter than the model's context, its prompt. A goal met on a "
        "CPU and missed on a GPU shows both rows. A benchmark measures and records; it never fails a "
        "build.\n"
    )
    rows = []
    for goal in ledger.spec.benchmarks.values():
        op = "≤" if goal.direction == "at_most" else "≥"
        unit = unit_of(goal.metric)
        target = f"{code(goal.metric)} {op} {number(goal.goal, unit)}"
        newest = newest_by_place(goal.name, ledger)
        if not newest:
            rows.append(
                [text(goal.title), target, "—", "not measured yet", badge("no measurement", "s-other"), "—"]
            )
            continue
        for index, (where, record) in enumerate(newest.items()):
            measured = record.metrics.get(goal.metric)
            note = record.metrics.get("note")
            # The spec's goal judges the number; a record's own opinion is not consulted.
            if isinstance(measured, int | float) and not isinstance(measured, bool):
                met = badge("met", "s-ok") if goal.met(measured) else badge("not met", "s-bad")
            else:
                met = badge("n/a", "s-other")
            if note:
                met += f"<br>{text(note)}"
            place = " · ".join(text(part) for part in where if part)
            run = f"{run_link(page, record.run.id)}<br>{record.run.started:%Y-%m-%d}"
            title, goal_cell = (text(goal.title), target) if index == 0 else ("", "")
            rows.append([title, goal_cell, place, scalar(measured, unit), met, run])
    out += table(["benchmark", "goal", "measured on", "measured", "met", "run"], rows)
    return "\n".join(out) + "\n"


def registry_page(registry: Registry, ledger: Ledger) -> str:
    """The released models of evidence/registry.yaml, each linked to the evidence behind it.

    A waived verdict in the evidence is shown with its reason: a release may rest on a waiver,
    never silently.
    """
    page = "models.md"
    out = [BANNER, "# Released models\n"]
    if not registry.models:
        out.append("No model has been released yet.")
        return "\n".join(out) + "\n"
    for model in registry.models:
        out.append(f"## {text(model.name)} {text(model.version)}\n")
        if model.withdrawn:
            out.append(f"{badge('withdrawn', 's-bad')} {text(model.withdrawn)}\n")
        runs = ", ".join(
            f"{run_link(page, c.run)} ({code(c.sha256[:12])})"
            if c.run in ledger.by_id
            else f"{code(c.run)} (not in the ledger)"
            for c in model.evidence
        )
        out += table(
            ["field", "value"],
            [
                ("spec", text(model.spec_version)),
                ("commit", code(model.git_sha)),
                ("evidence", runs),
                ("license", text(model.license)),
                ("card", code(model.card)),
            ],
        )
        out.append("")
        out += table(
            ["artifact", "size", "sha256"],
            [[code(a.path or a.url), number(a.bytes, "B"), code(a.sha256)] for a in model.artifacts],
        )
        waived = [
            (c.run, w)
            for c in model.evidence
            if c.run in ledger.by_id
            for w in record_of(ledger.by_id[c.run]).waivers
            if any(
                g.id == w.gate and g.verdict.value == "WAIVED" for g in record_of(ledger.by_id[c.run]).gates
            )
        ]
        if waived:
            out.append("\n**Waived verdicts** (the release rests on these waivers):\n")
            out += [
                f"- {verdict_badge('WAIVED')} {code(w.gate)} in {run_link(page, run)}: {text(w.reason)}"
                for run, w in waived
            ]
        out.append("")
    return "\n".join(out) + "\n"


def spec_page(spec: Spec) -> str:
    """The spec's version, its changelog and the benchmark goals."""
    out = [
        BANNER,
        f"# Spec {text(spec.header.spec_id)} {text(spec.version)}\n",
        f"sha256 {code(spec.sha256)}\n",
        "## Changelog\n",
    ]
    for entry in spec.header.changelog:
        out.append(f"- **{text(entry.version)}** ({entry.date}): {text(entry.summary)}")
    out.append("\n## Benchmark goals\n")
    out += table(
        ["benchmark", "metric", "goal"],
        [
            [
                f"{text(b.title)} ({code(b.name)})",
                code(b.metric),
                f"{'≤' if b.direction == 'at_most' else '≥'} {number(b.goal, unit_of(b.metric))}",
            ]
            for b in spec.benchmarks.values()
        ],
    )
    out.append("\n## Schemas\n")
    out += [f"- [{name}](schemas/{name}.schema.json)" for name in json_schemas()]
    return "\n".join(out) + "\n"


def _resolve_run(ref: str, known: set[str]) -> tuple[str, Path | None]:
    """A --compare argument as (run id, run directory to load, or None when the run is known).

    A run id is its directory's name (`contracts.evidence.RUN_ID_PATTERN`), so a directory's
    record is found by the directory's name."""
    if ref in known:
        return ref, None
    path = Path(ref).resolve()
    if (path / EVIDENCE_FILE).is_file():
        return path.name, path
    raise BadInput(
        f"--compare {ref}: neither a run id of the ledger nor a run directory with a {EVIDENCE_FILE}"
    )


def render(
    root: Path, extra_runs: list[Path] | None = None, compare: list[tuple[str, str]] | None = None
) -> list[Path]:
    """Replace docs/reference/ with pages generated from `root`'s spec and evidence.

    `extra_runs` are run directories outside the ledger (a `make demo` run, say) to show too;
    `compare` adds pairs of runs (ids or directories) to the comparison pages of the config.
    """
    config = load_site_config(root)
    extra = [Path(r).resolve() for r in extra_runs or []]
    ids = {p.parent.name for p in evidence_paths(root)} | {p.name for p in extra}
    pairs = []
    for ref_a, ref_b in [*config.compare, *(compare or [])]:
        (run_a, dir_a), (run_b, dir_b) = _resolve_run(ref_a, ids), _resolve_run(ref_b, ids)
        extra += [d for d in (dir_a, dir_b) if d is not None and d not in extra]
        ids |= {run_a, run_b}
        if (run_a, run_b) not in pairs:
            pairs.append((run_a, run_b))
    ledger = load_ledger(root, extra)
    missing = [run for pair in pairs for run in pair if run not in ledger.by_id]
    if missing:
        raise BadInput(f"cannot compare {', '.join(missing)}: its record does not validate")
    pages = generate(ledger, config.repository_url, pairs)
    out_dir = root / GENERATED
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for rel, content in pages.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return sorted(out_dir / rel for rel in pages)


def generate(ledger: Ledger, repository_url: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """page path (relative to docs/reference/) → content, for every generated page and file."""
    sources = SourceLinks(ledger.root, repository_url)
    pages: dict[str, str] = {
        "spec.md": spec_page(ledger.spec),
        "gates/index.md": gates_index(ledger),
        "evidence/index.md": evidence_index(ledger),
        "benchmarks.md": benchmarks_page(ledger),
        "models.md": registry_page(ledger.registry, ledger),
        ACCEPTS_PAGE: accepts_page(),
        "compare/index.md": compare_index(pairs),
        MATRIX_PAGE: options_matrix_snippet(ledger),  # included by docs/model.md
        **dashboard_pages(ledger),
        **lineage_pages(ledger),
    }
    for row in ledger.rows:
        pages[gate_path(row.gate.id)] = gate_page(row, ledger, sources)
    for loaded in ledger.runs:
        run_id = record_of(loaded).run.id
        plots = run_plots(loaded, ledger)
        for name, svg in plots.items():
            pages[f"evidence/{run_id}/{name}.svg"] = svg
        manifest = checkpoint_manifest(loaded, ledger)
        if manifest is not None:
            pages[f"evidence/{run_id}/checkpoint-manifest.json"] = json.dumps(manifest[1], indent=1) + "\n"
        pages[record_json_path(run_id)] = loaded.raw.decode("utf-8")
        compared = [(b if a == run_id else a, compare_path(a, b)) for a, b in pairs if run_id in (a, b)]
        pages[run_path(run_id)] = run_page(loaded, ledger, list(plots), manifest, compared)
    for run_a, run_b in pairs:
        a, b = ledger.by_id[run_a], ledger.by_id[run_b]
        page = compare_path(run_a, run_b)
        plots = compare_plots(a, b)
        for name, svg in plots.items():
            pages[f"{page.removesuffix('.md')}/{name}.svg"] = svg
        pages[page] = compare_page(a, b, ledger, list(plots))
    pages.update(sources.pages())
    for name, schema in json_schemas().items():
        pages[f"schemas/{name}.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT)
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="also show this run directory, or every run directory of this ledger (the folder --evidence-dir "
        "files records in)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("RUN_A", "RUN_B"),
        help="also write a comparison page of two runs (run ids or run directories)",
    )
    args = parser.parse_args(argv)
    try:
        written = render(args.root, runs_named(args.run), [tuple(pair) for pair in args.compare])
    except BadInput as exc:
        print(f"render_site: {exc}", file=sys.stderr)
        return 2
    print(f"render_site: wrote {len(written)} generated page(s) under {GENERATED}")
    compared = [
        p for p in written if p.parent.name == COMPARE_DIR and p.suffix == ".md" and p.stem != "index"
    ]
    for page in compared:
        print(f"render_site: comparison {page.relative_to(args.root)}")
    return 0
