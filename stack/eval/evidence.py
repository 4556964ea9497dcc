"""The evidence record of a command that judges one piece of work: `stack eval` and `stack export`.

Such a command loads a checkpoint (GATE-CKPT-002) and checks what it made of it (GATE-EVAL-003
for a scoring, GATE-EXPORT-001/002 for an export). The work runs with the record's own ledger
active, so the bindings' verdicts land in the record, and the gates its run kind requires
(spec/run_kinds.yaml) are listed even when they never ran, as NOT_RUN. A gate that fires leaves
the record halted with the gate named, and the record is still written: a refused scoring is
evidence too. Filing into a ledger is append-only; the run id is claimed before the work starts
(the next free one when a record of the same second is there).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contracts.errors import BadInput, GateViolation
from contracts.evidence import (
    EVIDENCE_FILE,
    CheckpointRef,
    EvidenceRecord,
    FileHash,
    RunStatus,
    artifact,
    atomic_write_bytes,
    free_run_id,
    new_record,
    now,
    write_evidence,
)
from contracts.gates import contract_mode
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.outputs import ledger
from stack.outputs.destination import check_directory
from stack.train import checkpoint as ckpt


class CommandEvidence:
    """One command's record, its ledger, and the ledger directory it is filed into (if any)."""

    def __init__(self, kind: str, argv: list[str], device: str, ledger_dir: Path | None) -> None:
        rid = free_run_id(kind, ledger_dir)
        if ledger_dir is not None:
            ledger.claim(ledger_dir, rid)  # a clash, or a ledger that cannot take it, before any work
        self.record: EvidenceRecord = new_record(kind, rid, argv, device, mode=contract_mode().value)
        self.ledger = Ledger()
        self.ledger_dir = ledger_dir

    @contextmanager
    def judging(self) -> Iterator[Ledger]:
        """Run the work with this record's ledger active; a gate that fires settles it as halted."""
        with recording(self.ledger):
            try:
                yield self.ledger
            except GateViolation as exc:
                self.settle(RunStatus.HALTED, str(exc))
                raise

    def settle(self, status: RunStatus, reason: str | None = None) -> None:
        """End the run: its status, and every verdict, NOT_RUN for a required gate that never ran."""
        record = self.record
        record.gates = self.ledger.gate_results(
            expected=load_spec().required_gates(record.run.kind, record.config)
        )
        record.run.status, record.run.stop_reason, record.run.finished = status, reason, now()

    def note_checkpoint(self, path: Path) -> None:
        """Record which checkpoint the work read, by the hashes of its manifest."""
        manifest = ckpt.read_manifest(path)
        files = {name: FileHash(**entry) for name, entry in manifest["files"].items()}
        self.record.checkpoint = CheckpointRef(name=Path(path).name, step=manifest["step"], files=files)

    def write(self, directory: Path, files: Sequence[Path]) -> Path:
        """Write the record as directory/metadata.json, with `files` (inside it) as its artifacts."""
        self.record.artifacts = [artifact(path, directory) for path in files]
        return write_evidence(directory, self.record)

    def file(self, files: tuple[Path, ...] = ()) -> Path | None:
        """File the record, with copies of `files`, into the ledger directory given (if any)."""
        if self.ledger_dir is None:
            return None
        return ledger.file(self.ledger_dir, self.record, files)


def check_record_dir(directory: Path | None, result_file: str) -> None:
    """Refuse a --record DIR that is a file or already holds a record or a file named `result_file`:
    the command would write both, and a file it cannot prove it wrote is never overwritten."""
    if directory is None:
        return
    check_directory(directory, "--record", into=True)
    for name in (EVIDENCE_FILE, result_file):
        if (directory / name).exists() or (directory / name).is_symlink():
            raise BadInput(
                f"--record {directory} already holds a {name}, which this command writes and never "
                "overwrites; choose a new --record DIR"
            )


def judged_and_kept(
    evidence: CommandEvidence,
    record_dir: Path | None,
    result_file: str,
    work: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], list[Path]]:
    """Run `work` with the record's ledger active and keep the record (`keep`) either way: a gate
    that fires leaves it halted, kept without a result file, and goes on up (exit 3); otherwise the
    record is completed and kept with `work`'s result. Returns the result and where it went."""
    try:
        with evidence.judging():
            result = work()
    except GateViolation:
        keep(evidence, record_dir, result_file, None)
        raise
    evidence.settle(RunStatus.COMPLETED)
    return result, keep(evidence, record_dir, result_file, result)


def keep(
    evidence: CommandEvidence, record_dir: Path | None, result_file: str, result: dict[str, Any] | None
) -> list[Path]:
    """Write the record (and the result as `result_file`) to --record DIR and file both into the
    ledger directory given (if any); where they went."""
    if record_dir is None and evidence.ledger_dir is None:
        return []
    kept = []
    with tempfile.TemporaryDirectory() as scratch:
        directory = record_dir if record_dir is not None else Path(scratch)
        files = []
        if result is not None:
            files.append(directory / result_file)
            atomic_write_bytes(files[0], (json.dumps(result, indent=2) + "\n").encode())
        if record_dir is not None:
            kept.append(evidence.write(record_dir, files))
        filed = evidence.file(tuple(files))
        if filed is not None:
            kept.append(filed)
    return kept
