"""One writer per directory: an advisory lock held for as long as a command writes there.

Two `stack train --out r` at once would interleave their metrics and leave a record that
named one run's seed and the other's checkpoint. A command that writes into a run directory
(or a prepared DATA_DIR) takes `DIR/.lock` first: an exclusive `flock`, which the kernel
releases when the process dies, so a lock can never outlive its holder. The file also names the
holder's pid and command, so the refusal can say who holds it; a file left by a dead process is
simply taken over, and the caller is told.

The rule covers everything written *under* such a directory too (a trace record in RUN/traces/,
an export or an evaluation record put inside a run, a DATA_DIR nested in another): without
that, `stack trace RUN` could write RUN/traces/ while `stack train` writes RUN. So every output
path a command is given, or picks, is checked in stack.outputs.destination, and that check takes the
lock of every one-writer directory the path lies in (`claim_under`), refusing while another
process holds one, and holds it until the command ends (`command_scope`, opened by stack.cli for
every command). A one-writer directory is one holding its writer's lock file beside what that
writer writes there: a run's config.toml or checkpoints/, a DATA_DIR's manifest.json.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from contracts.errors import BadInput
from stack.artifacts import CHECKPOINTS_DIR, DATA_MANIFEST, LOCK_FILE, RUN_CONFIG, lock_holder


@dataclass
class _Scope:
    """One command running in this process (a command may run another in-process: the options
    matrix runs its cells): the directories it holds because it writes under them (`claimed`, until
    it ends) and those its own `exclusive` blocks hold right now."""

    command: str
    claimed: dict[Path, TextIO] = field(default_factory=dict)
    exclusive: set[Path] = field(default_factory=set)


_SCOPES: list[_Scope] = []


def _ours(directory: Path, claimed_only: bool = False) -> bool:
    """Whether a command running in this process holds `directory` already."""
    return any(directory in s.claimed or (not claimed_only and directory in s.exclusive) for s in _SCOPES)


def _held_by(path: Path, what: str | None = None) -> str:
    """'pid N, COMMAND' for a refusal: the holder's own command, as its lock file names it (else
    `what`, when given)."""
    pid, command = lock_holder(path)
    named = command or what
    return f"pid {pid}" if named is None else f"pid {pid}, {named}"


def _mark(handle: TextIO, what: str) -> None:
    """Write this process's pid and command into the lock file it holds."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {what}\n")
    handle.flush()


def _release(handle: TextIO) -> None:
    handle.seek(0)
    handle.truncate()
    handle.flush()
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


@contextmanager
def exclusive(directory: Path, what: str) -> Iterator[str | None]:
    """Hold DIR/.lock for the block; yields a note when a dead writer's lock file was taken over.

    Refuses (BadInput, one line) while another live process holds it. `what` names the command
    ("stack train", "stack prepare"), for the lock file and for the message.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if _ours(key, claimed_only=True):  # this command writes under it already, and holds it
        yield None
        return
    path = directory / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(
                f"{directory} is being written by another process ({_held_by(path, what)}); "
                "wait for it to finish or stop it first"
            ) from None
        previous, _ = lock_holder(path)
        note = None
        if previous not in ("unknown", str(os.getpid())):
            note = f"took over {path}: its previous holder (pid {previous}) is gone"
        _mark(handle, what)
        scope = _SCOPES[-1] if _SCOPES else _Scope(what)
        scope.exclusive.add(key)
        try:
            yield note
        finally:
            scope.exclusive.discard(key)
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def is_one_writer_dir(directory: Path) -> bool:
    """Whether `directory` is written in place by one writer at a time: it holds that writer's lock
    file beside what the writer writes there (a run's config.toml or checkpoints/, a DATA_DIR's
    manifest.json). A stray `.lock` of some other program's makes no directory one."""
    directory = Path(directory)
    if not (directory / LOCK_FILE).is_file():
        return False
    return (
        (directory / RUN_CONFIG).is_file()
        or (directory / CHECKPOINTS_DIR).is_dir()
        or (directory / DATA_MANIFEST).is_file()
    )


def one_writer_dirs(path: Path, itself: bool = False) -> list[Path]:
    """The one-writer directories `path` lies in, innermost first (`path` itself too, with `itself`:
    an output whose entries are made in `path`)."""
    resolved = Path(path).resolve()
    candidates = [resolved, *resolved.parents] if itself else list(resolved.parents)
    return [directory for directory in candidates if is_one_writer_dir(directory)]


def claim_under(path: Path, option: str, itself: bool = False) -> None:
    """Take, for the rest of this command, the lock of every one-writer directory output `path`
    lies in (with `itself`, `path` too), and refuse while another process holds one: ONE writer per
    run directory, whatever the output. Outside a command (`command_scope`) it only checks."""
    for owner in one_writer_dirs(path, itself):
        if _ours(owner):
            continue
        lock = owner / LOCK_FILE
        handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held until the command ends
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            where = "is" if Path(path).resolve() == owner else f"lies in {owner}, which is"
            raise BadInput(
                f"{option} {path} {where} being written by another process ({_held_by(lock)}): "
                f"one writer per directory; wait for it to finish, or choose another {option} outside it"
            ) from None
        if not _SCOPES:
            _release(handle)
            continue
        _mark(handle, _SCOPES[-1].command)
        _SCOPES[-1].claimed[owner] = handle


def running_command(default: str) -> str:
    """The command whose block this is (`command_scope`: "stack sft"), or `default` outside one."""
    return _SCOPES[-1].command if _SCOPES else default


@contextmanager
def command_scope(command: str) -> Iterator[None]:
    """The block of one command (`command` names it, "stack trace"): the locks `claim_under` takes
    for it are held until the block ends, then released."""
    scope = _Scope(command)
    _SCOPES.append(scope)
    try:
        yield
    finally:
        _SCOPES.pop()  # scopes nest: this block's is the last
        for handle in scope.claimed.values():
            _release(handle)
