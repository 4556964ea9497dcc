"""Command records from the result files they cite: an evaluation matrix from its per-item scores,
a surgery from its per-matrix results, a prepare from its manifest's per-source reports, a
synthesis from the lines it wrote, and so on.

Each command writes its results as a file beside its record (`evalmatrix.json`, `surgery.json`,
`memorization.json`, `matrix.json`, `synth.json` and `synth.jsonl`, `eval.json`, `export.json`,
`trace.json`, a prepare's `manifest.json`). The derivations here read those files and say what the
record's metrics and the measured values of the gates they decide must be; each gate so derived
is judged again from the derived values, so its verdict follows from the files and not from the
record. Files a kind gained in spec 1.7.0 (per-item scores, per-gate results, the manifest) are
asked of records made under 1.7.0 or later only.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from functools import lru_cache
from typing import Any

from contracts.derive import Derivation, Inputs, derives
from contracts.evidence import RunStatus
from contracts.judges import judge
from contracts.ledger import settle

PER_ITEM_SINCE = "1.7.0"  # the spec version from which these kinds cite their raw per-item results


def judged(inputs: Inputs, derived: Derivation, gate_id: str, measured: dict[str, Any]) -> None:
    """A gate judged once from `measured`: its values and its verdict, derived."""
    spec = inputs.spec
    if gate_id not in spec.gates or gate_id in inputs.stale:
        return
    waived = any(w.gate == gate_id for w in inputs.record.waivers)
    ok = not judge(gate_id, measured, spec.gates[gate_id].threshold_values)
    result = settle(spec, gate_id, None, measured, ok, waived)
    assert result is not None
    derived.verdict(gate_id, result.verdict)
    derived.gate(gate_id, measured)


def report_of(inputs: Inputs, derived: Derivation, name: str, since: str) -> dict[str, Any] | None:
    """The command's result file as an object; None (with the file missing, or a problem) otherwise.

    A command a gate halted wrote no result, so only a completed record must cite one.
    """
    try:
        report = inputs.artifacts.json(name)
    except ValueError:
        derived.problems.append(f"{name} is not JSON")
        return None
    if report is None:
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((name, since))
        return None
    if not isinstance(report, dict):
        derived.problems.append(f"{name} is not a JSON object")
        return None
    return report


def mirrored(derived: Derivation, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Metrics the record copies from the report, key for key."""
    for key in keys:
        if key in report:
            derived.put(("metrics", key), report[key])


@lru_cache(maxsize=256)
def version_key(version: str) -> tuple[int, ...]:
    """A semantic version as a sortable tuple (its pre-release part ignored)."""
    core = version.split("-", 1)[0]
    return tuple(int(part) for part in core.split(".") if part.isdigit())


# -- the evaluation matrix ---------------------------------------------------------------------


def bits_per_byte_of(total_nll_nats: float, n_bytes: int) -> float:
    """Bits per byte of a text whose UTF-8 bytes number `n_bytes` (GATE-EVAL-003's denominator)."""
    if n_bytes <= 0:
        raise ValueError("bits per byte of an empty text is undefined")
    return total_nll_nats / math.log(2) / n_bytes


