"""The evidence record every trace leaves: where it goes and what it holds.

A trace is a diagnosis, not a release, so by default its record stays with what it traced:
`--out DIR` if given (refused when it already holds a record), else `RUN_DIR/traces/<run-id>/`
beside the checkpoint's run, or `./traces/<run-id>/` for a checkpoint outside a run (a release
is never written into), or beside the first dump for `--compare`. It enters the project's
ledger only when asked, with `--evidence-dir evidence/runs`, as `<dir>/<run-id>/`. The record
holds the verdict, the first site that went wrong, a per-layer summary and the GATE-TRACE-002
verdict; the full report is its artifact `trace.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    RunStatus,
    artifact,
    canonical_sha256,
    new_record,
    now,
    run_id,
    write_evidence,
)
from contracts.ledger import Ledger
from contracts.spec import load_spec
from stack.trace.report import plain
from stack.trace.sites import TRACE_SCHEMA_VERSION
from stack.train.checkpoint import CKPT_DIR

REPORT_FILE = "trace.json"
TRACE_KIND = "trace"  # spec/run_kinds.yaml says which gates a trace record must judge


def run_dir_of(checkpoint: Path) -> Path:
    """Where a trace of `checkpoint` keeps its record: its training run, else the working directory.

    A checkpoint outside a run (a release under evidence/models/, an imported model) is never
    written into or beside: releases are content-addressed and their directory is not ours.
    """
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == CKPT_DIR else Path.cwd()


def record_dir(out: Path | None, evidence_dir: Path | None, anchor: Path) -> tuple[Path, str]:
    """The directory of this trace's record and its run id (unique within its parent)."""
    rid = run_id("trace")
    if out is not None:
        if (Path(out) / EVIDENCE_FILE).exists():
            raise BadInput(f"{out} already holds a trace record ({EVIDENCE_FILE}); choose a new --out")
        return Path(out), rid
    base = Path(evidence_dir) if evidence_dir is not None else anchor / "traces"
    candidate, n = rid, 1
    while (base / candidate).exists():  # two traces in the same second
        candidate, n = f"{rid}-{n}", n + 1
    return base / candidate, candidate


def write_record(
    directory: Path,
    rid: str,
    argv: list[str],
    device: str,
    mode: str,
    config: dict[str, Any],
    payload: dict[str, Any] | None,
    ledger: Ledger,
    stop_reason: str | None = None,
) -> Path:
    """Write trace.json (when there is a report) and metadata.json; returns the record's path."""
    record = new_record(TRACE_KIND, rid, argv, device=device, mode=mode)
    record.config = config
    record.config_sha256 = canonical_sha256(config)
    record.gates = ledger.gate_results(expected=load_spec().required_gates(TRACE_KIND))
    if payload is None:
        record.run.status, record.run.stop_reason = RunStatus.HALTED, stop_reason
        record.metrics = {"trace_schema_version": TRACE_SCHEMA_VERSION}
    else:
        record.run.status = RunStatus.COMPLETED
        keys = ("trace_schema_version", "mode", "verdict", "first", "per_layer")
        record.metrics = plain({key: payload[key] for key in keys})
        report = directory / REPORT_FILE
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(plain(payload), indent=1, allow_nan=False) + "\n")
        record.artifacts = [artifact(report, directory)]
    record.run.finished = now()
    return write_evidence(directory, record)
