"""GATE-CKPT-002 of a committed checkpoint a record read, verified again from the checkpoint itself.

A command that reads a model (eval, sample, trace, export, a surgery, memorization's base) judges
GATE-CKPT-002 on it: every file its manifest lists matches its sha256, and the record states the
checkpoint's name, the files verified and the first problem. Where the command line named the
checkpoint by a path of the repository (a released model under evidence/models/, whose files are
committed and never changed), the checker verifies that directory again by the stack's own
`verify_files` and holds the record to it. A record repointed at another committed model (a
withdrawn release that holds no manifest) cannot keep saying its files were verified.

The path must be a word of the command line that is relative, that `run.places` resolved to a
place ending in that same path (the run started at the root of a checkout), and that names a
directory under evidence/ here whose name is the checkpoint the gate names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.evidence import REPO_ROOT, EvidenceRecord
from stack.train.checkpoint import verify_files

COMMITTED = REPO_ROOT / "evidence"


def _committed_reads(record: EvidenceRecord, name: str) -> list[tuple[str, Path]]:
    """(word, directory) for each word of the command line that names committed checkpoint `name`."""
    places = record.run.places or {}
    found = []
    for word in record.run.argv or []:
        place = places.get(word)
        if word.startswith("-") or Path(word).is_absolute() or not isinstance(place, str):
            continue
        directory = (REPO_ROOT / word).resolve()
        if (
            place.rstrip("/").endswith("/" + word.strip("/"))
            and directory.name == name
            and directory.is_relative_to(COMMITTED)
            and directory.is_dir()
        ):
            found.append((word, directory))
    return found


def committed_checkpoint_problems(record: EvidenceRecord) -> list[str]:
    """Where the record's GATE-CKPT-002 names a committed checkpoint its command line read: the
    files verified and the problem the record states, against that checkpoint verified again."""
    result = next((g for g in record.gates if g.id == "GATE-CKPT-002"), None)
    measured: dict[str, Any] = (
        result.measured if result is not None and isinstance(result.measured, dict) else {}
    )
    name = measured.get("checkpoint")
    if not isinstance(name, str) or "files_verified" not in measured:
        return []
    problems = []
    for word, directory in _committed_reads(record, name):
        problem, verified = verify_files(directory)
        stated = (measured.get("files_verified"), measured.get("problem") is None)
        if stated != (len(verified), problem is None):
            problems.append(
                f"gates[GATE-CKPT-002] says {measured.get('files_verified')} file(s) of {name} verified "
                f"({measured.get('problem') or 'no problem'}), but {word}, as committed, verifies "
                f"{len(verified)} ({problem or 'no problem'})"
            )
    return problems
