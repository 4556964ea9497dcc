"""The evidence record every trace leaves, where it goes, and which existing outputs it may replace.

A trace is a diagnosis, not a release, so by default its record stays with what it traced:
`--out DIR` if given, else `RUN_DIR/traces/<run-id>/` beside the checkpoint's run, or
`./traces/<run-id>/` for a checkpoint outside a run (a release is never written into), or
beside the first dump for `--compare`. It enters the project's ledger only when asked, with
`--evidence-dir evidence/runs`, as `<dir>/<run-id>/`. The record holds the verdict, the first
site that went wrong, a per-layer summary and the GATE-TRACE-002 verdict; the full report is
its artifact `trace.json`.

Nothing a user wrote is overwritten: an existing `--out DIR` (not empty) or output FILE
(`--json`, `--csv`, `--dump`) is refused, and with `--force` replaced only when a trace wrote
it: a DIR holding nothing but a trace record and the artifacts it lists with their sha256, a
FILE whose content is a trace report, table or dump. The check runs before the trace does, so a
refused trace leaves everything as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    RunStatus,
    artifact,
    canonical_sha256,
    new_record,
    now,
    read_evidence,
    run_id,
    sha256_file,
    write_evidence,
)
from contracts.ledger import Ledger
from contracts.spec import load_spec
from stack.trace.dump import FORMAT as DUMP_FORMAT
from stack.trace.report import plain
from stack.trace.sites import TRACE_SCHEMA_VERSION
from stack.train.checkpoint import CKPT_DIR

REPORT_FILE = "trace.json"
TRACE_KIND = "trace"  # spec/run_kinds.yaml says which gates a trace record must judge
# The kinds of record that look inside a model and share this module; --force replaces any of them.
DIAGNOSTIC_KINDS = (TRACE_KIND, "patch", "lens", "lens-train")
MOVE_AWAY = "move it away or choose another path"


def run_dir_of(checkpoint: Path) -> Path:
    """Where a trace of `checkpoint` keeps its record: its training run, else the working directory.

    A checkpoint outside a run (a release under evidence/models/, an imported model) is never
    written into or beside: releases are content-addressed and their directory is not ours.
    """
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == CKPT_DIR else Path.cwd()


def _earlier_record(out: Path) -> list[Path]:
    """The files of an earlier trace record in `out`; refuses anything else found there, by name."""
    evidence = out / EVIDENCE_FILE
    try:
        record = read_evidence(evidence) if evidence.is_file() else None
    except BadInput:
        record = None
    if record is None or record.run.kind not in DIAGNOSTIC_KINDS:
        raise BadInput(
            f"--force replaces only an earlier trace record, and {out} holds no trace {EVIDENCE_FILE} "
            "(nor a patch or lens one); choose a new --out"
        )
    expected = {a.path: a.sha256 for a in record.artifacts}
    folders = {parent.as_posix() for rel in expected for parent in PurePosixPath(rel).parents}
    found = []
    for root, dirs, files in os.walk(out):
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(out).as_posix()
            if name in dirs and rel in folders and not path.is_symlink():
                continue
            if name in dirs or path.is_symlink() or (rel != EVIDENCE_FILE and rel not in expected):
                raise BadInput(
                    f"refusing to replace {out}: {path} is not part of its trace record; {MOVE_AWAY}"
                )
            if rel != EVIDENCE_FILE and sha256_file(path) != expected[rel]:
                raise BadInput(
                    f"refusing to replace {out}: {path} was changed since the trace wrote it (its sha256 "
                    f"is not the one {EVIDENCE_FILE} records); {MOVE_AWAY}"
                )
            found.append(path)
    return found


def _creatable(path: Path, option: str) -> None:
    """Refuse a new output path that cannot be made because a file stands where a directory must."""
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise BadInput(f"{option} {path} cannot be created: {parent} is a file; give another path")


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an --out DIR that is not new or empty, unless `force` and it holds only an earlier trace."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BadInput(f"--out {out} is not a directory; give a new directory path")
    if not out.is_dir():
        _creatable(out, "--out")
        return
    if not any(out.iterdir()):
        return
    if not force:
        raise BadInput(
            f"--out {out} already exists and is not empty; choose a new --out, or --force to replace "
            "the trace record in it"
        )
    _earlier_record(out)


def _written_by_trace(path: Path, option: str) -> bool:
    """Whether FILE is what `stack trace OPTION FILE` writes: its content says so."""
    try:
        text = path.read_text(encoding="utf-8")
        if option == "--csv":
            return text.startswith("trace_schema_version,name,")
        payload = json.loads(text)
    except (OSError, ValueError):
        return False
    if not isinstance(payload, dict):
        return False
    if option == "--dump":
        return payload.get("format") == DUMP_FORMAT
    return {"trace_schema_version", "mode", "verdict", "first"} <= payload.keys()


def check_output_file(path: Path | None, option: str, force: bool) -> None:
    """Refuse an existing output FILE, unless `force` and an earlier `stack trace OPTION` wrote it."""
    if path is None:
        return
    if not path.exists() and not path.is_symlink():
        _creatable(path, option)
        return
    if path.is_symlink() or not path.is_file():
        raise BadInput(
            f"{option} {path} is not a regular file (a directory, a link, a device); give a new path"
        )
    if not force:
        raise BadInput(
            f"{option} {path} already exists; choose another path, or --force to replace a file an "
            "earlier trace wrote"
        )
    if not _written_by_trace(path, option):
        raise BadInput(
            f"refusing to replace {path}: it is not a file `stack trace {option}` wrote; {MOVE_AWAY}"
        )


def check_one_place(out: Path | None, evidence_dir: Path | None) -> None:
    """--out and --evidence-dir each say where the one record goes: both at once would leave one
    of them silently ignored, so the pair is refused before any work."""
    if out is not None and evidence_dir is not None:
        raise BadInput(
            "--out DIR and --evidence-dir LEDGER both say where the record goes; give one "
            "(--evidence-dir files it as LEDGER/<run-id>/)"
        )


def record_dir(
    out: Path | None, evidence_dir: Path | None, anchor: Path, kind: str = TRACE_KIND
) -> tuple[Path, str]:
    """The directory of this record and its run id, `<kind>-<time>` (unique within its parent).

    An `out` that `check_out_dir` let through with --force is checked again and emptied of the
    earlier record, so no artifact of it outlives the new record that does not list it.
    """
    rid = run_id(kind)
    if out is not None:
        if Path(out).is_dir() and any(Path(out).iterdir()):
            for path in _earlier_record(Path(out)):
                path.unlink()
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
    kind: str = TRACE_KIND,
) -> Path:
    """Write trace.json (when there is a report) and metadata.json of run kind `kind`; returns its path."""
    record = new_record(kind, rid, argv, device=device, mode=mode)
    record.config = config
    record.config_sha256 = canonical_sha256(config)
    record.gates = ledger.gate_results(expected=load_spec().required_gates(kind))
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
