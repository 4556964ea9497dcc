"""The run pages: what ran, on what, what every gate said, what the monitor read, how it stopped.

A run page is where a person checks one record by eye, so it shows what the record and the
run's own files hold rather than a summary of them: the samples the coherence monitor scored,
each resume and what it changed, the data and tokenizer hashes, the checkpoint's hashes and its
manifest. Everything is read from the record and its run directory; nothing is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.evidence import EvidenceRecord
from tools.integrity.audit import LoadedEvidence
from tools.site.filters import drops_section
from tools.site.finetune import finetune_section
from tools.site.formatting import (
    BANNER,
    code,
    gate_path,
    json_details,
    link,
    number,
    read_jsonl,
    record_json_path,
    run_path,
    scalar,
    short_sha,
    status_badge,
    table,
    tally,
    text,
    unit_of,
    values_cell,
    verdict_badge,
)
from tools.site.ledger import Ledger, record_of
from tools.site.plots import lens_training_chart, position_map, trace_heat_map, training_curves

PLOT_TITLES = {
    "loss": "Loss and held-out loss",
    "lr": "Learning rate",
    "grad_norm": "Gradient norm",
    "tokens_per_s": "Throughput",
    "coherence": "Coherence of samples",
    "trace": "Per-layer trace: std by layer × site (anomalies outlined in red)",
    "lens": "Lens: KL to the final distribution by layer × position",
    "lens_training": "Tuned lens against the logit lens on held-out text",
    "patch": "Activation patching: recovered fraction by layer × position",
}
MANIFEST_FILE = "manifest.json"
# Sample steps shown in full on a run page: the first few and the latest (the rest are in
# metrics.jsonl, listed under the artifacts).
SAMPLES_HEAD, SAMPLES_TAIL = 2, 6
MAX_EVENTS = 40


def run_link(page: str, run_id: str) -> str:
    """A Markdown link from generated page `page` to a run's page, labelled with the run's id."""
    return f"[{text(run_id)}]({link(page, run_path(run_id))})"


def run_tally(ledger: Ledger, run_id: str) -> str:
    """A run's verdicts counted as badges, with how many of them are stale."""
    record = record_of(ledger.by_id[run_id])
    return tally([g.verdict.value for g in record.gates], ledger.stale(run_id))


def metrics_lines(loaded: LoadedEvidence) -> list[dict[str, Any]]:
    """The run's metrics.jsonl (filed beside its record in the ledger, or in its run directory)."""
    return read_jsonl(loaded.path.parent / "metrics.jsonl")


def _traced_run(record: EvidenceRecord) -> str | None:
    """The training run a trace record traced (its path A names a run or one of its checkpoints)."""
    path_a = record.config.get("path_a")
    if record.run.kind != "trace" or not isinstance(path_a, str):
        return None
    traced = Path(path_a.split(" (")[0])
    return traced.parent.parent.name if traced.parent.name == "checkpoints" else traced.name


def _trace_report(run_dir: Path, traces: list[Path]) -> dict[str, Any] | None:
    """The trace.json of a trace record, of the newest trace in a run's traces/, or of a ledger
    trace record that traced this run."""
    local = [run_dir / "trace.json", *sorted(run_dir.glob("traces/*/trace.json"), reverse=True)]
    for path in local + [t / "trace.json" for t in traces]:
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return None
    return None


def run_plots(loaded: LoadedEvidence, ledger: Ledger) -> dict[str, str]:
    """plot name → SVG for one run: curves from its metrics.jsonl, a heat map from its trace."""
    record = record_of(loaded)
    plots = training_curves(metrics_lines(loaded))
    traces = [e.path.parent for e in ledger.runs if _traced_run(record_of(e)) == record.run.id]
    report = _trace_report(loaded.path.parent, traces)
    heat = trace_heat_map(report) if report is not None else None
    if heat is not None:
        plots["trace"] = heat
    if report is not None:
        for name, svg in (("lens", position_map(report)), ("lens_training", lens_training_chart(report))):
            if svg is not None:
                plots["patch" if record.run.kind == "patch" else name] = svg
    return plots


