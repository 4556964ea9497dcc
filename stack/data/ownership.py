"""What `stack prepare` may replace in DATA_DIR, and how a finished build is moved in.

The rules are every command's (stack.outputs): the path is checked before any work, --force
replaces only the files prepare's own record lists with the sha256 it recorded, a build is
staged out of sight and moved in at once. What is prepare's own here is its record and how it
publishes. Its record is the manifest: DATA_DIR/manifest.json, and the staged manifest of a
publish that was cut short (a killed prepare's staging directory, which names its pid, so a
dead one is recognised). A DATA_DIR may hold the user's files beside prepare's (readers read
only what the manifest lists), so those are kept: only the paths prepare writes must be its
own. Every refusal comes before anything is written, so a refused prepare leaves DATA_DIR as it
found it.

A build is staged in `.prepare-<pid>-*` inside DATA_DIR (same file system, so moving it in is
a rename) and moved in file by file (stack.outputs.staging.move_in), manifest.json last. A
prepare killed outright leaves its staging directory; the next one removes it, and keeps
treating the files its staged manifest lists as prepare's own, so an interrupted publish never
blocks a rerun.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import BadInput
from stack.artifacts import INDEX_FILE, LOCK_FILE
from stack.data.damage import AGAIN, Damaged
from stack.data.manifest import MANIFEST_FILE, parse_manifest
from stack.data.shards import SHARD_DIR, SHARD_NAME
from stack.data.tokenizer import TOKENIZER_FILE
from stack.outputs import ownership, staging
from stack.outputs.destination import check_directory
from stack.outputs.ownership import Earlier, move_away, not_empty

log = logging.getLogger(__name__)

STAGING = re.compile(r"^\.prepare-([1-9][0-9]*)-")
OPTION = "--out"


@dataclass(frozen=True)
class Claim:
    """DATA_DIR as prepare found it: the files it may replace, and the leftovers of dead runs."""

    owned: frozenset[str]
    stale: tuple[Path, ...]
    manifest: bytes | None  # manifest.json as read, so a change before the lock is taken shows


def staging_prefix() -> str:
    """The name prefix of this process's staging directory: the pid tells a live one from a stale one."""
    return f".prepare-{os.getpid()}-"


def _entries(out: Path) -> tuple[list[Path], list[Path]]:
    """Top-level entries of `out`: (staging directories of dead prepares, the content proper).

    The lock file is neither: it is how prepare takes DATA_DIR, not something it publishes.
    """
    stale, content = [], []
    for entry in sorted(out.iterdir()):
        if entry.name == LOCK_FILE:
            continue
        match = STAGING.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            content.append(entry)
        elif int(match[1]) != os.getpid() and staging.alive(int(match[1])):
            raise BadInput(
                f"{entry} is the staging directory of process {match[1]}, which is still running; "
                f"wait for it to finish, or remove {entry} if that process is not a stack prepare"
            )
        else:
            stale.append(entry)
    return stale, content


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(f"cannot read {path} ({exc.strerror}); {move_away(OPTION)}") from None


def _listed(out: Path, stale: list[Path], current: bytes | None) -> dict[str, set[str]]:
    """path → the sha256s a manifest of prepare's recorded for it (current or cut-short publish)."""
    listed: dict[str, set[str]] = {}
    manifests = [] if current is None else [parse_manifest(out, current)]
    for directory in stale:
        try:
            journal = _read(directory / MANIFEST_FILE)
            manifests += [] if journal is None else [parse_manifest(out, journal)]
        except BadInput:
            continue  # an unreadable staged manifest vouches for nothing
    for manifest in manifests:
        for rel, sha256 in manifest.hashes().items():
            listed.setdefault(rel, set()).add(sha256)
    return listed


def _may_write(out: Path, sources: set[str], bpe: bool) -> list[str]:
    """The existing paths of `out` that this prepare could write: its fixed files and its shards."""
    names = [MANIFEST_FILE, INDEX_FILE, SHARD_DIR, *([TOKENIZER_FILE] if bpe else [])]
    found = [name for name in names if (out / name).exists() or (out / name).is_symlink()]
    if (out / SHARD_DIR).is_dir() and not (out / SHARD_DIR).is_symlink():
        found.remove(SHARD_DIR)
        found += [
            f"{SHARD_DIR}/{path.name}"
            for path in sorted((out / SHARD_DIR).iterdir())
            if (match := SHARD_NAME.match(f"{SHARD_DIR}/{path.name}")) and match[2] in sources
        ]
    return found


def check_out(out: Path) -> Path | None:
    """Refuse an --out prepare cannot write (stack.outputs.destination); returns the topmost
    directory it will create, if any."""
    return check_directory(out, OPTION, into=True, locks_itself=True)  # prepare takes OUT's lock itself


