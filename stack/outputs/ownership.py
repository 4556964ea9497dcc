"""What `--force` may replace: only what this command's own record lists, unchanged since it wrote it.

A command proves it wrote a file by its own record of it: the files an export's export.json, an
import's import.json, a surgery's surgery.json, a trace's metadata.json, a DATA_DIR's
manifest.json or an adapter's adapter.json list, each with the sha256 it had when written. A
file is the command's to replace only while it still has that sha256: one edited since, a link
put in its place, or a file the record does not list is someone else's and is never deleted or
overwritten, with or without --force. The record itself is the command's (it is what vouches for
the rest), and so is the evidence record (metadata.json) beside it when that names it by its
sha256.

What the rule replaces differs by how a command writes, the one deliberate difference (`claim`'s
`writes`): a directory that is one artifact, built aside and swapped in whole (an export, a
surgery, a trace record), may hold nothing else, since the swap would take it away; a DATA_DIR,
where prepare replaces its own files one by one, may keep the user's notes beside them, and
only the paths it writes must be its own. A file output (`--json`, `--save`) has no record
beside it: its own content says which command wrote it (`claim_file`).

Every check runs before any work, and again just before the swap (files may appear while the
command runs), so a refusal changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, atomic_write_bytes, now, read_evidence, sha256_file
from stack.artifacts import LOCK_FILE


@dataclass(frozen=True)
class Earlier:
    """An earlier output of this command, as its record lists it.

    `files` maps each listed path (relative to the output, posix) to the sha256s it may have (more
    than one where two records vouch for it: a DATA_DIR's manifest and the staged manifest of a
    publish that was cut short). `record` names the record in refusals.
    """

    record: str
    files: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def folders(self) -> set[str]:
        """Every directory the listed files lie in (relative), the output's own root excepted."""
        return {p.as_posix() for rel in self.files for p in PurePosixPath(rel).parents if p.name}


def move_away(option: str) -> str:
    """The way out of every refusal to touch a file: the user's file stays, the output goes elsewhere."""
    return f"move it away or choose another {option}"


def not_empty(out: Path, option: str, remedy: str) -> BadInput:
    """The refusal of a non-empty output without the flag or resume that would continue it."""
    return BadInput(f"{option} {out} already exists and is not empty; {remedy}")


def is_empty(out: Path) -> bool:
    """Whether a directory holds nothing but its writer's lock file (the lock is not an output)."""
    return all(entry.name == LOCK_FILE for entry in Path(out).iterdir())


def hashed_files(root: Path, skip: Collection[str] = ()) -> dict[str, dict[str, int | str]]:
    """sha256 and size of every file under `root` (relative posix paths), names in `skip` excepted:
    what a record lists of the output it describes."""
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in skip)
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
    }


def write_record(root: Path, name: str, record: dict[str, Any]) -> Path:
    """Write a command's own record `root/name`: `record`, when it was written, and the sha256 and
    size of every other file under `root` (`files`), which is what `listed_by_record` reads back."""
    full = {**record, "created": now().isoformat(), "files": hashed_files(root, skip=(name,))}
    path = Path(root) / name
    atomic_write_bytes(path, (json.dumps(full, indent=1, sort_keys=True) + "\n").encode())
    return path


def listed_by_record(out: Path, record: str, option: str = "--out") -> Earlier:
    """The earlier output a command's own record (a JSON object whose `files` maps each relative
    path to its `sha256`) lists in `out`; with it the record, and the evidence record naming it."""
    path = out / record
    if not path.is_file() or path.is_symlink():
        raise BadInput(
            f"--force replaces only an earlier output of this command, and {out} holds no {record}; "
            f"choose another {option}"
        )
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        listed = {str(rel): frozenset({str(entry["sha256"])}) for rel, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            f"--force replaces only an earlier output it can verify, and {path} is not a record this "
            f"command wrote ({type(exc).__name__}); {move_away(option)}"
        ) from None
    own = sha256_file(path)
    listed[record] = frozenset({own})
    evidence = out / EVIDENCE_FILE
    if evidence.is_file() and not evidence.is_symlink():
        with contextlib.suppress(BadInput):  # an evidence record that names no such record is not ours
            if (record, own) in {(a.path, a.sha256) for a in read_evidence(evidence).artifacts}:
                listed[EVIDENCE_FILE] = frozenset({sha256_file(evidence)})
    return Earlier(record, listed)