def checkpoint_manifest(loaded: LoadedEvidence, ledger: Ledger) -> tuple[str, dict[str, Any]] | None:
    """Where the run's last checkpoint's manifest.json is, and what it holds.

    A run directory keeps it under checkpoints/<name>/; a ledger record keeps only hashes, but
    a release of that checkpoint keeps its manifest beside the weights it hashed.
    """
    record = record_of(loaded)
    if record.checkpoint is None:
        return None
    candidates = [loaded.path.parent / "checkpoints" / record.checkpoint.name / MANIFEST_FILE]
    weights = record.checkpoint.files.get("model.safetensors")
    for model in ledger.registry.models:
        released = model.artifact("model.safetensors")
        if weights and released is not None and released.sha256 == weights.sha256:
            candidates.append(ledger.root / model.directory / MANIFEST_FILE)
    for path in candidates:
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            where = path.relative_to(ledger.root) if path.is_relative_to(ledger.root) else path
            return str(where), manifest
    return None


def _facts(record: EvidenceRecord) -> list[str]:
    """Provenance: what ran, when, from which commit, spec, configuration, data and tokenizer."""
    run = record.run
    took = f" ({number((run.finished - run.started).total_seconds(), 's')})" if run.finished else ""
    stop = f" — {text(run.stop_reason)}" if run.stop_reason else ""
    git = short_sha(record.code.git_sha, 40) + (" (dirty tree)" if record.code.git_dirty else "")
    rows = [
        ("kind", text(run.kind)),
        ("status", status_badge(run.status.value) + stop),
        ("started", f"{run.started:%Y-%m-%d %H:%M:%S} UTC"),
        ("finished", (f"{run.finished:%Y-%m-%d %H:%M:%S} UTC" + took) if run.finished else "—"),
        ("command", code(" ".join(run.argv))),
        ("git", git),
        ("spec", f"{text(record.spec.version)} ({short_sha(record.spec.sha256)})"),
        ("contract mode", text(record.contract_mode)),
        ("device", text(record.env.device)),
        ("python / torch / triton", text(f"{record.env.python} / {record.env.torch} / {record.env.triton}")),
        ("config sha256", short_sha(record.config_sha256)),
        ("data manifest sha256", short_sha(record.data.manifest_sha256)),
        ("tokenizer sha256", short_sha(record.data.tokenizer_sha256)),
        ("schema", str(record.schema_version)),
    ]
    return table(["field", "value"], rows)


def _verdicts(record: EvidenceRecord, ledger: Ledger, page: str) -> list[str]:
    if not record.gates:
        return ["This run judged no gate."]
    rows = []
    whole = link(page, record_json_path(record.run.id))
    for result in record.gates:
        seen = ledger.verdicts.get((record.run.id, result.id))
        stale = seen.stale if seen is not None else False
        known = result.id in ledger.spec.gates
        gate = f"[{result.id}]({link(page, gate_path(result.id))})" if known else code(result.id)
        step = f"<br>step {number(result.step)}" if result.step is not None else ""
        rows.append(
            [
                f"{gate}<br>rev {result.revision}",
                verdict_badge(result.verdict.value, stale) + step,
                values_cell(result.measured, result.threshold, result.message, whole),
            ]
        )
    return table(["gate", "verdict", "measured (limit)"], rows)


