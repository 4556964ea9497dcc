"""What `stack prepare` may replace in DATA_DIR, and how a finished build is moved in.

prepare owns exactly the files that a manifest of its own lists, and only while they still
have the sha256 it recorded: the files of DATA_DIR/manifest.json, and those of the staged
manifest of a publish that was cut short (a killed prepare's staging directory, which names
its pid, so a dead one is recognised). Everything else in DATA_DIR is someone else's: never
deleted, never overwritten, with or without --force. Every refusal comes before anything is
written, so a refused prepare leaves DATA_DIR as it found it.

A build is staged in `.prepare-<pid>-*` inside DATA_DIR (same file system, so moving it in is
a rename) and moved in with SIGINT and SIGTERM held back, manifest.json last. A prepare killed
outright leaves its staging directory; the next one removes it, and keeps treating the files
its staged manifest lists as prepare's own, so an interrupted publish never blocks a rerun.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.artifacts import INDEX_FILE
from stack.data.manifest import MANIFEST_FILE, parse_manifest
from stack.data.shards import SHARD_DIR, SHARD_NAME
from stack.data.tokenizer import TOKENIZER_FILE
from stack.runlock import LOCK_FILE

log = logging.getLogger(__name__)

STAGING = re.compile(r"^\.prepare-([1-9][0-9]*)-")
MOVE_AWAY = "move it away or choose another --out"


@dataclass(frozen=True)
class Claim:
    """DATA_DIR as prepare found it: the files it may replace, and the leftovers of dead runs."""

    owned: frozenset[str]
    stale: tuple[Path, ...]
    manifest: bytes | None  # manifest.json as read, so a change before the lock is taken shows


def staging_prefix() -> str:
    """The name prefix of this process's staging directory: the pid tells a live one from a stale one."""
    return f".prepare-{os.getpid()}-"


def check_out(out: Path) -> Path | None:
    """Refuse an --out prepare cannot write; returns the topmost directory it will create, if any."""
    if out.is_symlink() and not out.exists():
        raise BadInput(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "point it at a directory or choose another --out"
        )
    if out.exists():
        if not out.is_dir():
            raise BadInput(f"--out {out} exists and is not a directory; choose another --out")
        _check_writable(out, out, os.R_OK)  # prepare also lists what is there
        return None
    created = out
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            break
        created = parent
    if not created.parent.is_dir():
        raise BadInput(
            f"--out {out} cannot be created: {created.parent} is not a directory; choose another --out"
        )
    _check_writable(created.parent, out)
    return created


def _check_writable(directory: Path, out: Path, also: int = 0) -> None:
    if not os.access(directory, os.W_OK | os.X_OK | also):
        raise BadInput(
            f"--out {out} is not writable: {directory} does not let this user create files; "
            "fix its permissions or choose another --out"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid can be that large
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
        elif int(match[1]) != os.getpid() and _alive(int(match[1])):
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
        raise BadInput(f"cannot read {path} ({exc.strerror}); {MOVE_AWAY}") from None


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


def _verified(path: Path, sha256s: set[str]) -> bool:
    """Whether `path` is there to replace; refuses a listed file that is no longer prepare's."""
    if not path.exists() and not path.is_symlink():
        return False
    try:
        actual = sha256_file(path) if path.is_file() else None
    except OSError:
        actual = None
    if actual not in sha256s:
        raise BadInput(
            f"refusing to replace {path}: the manifest lists it, but it is not the file `stack prepare` "
            f"wrote there (its sha256 differs: changed since, or put there by someone else); {MOVE_AWAY}"
        )
    return True


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
    if not force:
        raise BadInput(
            f"DATA_DIR {out} already exists and is not empty; pass --force to replace what an earlier "
            "`stack prepare` wrote there (nothing else is touched), or choose another --out"
        )
    current = _read(out / MANIFEST_FILE)
    try:
        listed = _listed(out, stale, current)
    except BadInput as exc:
        raise BadInput(
            f"--force replaces only what prepare wrote, and {out / MANIFEST_FILE} is not a manifest it "
            f"can trust ({exc}); {MOVE_AWAY}"
        ) from None
    owned = {rel for rel, sha256s in listed.items() if _verified(out / rel, sha256s)}
    owned |= {MANIFEST_FILE} if current is not None else set()
    for rel in _may_write(out, sources, bpe):
        if rel not in owned:
            raise BadInput(
                f"refusing to overwrite {out / rel}: it was not written by `stack prepare`; {MOVE_AWAY}"
            )
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


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends: a ^C then lands after the last rename."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(staging: Path, out: Path, owned: frozenset[str]) -> None:
    """Move the staged files into `out`, replacing only `owned` ones; manifest.json goes last.

    Files of the old manifest that the new one does not list are removed first, so a prepare
    killed half-way leaves only files that one of the two manifests vouches for.
    """
    staged = sorted(
        (p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()),
        key=lambda rel: (rel == MANIFEST_FILE, rel),
    )
    for rel in staged:
        target = out / rel
        if (target.exists() or target.is_symlink()) and rel not in owned:
            raise BadInput(
                f"refusing to overwrite {target}: it was not written by `stack prepare`; {MOVE_AWAY}"
            )
    with _signals_held():
        for rel in sorted(owned - set(staged)):
            (out / rel).unlink(missing_ok=True)
        for rel in staged:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)


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
