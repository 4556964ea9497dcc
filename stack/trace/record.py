"""The evidence record every trace leaves, where it goes, and which existing outputs it may replace.

A trace is a diagnosis, not a release, so by default its record stays with what it traced:
`--out DIR` if given, else `RUN_DIR/traces/<run-id>/` beside the checkpoint's run, or
`./traces/<run-id>/` for a checkpoint outside a run (a release is never written into), or
beside the first dump for `--compare`. It enters the project's ledger only when asked, with
`--evidence-dir evidence/runs`, as `<dir>/<run-id>/`. The record holds the verdict, the first
site that went wrong, a per-layer summary and the GATE-TRACE-002 verdict; the full report is
its artifact `trace.json`.

Every output follows the rules of all outputs (stack.outputs): nothing a user wrote is
overwritten. An existing `--out DIR` (not empty) or output FILE (`--json`, `--csv`, `--dump`) is
refused, and with `--force` replaced only when a trace wrote it: a DIR holding nothing but a
trace record and the artifacts it lists with their sha256, a FILE whose content is a trace
report, table or dump. The checks run before the trace does, so a refused trace leaves
everything as it was, and a record directory is built aside and swapped in whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    DataRef,
    RunStatus,
    artifact,
    canonical_sha256,
    free_run_id,
    new_record,
    now,
    plain,
    run_id,
    write_evidence,
)
from contracts.ledger import Ledger
from contracts.spec import load_spec
from stack.artifacts import CHECKPOINTS_DIR as CKPT_DIR
from stack.outputs import ownership, rundir
from stack.outputs.destination import check_directory, check_file
from stack.trace.dump import FORMAT as DUMP_FORMAT
from stack.trace.sites import TRACE_SCHEMA_VERSION

REPORT_FILE = "trace.json"
TRACES_DIR = "traces"  # where a record goes without --out: RUN_DIR/traces/, or ./traces/
TRACE_KIND = "trace"  # spec/run_kinds.yaml says which gates a trace record must judge
# The kinds of record that look inside a model and share this module; --force replaces any of them.
DIAGNOSTIC_KINDS = (TRACE_KIND, "patch", "lens", "lens-train")
COMMANDS = {TRACE_KIND: "trace", "patch": "trace", "lens": "lens", "lens-train": "lens"}


def run_dir_of(checkpoint: Path) -> Path:
    """Where a trace of `checkpoint` keeps its record: its training run, else the working directory.

    A checkpoint outside a run (a release under evidence/models/, an imported model) is never
    written into or beside: releases are content-addressed and their directory is not ours.
    """
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == CKPT_DIR else Path.cwd()


def _writer(kind: str) -> rundir.Writer:
    """The writer of a record directory of `kind`: --force replaces an earlier diagnostic record."""
    return rundir.Writer(f"stack {COMMANDS[kind]}", earlier=_earlier_record)


def _earlier_record(out: Path) -> ownership.Earlier:
    """The files an earlier trace, patch or lens record in `out` lists, with their sha256s."""
    return ownership.listed_by_evidence(
        out, DIAGNOSTIC_KINDS, "an earlier trace record (or a patch or lens one)"
    )


def check_out_dir(out: Path, force: bool, kind: str = TRACE_KIND) -> None:
    """Refuse an --out DIR that is not new or empty, unless `force` and it holds only an earlier record."""
    rundir.check(out, _writer(kind), force=force)


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
    """Refuse an output FILE that cannot be written, or an existing one, unless `force` and an
    earlier `stack trace OPTION` wrote it."""
    if path is None:
        return
    check_file(path, option)
    what = f"a file `stack trace {option}` wrote"
    ownership.claim_file(path, option, force, lambda found: _written_by_trace(found, option), what)


def check_one_place(out: Path | None, evidence_dir: Path | None) -> None:
    """--out and --evidence-dir each say where the one record goes: both at once would leave one
    of them silently ignored, so the pair is refused before any work."""
    if out is not None and evidence_dir is not None:
        raise BadInput(
            "--out DIR and --evidence-dir LEDGER both say where the record goes; give one "
            "(--evidence-dir files it as LEDGER/<run-id>/)"
        )


def _records_home(evidence_dir: Path | None, anchor: Path) -> Path:
    """Where a record goes without --out: into the ledger asked for, else ANCHOR/traces/."""
    return Path(evidence_dir) if evidence_dir is not None else anchor / TRACES_DIR


def check_record_home(out: Path | None, evidence_dir: Path | None, anchor: Path) -> None:
    """Refuse, before any work, the directory a record without --out goes into as every output is
    refused (stack.outputs.destination): a run's traces/ is written under the run's one-writer
    lock, held from here to the end, so a trace of a run that `stack train` is writing is refused
    naming it, instead of writing beside it."""
    if out is None:
        check_directory(_records_home(evidence_dir, anchor), "--out", into=True)


def record_dir(
    out: Path | None, evidence_dir: Path | None, anchor: Path, kind: str = TRACE_KIND
) -> tuple[Path, str]:
    """The directory of this record and its run id, `<kind>-<time>` (unique within its parent)."""
    if out is not None:
        return Path(out), run_id(kind)
    base = _records_home(evidence_dir, anchor)
    rid = free_run_id(kind, base)
    return base / rid, rid


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
    force: bool = False,
    data: DataRef | None = None,
) -> Path:
    """Write trace.json (when there is a report) and metadata.json of run kind `kind` as `directory`,
    built aside and swapped in (stack.outputs.rundir; with `force` in place of an earlier record
    that `check_out_dir` let through); returns the record's path. `data`: the prepared data the
    command read, cited by its manifest's and tokenizer's sha256 (a lens fitted on a DATA_DIR)."""
    record = new_record(kind, rid, argv, device=device, mode=mode)
    record.config = config
    record.config_sha256 = canonical_sha256(config)
    if data is not None:
        record.data = data
    record.gates = ledger.gate_results(expected=load_spec().required_gates(kind))
    with rundir.opened(directory, _writer(kind), force=force) as opened:
        if payload is None:
            record.run.status, record.run.stop_reason = RunStatus.HALTED, stop_reason
            record.metrics = {"trace_schema_version": TRACE_SCHEMA_VERSION}
        else:
            record.run.status = RunStatus.COMPLETED
            keys = ("trace_schema_version", "mode", "verdict", "first", "per_layer")
            record.metrics = plain({key: payload[key] for key in keys})
            report = opened.where / REPORT_FILE
            report.write_text(json.dumps(plain(payload), indent=1, allow_nan=False) + "\n")
            record.artifacts = [artifact(report, opened.where)]
        record.run.finished = now()
        write_evidence(opened.where, record)
        return opened.commit() / EVIDENCE_FILE