def _samples(record: EvidenceRecord, lines: list[dict[str, Any]]) -> list[str]:
    """Every text the coherence monitor scored, with its prompt, score and step."""
    samples = [ln for ln in lines if ln.get("type") == "sample"]
    if not samples:
        return []
    monitor = record.config.get("monitor")
    prompts = monitor.get("prompts", []) if isinstance(monitor, dict) else []
    out = ["\n## Samples the monitor scored\n"]
    shown = samples
    if len(samples) > SAMPLES_HEAD + SAMPLES_TAIL:
        shown = samples[:SAMPLES_HEAD] + samples[-SAMPLES_TAIL:]
        out.append(
            f"{len(samples)} sample steps; the first {SAMPLES_HEAD} and the last {SAMPLES_TAIL} are "
            "shown, every one is in `metrics.jsonl`.\n"
        )
    rows = []
    for sample in shown:
        texts = sample.get("texts") or []
        scores = sample.get("scores") or []
        for index, sample_text in enumerate(texts):
            prompt = prompts[index] if index < len(prompts) else ""
            score = scores[index] if index < len(scores) else None
            rows.append(
                [
                    number(sample.get("step", 0)),
                    code(prompt),
                    f'<span class="gs-sample">{text(sample_text)}</span>',
                    scalar(score),
                ]
            )
        mean = sample.get("score")
        rows.append(
            [
                number(sample.get("step", 0)),
                "",
                "<em>mean of the step</em>",
                f"<strong>{scalar(mean)}</strong>",
            ]
        )
    out += table(["step", "prompt", "text", "score"], rows)
    return out


def _resumes(record: EvidenceRecord) -> list[str]:
    """Each resume: from which step, by which command, what changed and which gates were re-judged."""
    resumes = record.metrics.get("resumes")
    if not isinstance(resumes, list) or not resumes:
        return []
    out = ["\n## Resumes and mixture changes\n"]
    rows = []
    for entry in resumes:
        if not isinstance(entry, dict):
            continue
        changed = [str(k) for k in entry.get("changed") or []]
        mixture = any(k.startswith("data.weights") for k in changed)
        rows.append(
            [
                number(entry.get("from_step", 0)),
                code(" ".join(map(str, entry.get("argv") or []))),
                (", ".join(code(k) for k in changed) or "nothing")
                + (" (mixture changed)" if mixture else ""),
                ", ".join(code(g) for g in entry.get("rejudged") or []) or "—",
            ]
        )
    out += table(["from step", "command", "changed", "re-judged"], rows)
    data = record.config.get("data")
    weights = data.get("weights") if isinstance(data, dict) else None
    if isinstance(weights, dict):
        shown = ", ".join(f"{code(k)} = {scalar(v)}" for k, v in weights.items()) or "none set"
        out.append(f"\nMixture now (`data.weights`): {shown}.")
    return out


def _events(lines: list[dict[str, Any]]) -> list[str]:
    """The events the loop logged (checkpoints, corpus wraps, loss spikes), in step order."""
    events = [ln for ln in lines if ln.get("type") == "event"]
    if not events:
        return []
    out = ["\n## Events\n"]
    if len(events) > MAX_EVENTS:
        out.append(f"{len(events)} events; the last {MAX_EVENTS} are shown.\n")
        events = events[-MAX_EVENTS:]
    rows = []
    for event in events:
        details = {k: v for k, v in event.items() if k not in ("type", "step", "event")}
        shown = ", ".join(f"{text(k)} = {scalar(v, unit_of(k))}" for k, v in details.items())
        rows.append([number(event.get("step", 0)), text(event.get("event", "?")), shown or "—"])
    return out + table(["step", "event", "details"], rows)


def _checkpoint(record: EvidenceRecord, manifest: tuple[str, dict[str, Any]] | None, page: str) -> list[str]:
    if record.checkpoint is None:
        return []
    ckpt = record.checkpoint
    out = [
        f"\n## Checkpoint\n\nThe run's last checkpoint, {code(ckpt.name)} at step {number(ckpt.step)}, "
        "by content:\n"
    ]
    out += table(
        ["file", "size", "sha256"],
        [[code(name), number(f.bytes, "B"), short_sha(f.sha256, 16)] for name, f in ckpt.files.items()],
    )
    if manifest is None:
        out.append("\nIts `manifest.json` stays in the run directory; the ledger keeps the hashes above.")
        return out
    where, held = manifest
    listed = held.get("files") if isinstance(held.get("files"), dict) else {}
    agree = all(
        isinstance(entry, dict) and ckpt.files[name].sha256 == entry.get("sha256")
        for name, entry in listed.items()
        if name in ckpt.files
    )
    target = link(page, f"{page.removesuffix('.md')}/checkpoint-manifest.json")
    verdict = "every file it lists has the hash above" if agree else "**its hashes differ from the record's**"
    out.append(f"\n[Checkpoint manifest]({target}) (a copy of {code(where)}): {verdict}.")
    return out