def by_record(record: str) -> Callable[[Path], Earlier]:
    """The reader of an earlier output that a command's own record `record` lists (`listed_by_record`)."""
    return lambda out: listed_by_record(out, record)


def listed_by_evidence(out: Path, kinds: Collection[str], what: str, option: str = "--out") -> Earlier:
    """The earlier output an evidence record of one of `kinds` lists in `out` (its artifacts, each
    with its sha256), and the evidence record itself. `what` names such an output in the refusal."""
    evidence = out / EVIDENCE_FILE
    try:
        record = read_evidence(evidence) if evidence.is_file() and not evidence.is_symlink() else None
    except BadInput:
        record = None
    if record is None or record.run.kind not in kinds:
        raise BadInput(
            f"--force replaces only {what}, and {out} holds no {EVIDENCE_FILE} of one; "
            f"choose another {option}"
        )
    listed = {a.path: frozenset({a.sha256}) for a in record.artifacts}
    listed[EVIDENCE_FILE] = frozenset({sha256_file(evidence)})
    return Earlier(EVIDENCE_FILE, listed)


def claim(
    out: Path, earlier: Earlier, writes: Collection[str] | None = None, option: str = "--out"
) -> set[str]:
    """What --force may replace in `out` (module docstring); refuses naming the first file that is
    not the command's. Returns the listed files present, each verified unchanged.

    `writes` None: the whole directory is replaced, so everything in it must be listed (its lock
    file aside). Else only the paths in `writes` (relative) that exist must be; the rest is kept.
    Either way a listed file that is present but changed is refused: replacing or removing it
    would lose someone's edit.
    """
    owned = {rel for rel in earlier.files if _verified(out, rel, earlier, option)}
    strangers = (
        _all_entries(out, earlier) if writes is None else [rel for rel in writes if _present(out / rel)]
    )
    for rel in strangers:
        if rel not in owned:
            raise BadInput(
                f"refusing to replace {out}: {out / rel} is not part of the earlier output ({earlier.record} "
                f"does not list it); {move_away(option)}"
            )
    return owned


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _verified(out: Path, rel: str, earlier: Earlier, option: str) -> bool:
    """Whether listed file `rel` is present; refused when it is, but not as the record has it."""
    path = out / rel
    if not _present(path):
        return False
    try:
        actual = sha256_file(path) if path.is_file() and not path.is_symlink() else None
    except OSError:  # a file this user cannot read cannot be shown to be the one written
        actual = None
    if actual not in earlier.files[rel]:
        raise BadInput(
            f"refusing to replace {out}: {path} was changed since it was written (its sha256 is not the "
            f"one {earlier.record} records); {move_away(option)}"
        )
    return True


def _all_entries(out: Path, earlier: Earlier) -> list[str]:
    """Every file and every directory of `out` no listed file lies in (relative), the lock aside."""
    folders = earlier.folders()
    found = []
    for root, dirs, files in os.walk(out):
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(out).as_posix()
            if rel == LOCK_FILE:
                continue
            if name in dirs and not path.is_symlink() and rel in folders:
                continue
            found.append(rel)
    return found


def claim_file(path: Path, option: str, force: bool, written_here: Callable[[Path], bool], what: str) -> None:
    """Refuse an existing output FILE unless `force`, and then unless `written_here` recognises it
    as this command's (a file has no record beside it: its content is its own). `what` names the
    command's file in the refusal ("a file `stack trace --json` wrote", "a tuned lens")."""
    if not _present(path):
        return
    if not force:
        raise BadInput(f"{option} {path} already exists; choose another path, or --force to replace {what}")
    if not path.is_file() or path.is_symlink() or not written_here(path):
        raise BadInput(f"refusing to replace {path}: it is not {what}; {move_away(option)}")