def row_summary(row: dict[str, Any], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the matrix from its per-item scores, summed in item order as the command sums them."""
    nll = tokens = n_bytes = dropped = 0
    exact: int | None = 0
    for item in scores:
        nll, tokens = nll + item["nll"], tokens + item["tokens"]
        n_bytes, dropped = n_bytes + item["bytes"], dropped + item["dropped"]
        exact = None if exact is None or item.get("exact") is None else exact + bool(item["exact"])
    return {
        **row,
        "items": len(scores),
        "bits_per_byte": bits_per_byte_of(nll, n_bytes),
        "loss": nll / tokens,
        "completion_tokens": tokens,
        "completion_bytes": n_bytes,
        "context_tokens_dropped": dropped,
        "exact_match": None if exact is None or not scores else exact / len(scores),
    }


@derives("evalmatrix")
def evalmatrix_record(inputs: Inputs) -> Derivation:
    """Rows from per-item scores; the adapter's gain and GATE-FT-001 from rows B and C; GATE-FT-002's
    item ids and few-shot draws from the same file."""
    derived = Derivation()
    report = report_of(inputs, derived, "evalmatrix.json", "1.6.0")
    if report is None:
        return derived
    rows = report.get("rows") or []
    scores = report.get("scores")
    if isinstance(scores, dict):
        try:
            from_items = [row_summary(row, scores[row["row"]]) for row in rows]
        except (KeyError, TypeError, ZeroDivisionError, ValueError) as exc:
            derived.problems.append(f"evalmatrix.json: its per-item scores do not sum to rows ({exc!r})")
        else:
            if from_items != rows:
                derived.problems.append("evalmatrix.json: its rows are not the sums of its per-item scores")
            rows = from_items
        ids = {name: [item.get("id") for item in items] for name, items in scores.items()}
        judged_rows: dict[str, Any] | None = ids
    else:
        judged_rows = None
        derived.missing.append(("evalmatrix.json: per-item scores", PER_ITEM_SINCE))
    derived.put(("metrics", "rows"), rows)
    derived.put(("metrics", "items"), len(report.get("items") or []))
    by_name = {row.get("row"): row for row in rows if isinstance(row, dict)}
    few_shot, adapter = by_name.get("B"), by_name.get("C")
    if few_shot is not None and adapter is not None:
        derived.put(("metrics", "adapter_gain_bpb"), few_shot["bits_per_byte"] - adapter["bits_per_byte"])
        measured = {"few_shot_bpb": few_shot["bits_per_byte"], "adapter_bpb": adapter["bits_per_byte"]}
        judged(inputs, derived, "GATE-FT-001", measured)
    else:
        derived.put(("metrics", "adapter_gain_bpb"), None)
    if judged_rows is not None:
        judged(inputs, derived, "GATE-FT-002", {"rows": judged_rows, "few_shot": report.get("few_shot")})
    elif "few_shot" in report:
        derived.gate("GATE-FT-002", {"few_shot": report["few_shot"]})
    return derived


# -- surgery: laser, quantize, lora merge ------------------------------------------------------

# Before 1.7.0 surgery.json held the measured blocks but not the gates' results: the gates whose
# values are one of those blocks, by block.
SURGERY_BLOCKS = {
    "GATE-LORA-002": "parity",
    "GATE-LORA-003": "unmerge",
    "GATE-LORA-006": "embedding",
    "GATE-HQQ-002": "agreement",
}


@derives("laser", "quantize", "lora-merge")
def surgery_record(inputs: Inputs) -> Derivation:
    """The metrics block is surgery.json's `measured`; every gate's values are its `gates` (since 1.7.0)."""
    derived = Derivation()
    report = report_of(inputs, derived, "surgery.json", "1.5.0")
    if report is None:
        return derived
    measured = report.get("measured")
    if isinstance(measured, dict):
        derived.put(("metrics",), measured)
    gates = report.get("gates")
    if isinstance(gates, dict):
        for gate_id, values in sorted(gates.items()):
            if isinstance(values, dict):
                judged(inputs, derived, gate_id, values)
    else:
        derived.missing.append(("surgery.json: per-gate results", PER_ITEM_SINCE))
        for gate_id, block in SURGERY_BLOCKS.items():
            judged_here = any(g.id == gate_id for g in inputs.record.gates)
            if judged_here and isinstance(measured, dict) and isinstance(measured.get(block), dict):
                judged(inputs, derived, gate_id, measured[block])
    return derived


# -- the other commands' result files ------------------------------------------------------------


@derives("memorization")
def memorization_record(inputs: Inputs) -> Derivation:
    """GATE-FT-003 from the per-example verbatim runs; the summary from the same file."""
    derived = Derivation()
    report = report_of(inputs, derived, "memorization.json", "1.6.0")
    if report is None:
        return derived
    mirrored(derived, report, ("prefix", "continuation", "min_verbatim_tokens", "models"))
    if all(key in report for key in ("tuned_runs", "base_runs", "continuation")):
        measured = {
            "tuned_overlaps": report["tuned_runs"],
            "base_overlaps": report["base_runs"],
            "continuation_tokens": report["continuation"],
        }
        judged(inputs, derived, "GATE-FT-003", measured)
    return derived


@derives("options-matrix")
def options_matrix_record(inputs: Inputs) -> Derivation:
    """Each cell's outcome and last line, and the count of cells by outcome, from matrix.json."""
    derived = Derivation()
    report = report_of(inputs, derived, "matrix.json", "1.6.0")
    if report is None or not isinstance(report.get("cells"), dict):
        return derived
    cells, outcomes, messages = report["cells"], {}, {}
    for option, paths in cells.items():
        if not isinstance(paths, dict):
            continue
        outcomes[option] = {
            path: cell.get("outcome") for path, cell in paths.items() if isinstance(cell, dict)
        }
        for path, cell in paths.items():
            if isinstance(cell, dict) and cell.get("outcome") != "ok":
                messages[f"{option}/{path}"] = cell.get("message")
    counted = Counter(outcome for row in outcomes.values() for outcome in row.values())
    derived.put(("metrics", "cells"), dict(counted))
    derived.gate("GATE-ARCH-013", {"cells": outcomes, "messages": messages})
    return derived


@derives("synth")
def synth_record(inputs: Inputs) -> Derivation:
    """The counts from synth.json, and the lines GATE-SYNTH-001 counts from synth.jsonl itself."""
    derived = Derivation()
    report = report_of(inputs, derived, "synth.json", "1.6.0")
    text = inputs.artifacts.text("synth.jsonl")
    if text is None and inputs.record.run.status is RunStatus.COMPLETED:
        derived.missing.append(("synth.jsonl", "1.6.0"))
    if report is None:
        return derived
    counts = {key: report[key] for key in ("generated", "kept", "dropped") if key in report}
    for key, value in counts.items():
        derived.put(("metrics", key), value)
    if text is not None:
        lines = sum(1 for line in text.splitlines() if line.strip())
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if report.get("records_sha256") not in (None, digest):
            derived.problems.append("synth.json's records_sha256 is not the sha256 of synth.jsonl")
        judged(inputs, derived, "GATE-SYNTH-001", {**counts, "lines": lines})
    if "generated" in report:
        derived.gate("GATE-SYNTH-002", {"generated": report["generated"]})
    return derived


@derives("eval")
def eval_record(inputs: Inputs) -> Derivation:
    """The scores the record repeats from eval.json."""
    derived = Derivation()
    report = report_of(inputs, derived, "eval.json", "1.4.0")
    if report is not None:
        mirrored(derived, report, ("loss", "bits_per_byte", "tokens", "predicted_tokens", "bytes"))
    return derived


# What the export gates measured, by the parity report's keys (fp32 for the ONNX graph).
EXPORT_PARITY = {
    "export-hf": ("GATE-EXPORT-001", "model.safetensors", ""),
    "export-onnx": ("GATE-EXPORT-002", "model.onnx", "fp32_"),
}


@derives(*EXPORT_PARITY)
def export_record(inputs: Inputs) -> Derivation:
    """The export's status, sample and parity from export.json; the parity gate's values from its parity."""
    derived = Derivation()
    report = report_of(inputs, derived, "export.json", "1.4.0")
    if report is None:
        return derived
    mirrored(derived, report, ("status", "opset", "sample", "parity"))
    gate_id, file, prefix = EXPORT_PARITY[inputs.record.run.kind]
    parity = (report.get("parity") or {}).get(file)
    if isinstance(parity, dict) and "max_abs_diff" in parity:
        values = {f"{prefix}max_abs_diff": parity["max_abs_diff"], f"{prefix}finite": parity.get("finite")}
        derived.gate(gate_id, {**values, "positions": parity.get("positions")})
    return derived


@derives("trace", "patch", "lens", "lens-train")
def trace_record(inputs: Inputs) -> Derivation:
    """The verdict, first anomaly and per-layer summary the record repeats from trace.json."""
    derived = Derivation()
    report = report_of(inputs, derived, "trace.json", "1.0.0")
    if report is not None:
        mirrored(derived, report, ("trace_schema_version", "mode", "verdict", "first", "per_layer"))
    return derived


MANIFEST = "manifest.json"
# What GATE-DATA-013 and GATE-DATA-015 measure of each source's filter report; the prepare that judges
# them and the derivation from its manifest both shape the values here.
COVERAGE_KEYS = ("filters", "pre_clean", "waiver", "documents_in", "canaries")
SHARE_KEYS = ("documents_in", "dropped", "examples", "filters", "scripts")


def per_source(reports: dict[str, Any], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each source's report cut to `keys` (a key a report lacks is None)."""
    return {name: {key: row.get(key) for key in keys} for name, row in reports.items()}


@derives("prepare")
def prepare_record(inputs: Inputs) -> Derivation:
    """The per-source filter reports and totals from the DATA_DIR's manifest (cited since 1.7.0), and
    GATE-DATA-013/014/015's per-source values from those reports."""
    derived = Derivation()
    if not inputs.artifacts.has(MANIFEST):
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((MANIFEST, PER_ITEM_SINCE))
        filters = inputs.record.metrics.get("filters")
    else:
        manifest = report_of(inputs, derived, MANIFEST, PER_ITEM_SINCE) or {}
        digest = next(a.sha256 for a in inputs.record.artifacts if a.path == MANIFEST)
        derived.put(("data", "manifest_sha256"), digest)
        filters = manifest.get("filters", {})
        derived.put(("metrics", "filters"), filters)
        derived.put(("metrics", "totals"), manifest.get("totals"))
    if not isinstance(filters, dict):
        return derived
    current = {g for g in ("GATE-DATA-013", "GATE-DATA-014", "GATE-DATA-015") if g not in inputs.stale}
    if "GATE-DATA-013" in current:
        derived.put(("gates", "GATE-DATA-013", "measured", "sources"), per_source(filters, COVERAGE_KEYS))
    if "GATE-DATA-015" in current:
        derived.put(("gates", "GATE-DATA-015", "measured", "sources"), per_source(filters, SHARE_KEYS))
    if "GATE-DATA-014" in current:
        counts = per_source(filters, ("documents_in", "documents_out", "dropped"))
        for name, values in counts.items():
            for key, value in values.items():
                derived.put(("gates", "GATE-DATA-014", "measured", "sources", name, key), value)
    return derived