def claim(out: Path, force: bool, sources: set[str], bpe: bool) -> Claim:
    """What prepare may replace in `out`, checked before anything is written (see the module doc).

    Refuses a non-empty DATA_DIR without `force`; with it, refuses a manifest it cannot trust, a
    listed file whose sha256 changed, and any file it did not write at a path it may write.
    """
    if not out.is_dir():
        return Claim(frozenset(), (), None)
    stale, content = _entries(out)
    if not content:
        return Claim(frozenset(), tuple(stale), None)
    if not force:  # --force is offered only where it would be taken
        try:
            claim(out, True, sources, bpe)
        except BadInput:
            raise not_empty(out, OPTION, f"choose another {OPTION}") from None
        raise not_empty(
            out,
            OPTION,
            "pass --force to replace what an earlier `stack prepare` wrote there (nothing else is touched), "
            f"or choose another {OPTION}",
        )
    current = _read(out / MANIFEST_FILE)
    try:
        listed = _listed(out, stale, current)
    except BadInput as exc:  # its own fix is not this refusal's: --force is what refuses here
        problem = exc.problem if isinstance(exc, Damaged) else str(exc)
        raise BadInput(
            f"--force replaces only what prepare wrote, and {out / MANIFEST_FILE} is not a manifest it "
            f"can trust ({problem}); {move_away(OPTION)}"
        ) from None
    if current is not None:
        listed[MANIFEST_FILE] = {hashlib.sha256(current).hexdigest()}
    earlier = Earlier(MANIFEST_FILE, {rel: frozenset(sha256s) for rel, sha256s in listed.items()})
    owned = ownership.claim(out, earlier, _may_write(out, sources, bpe), OPTION)
    return Claim(frozenset(owned), tuple(stale), current)


def take_over(out: Path, found: Claim) -> None:
    """Under the lock: check `out` is as `claim` found it, then remove the dead runs' staging."""
    if _read(out / MANIFEST_FILE) != found.manifest:
        raise BadInput(
            f"{out / MANIFEST_FILE} changed while prepare was starting (another stack prepare wrote "
            "there); run the command again"
        )
    for directory in found.stale:
        shutil.rmtree(directory, ignore_errors=True)
        log.warning(f"note: removed {directory}, left by an interrupted stack prepare whose process is gone")


def publish(staged: Path, out: Path, owned: frozenset[str]) -> None:
    """Move the staged build into `out`, replacing only `owned` files; manifest.json goes last."""
    staging.move_in(staged, out, owned, MANIFEST_FILE, "stack prepare", OPTION)


def write_failure(exc: OSError, out: Path) -> str:
    """The one line for a write that failed: which file (as it would be published), and why."""
    where = Path(exc.filename) if exc.filename else out
    parts = where.relative_to(out).parts if where.is_relative_to(out) else ()
    if len(parts) > 1 and STAGING.match(parts[0]):
        where = out.joinpath(*parts[1:])  # the staged file, by the name it would have been published as
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the disk is full: writing {where} failed ({exc.strerror}); prepare removed what it had "
            f"written, so free some space on the disk of {out} and run the same command again"
        )
    return (
        f"cannot write {where} ({exc.strerror}); prepare removed what it had written: check the "
        f"disk and permissions of {out} and run the same command again"
    )


def remedy(damaged: Damaged) -> str:
    """The fix for the damaged DATA_DIR a reader refused that `stack prepare` accepts: --force when
    prepare's --force rule (`claim`) takes the directory as it is, else a new --out or moving it
    away, with the reason --force would give (the reader's own, when it knew it already)."""
    data_dir = damaged.data_dir
    refused = damaged.force_refused if damaged.force_refused is not None else _force_refusal(data_dir)
    if refused is None:
        return f"prepare it again over it: `{AGAIN} --out {data_dir} --force`"
    return (
        f"prepare it again into a new directory (`{AGAIN} --out NEW_DIR`), or move {data_dir} away "
        f"and prepare it there again; --force would not replace it: {refused}"
    )


def _force_refusal(data_dir: Path) -> str | None:
    """Why `stack prepare ... --out DATA_DIR --force` would refuse `data_dir` as it is now, whatever
    its sources and tokenizer (every shard and the tokenizer file counted as its to write); None
    when it would replace what it finds."""
    shards = data_dir / SHARD_DIR
    names = [path.name for path in shards.iterdir()] if shards.is_dir() and not shards.is_symlink() else []
    sources = {match[2] for name in names if (match := SHARD_NAME.match(f"{SHARD_DIR}/{name}"))}
    try:
        claim(data_dir, True, sources, bpe=True)
    except BadInput as exc:
        return exc.problem if isinstance(exc, Damaged) else str(exc).rsplit("; ", 1)[0]
    return None
