"""Filing an evidence record into a ledger (`--evidence-dir LEDGER`): claimed before the work, then filed.

The ledger's own rules are contracts.evidence's and stay there (`ledger_slot`: a run id is filed
once, never replaced; `file_record`: the record and copies of its files as LEDGER/<run-id>/).
What this adds is what every other output gets: LEDGER is checked like any destination (no
link, nothing in the way, writable) before the work, so a ledger that cannot take the record
costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from contracts.evidence import EvidenceRecord, file_record, ledger_slot
from stack.outputs.destination import check_directory

OPTION = "--evidence-dir"


def check(ledger_dir: Path | None, option: str = OPTION) -> None:
    """Refuse, before any work, a ledger directory a record could not be filed into."""
    if ledger_dir is not None:
        check_directory(ledger_dir, option, into=True)


def claim(ledger_dir: Path, run_id: str, option: str = OPTION) -> Path:
    """Where `run_id` will be filed; refused now when the ledger cannot take it or holds it already."""
    check(ledger_dir, option)
    return ledger_slot(ledger_dir, run_id)


def file(ledger_dir: Path, record: EvidenceRecord, files: tuple[Path, ...] = ()) -> Path:
    """File `record`, with copies of `files` as its artifacts, as LEDGER/<run-id>/ (append-only)."""
    return file_record(ledger_dir, record, files)
