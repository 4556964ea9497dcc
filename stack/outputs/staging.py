"""An output assembled out of sight and moved into place at once, so nobody sees half of it.

Three ways, by what the output is:

- a directory that is one artifact (an export, an import, a surgery's or a merge's run-like
  directory, a trace record) is built in a hidden sibling, `.NAME.tmp-<pid>`, and renamed into
  place (`beside`, `swap_in`): a reader sees no directory or the whole of it. An earlier output
  that --force replaces is set aside first, and removed only once the new one is in place;
- files published into a directory that holds more than them (a DATA_DIR) are staged in a
  hidden directory inside it, named for the writer's pid, and renamed in one by one with SIGINT
  and SIGTERM held back, the file that vouches for the others last (`move_in`): a publish is
  never cut by ^C, and one killed outright leaves only files that one of the two records vouches
  for, plus its staging directory, which the next writer recognises by its dead pid;
- a single file is written under a temporary name beside it and renamed over it (`file_beside`;
  contracts.evidence.atomic_write_bytes for bytes in hand).

Both renames stay on one file system (beside the output, or inside it), so each is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from contracts.errors import BadInput


def alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts as alive): a staging directory or a
    checkpoint being written whose pid is gone was left by a writer that died."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid can be that large
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def beside(out: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `out` to build it in; removed if the block raises."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an earlier crash of this process id
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_beside(path: Path) -> Iterator[Path]:
    """A temporary name beside the output file `path` for a writer that takes a path (safetensors);
    renamed to `path` when the block ends, removed if it raises, so `path` is old or whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def swap_in(tmp: Path, out: Path, recheck: Callable[[], None]) -> None:
    """Move the built directory `tmp` into place as `out`.

    An `out` that exists now is first checked again by `recheck` (files may have been added while
    the command ran; it refuses what may not be replaced), then set aside, the new one renamed in,
    and only then the old one removed.
    """
    out = Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return
    recheck()
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends: a ^C then lands after the last rename."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def move_in(staging: Path, out: Path, owned: Collection[str], last: str, who: str, option: str) -> None:
    """Move the files staged in `staging` into `out`, replacing only `owned` ones; `last` goes last.

    The files of `owned` that the new output does not have are removed first, so a publish killed
    half-way leaves only files that the old or the new record vouches for. `who` and `option` name
    the command in the refusal of a file that appeared meanwhile.
    """
    staged = sorted(
        (p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()),
        key=lambda rel: (rel == last, rel),
    )
    for rel in staged:
        target = out / rel
        if (target.exists() or target.is_symlink()) and rel not in owned:
            raise BadInput(
                f"refusing to replace {target}: it was not written by `{who}`; "
                f"move it away or choose another {option}"
            )
    with signals_held():
        for rel in sorted(set(owned) - set(staged)):
            (out / rel).unlink(missing_ok=True)
        for rel in staged:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)


# How safetensors (Rust) reports the operating system's refusal of a write: "... (os error 28)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """The operating system's refusal `exc` reports (itself when it is an OSError, or one a library
    reported only as text, as safetensors does), None for any other failure: a disk that filled
    while a .safetensors file was written is the disk's problem, not a malformed file."""
    if isinstance(exc, OSError):
        return exc
    found = _OS_ERROR.search(str(exc))
    if found is None or int(found[1]) not in errno.errorcode:
        return None
    return OSError(int(found[1]), os.strerror(int(found[1])))