def run_page(
    loaded: LoadedEvidence,
    ledger: Ledger,
    plots: list[str],
    manifest: tuple[str, dict[str, Any]] | None,
    compared: list[tuple[str, str]],
) -> str:
    """One evidence record as a page. `compared` lists (other run, comparison page) pairs."""
    record = record_of(loaded)
    run = record.run
    page = run_path(run.id)
    lines = metrics_lines(loaded)
    out = [BANNER, f"# Run {text(run.id)}\n"]
    head = [status_badge(run.status.value), text(run.kind)]
    if run.stop_reason:
        head.append(text(run.stop_reason))
    head.append(run_tally(ledger, run.id) if record.gates else "no gate judged")
    out.append(" · ".join(head) + "\n")
    links = [
        f"released as [{text(m.name)} {text(m.version)}]({link(page, 'models.md')})"
        for m in ledger.releases_of(run.id)
    ]
    links += [f"[compare with {text(other)}]({link(page, target)})" for other, target in compared]
    if links:
        out.append(" · ".join(links) + "\n")
    out += _facts(record)
    out.append("\n## Gate verdicts\n")
    out += _verdicts(record, ledger, page)
    out += drops_section(record)
    out += finetune_section(record)
    out += _samples(record, lines)
    out += _resumes(record)
    out += _events(lines)
    if plots:
        out.append("\n## Curves\n")
        for name in plots:
            out.append(f"### {PLOT_TITLES.get(name, name)}\n\n![{name}]({run.id}/{name}.svg)\n")
    out += _checkpoint(record, manifest, page)
    if record.waivers:
        out.append("\n## Waivers\n")
        out += [f"- {code(w.gate)}: {text(w.reason)}" for w in record.waivers]
    whole = link(page, record_json_path(run.id))
    metrics = {k: v for k, v in record.metrics.items() if k != "resumes"}
    if metrics:
        out.append("\n## Metrics\n")
        rows = [
            [
                code(k),
                json_details(v, f"{len(v)} entries", whole)
                if isinstance(v, dict) and v
                else scalar(v, unit_of(k)),
            ]
            for k, v in sorted(metrics.items())
        ]
        out += table(["metric", "value"], rows)
    if record.artifacts:
        out.append("\n## Artifacts\n")
        out += table(
            ["path", "size", "sha256"],
            [[code(a.path), number(a.bytes, "B"), short_sha(a.sha256, 16)] for a in record.artifacts],
        )
    if record.config:
        out.append("\n## Configuration\n")
        out.append(f"Resolved configuration, sha256 {short_sha(record.config_sha256)}:\n")
        out.append(json_details(record.config, "the configuration as JSON"))
    out.append(f"\nThe whole record: [metadata.json]({whole}) (a copy of {code(loaded.path.name)} as filed).")
    return "\n".join(out) + "\n"


def evidence_index(ledger: Ledger) -> str:
    """Every run of the ledger, newest first, with its verdicts counted; and any record that
    does not validate, with why (a broken record is shown, never skipped in silence)."""
    out = [BANNER, "# Evidence\n"]
    if not ledger.runs:
        out.append("No evidence records yet.")
    else:
        out.append(f"{len(ledger.runs)} run(s); the [dashboard](../index.md) shows them against the gates.\n")
        rows = []
        for loaded in ledger.runs:
            r = record_of(loaded)
            rows.append(
                [
                    f"[{text(r.run.id)}]({r.run.id}.md)",
                    text(r.run.kind),
                    status_badge(r.run.status.value),
                    f"{r.run.started:%Y-%m-%d %H:%M}",
                    run_tally(ledger, r.run.id),
                ]
            )
        out += table(["run", "kind", "status", "started", "verdicts"], rows)
    broken = [e for e in ledger.records if e.record is None]
    if broken:
        out.append("\n## Records that do not validate\n")
        out += [f"- {code(e.path.parent.name)}: {text(e.error)}" for e in broken]
    return "\n".join(out) + "\n"
