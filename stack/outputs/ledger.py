"""Filing an evidence record into a ledger (`--evidence-dir LEDGER`): claimed before the work, then filed.

The ledger's own rules are contracts.evidence's and stay there (`ledger_slot`: a run id is filed
once, never replaced; `file_record`: the record and copies of its files as LEDGER/<run-id>/).
What this adds is what every other output gets: LEDGER is checked like any destination (no
link, nothing in the way, writable) before the work, so a ledger that cannot take the record
costs nothing.

A training run filed more than once is filed once per leg: its first filing takes the run id,
and each resumed leg (`stack train --resume RUN --evidence-dir LEDGER`) a new id of its own,
`<run-id>-leg2`, `<run-id>-leg3`, ... (`claim_leg`), whose record names the leg it continues as
its `resumes` parent with the weights it resumed from (contracts.evidence.RESUMES). No record is
ever replaced; tools/integrity/lineage.py checks the chain, and `stack release` of the run takes its newest
filed leg (`newest_leg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    REPO_ROOT,
    EvidenceRecord,
    file_record,
    ledger_slot,
    leg_id,
    leg_of,
    read_evidence,
)
from contracts.signing import configured_key
from stack.outputs.destination import check_directory

OPTION = "--evidence-dir"


def check(ledger_dir: Path | None, option: str = OPTION) -> None:
    """Refuse, before any work, a ledger directory a record could not be filed into, and a signing
    key the filing would refuse (contracts.signing.configured_key: one inside the repository)."""
    if ledger_dir is not None:
        check_directory(ledger_dir, option, into=True)
        configured_key(REPO_ROOT, ledger_dir)


def claim(ledger_dir: Path, run_id: str, option: str = OPTION) -> Path:
    """Where `run_id` will be filed; refused now when the ledger cannot take it or holds it already."""
    check(ledger_dir, option)
    return ledger_slot(ledger_dir, run_id)


def file(ledger_dir: Path, record: EvidenceRecord, files: tuple[Path, ...] = ()) -> Path:
    """File `record`, with copies of `files` as its artifacts, as LEDGER/<run-id>/ (append-only)."""
    return file_record(ledger_dir, record, files)


@dataclass(frozen=True)
class Leg:
    """Where a leg of a run is filed, and the newest filed leg of the same run it continues."""

    run_id: str
    continues: str | None  # None: the run's first filing in this ledger


def filed_legs(ledger_dir: Path, run_id: str, started: datetime) -> list[tuple[int, str]]:
    """(leg, ledger id) of every leg of the run `run_id` that started at `started` filed in the
    ledger, in leg order. A record filed under the run id itself that is another run is the clash
    a new run is refused for (`ledger_slot`'s words); another run's `-legN` is passed over."""
    directory = Path(ledger_dir)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        run, leg = leg_of(entry.name)
        if run != run_id or not (entry / EVIDENCE_FILE).is_file():
            continue
        if read_evidence(entry / EVIDENCE_FILE).run.started == started:
            found.append((leg, entry.name))
        elif leg == 1:
            ledger_slot(directory, entry.name)  # raises: LEDGER/<run-id> is another run
    return sorted(found)


def claim_leg(ledger_dir: Path, run_id: str, started: datetime, option: str = OPTION) -> Leg:
    """Where the resumed leg of run `run_id` (started at `started`) will be filed: the run id when
    the ledger holds none of its legs, else the leg after its newest, whose id it continues."""
    check(ledger_dir, option)
    legs = filed_legs(ledger_dir, run_id, started)
    if not legs:
        return Leg(ledger_slot(ledger_dir, run_id).name, None)
    taken = [leg_of(p.name)[1] for p in Path(ledger_dir).iterdir() if leg_of(p.name)[0] == run_id]
    target = leg_id(run_id, max(taken) + 1)
    ledger_slot(ledger_dir, target)
    return Leg(target, legs[-1][1])


def newest_leg(ledger_dir: Path, record: EvidenceRecord) -> str:
    """The ledger id of the newest filed leg of the run `record` is a leg of (its own id when no
    later leg is filed)."""
    run_id, _ = leg_of(record.run.id)
    legs = filed_legs(ledger_dir, run_id, record.run.started)
    if not legs:
        raise BadInput(f"{ledger_dir} holds no filed leg of run {run_id!r}")
    return legs[-1][1]
