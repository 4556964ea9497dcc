"""Whether a path can take an output, checked before any work so that a refusal changes nothing.

Every command that writes asks here about each path it was given to write (`--out`, `--resume`,
`--save`, `--json`, `--evidence-dir`, ...), and each refusal is one line naming the option, the
path, the problem and the way out:

- a name that is not UTF-8: the evidence record names every path it wrote, and JSON cannot;
- a symbolic link: an output is written at a real path, never through a link (a link to
  somewhere else would be replaced by a directory, or be written through without the user
  seeing where); the refusal names the link's target, which can be given instead;
- something else in the way: a file where a directory goes (or a directory, a device or a pipe
  where a file goes), or a file where one of its parent directories would have to be made;
- a directory this user cannot create files in: the one the output's entries are made in.

Which directory that is depends on how the output is written, the one deliberate difference
between commands (`into`): a command that writes into an existing directory (a run it resumes,
a DATA_DIR it replaces files in, a ledger it files into) needs that directory itself; one that
builds its output beside and renames it into place (stack.outputs.staging) needs its parent.
A path that does not exist yet needs the nearest directory above it that does.

A path that lies in a directory one writer writes in place (a run directory, a DATA_DIR) can
take an output only from that writer: the check takes that directory's lock for the rest of the
command, and refuses while another process holds it (stack.outputs.lock.claim_under).

Permission is asked of the kernel (`os.access`), which answers for the real user: a superuser
may write anywhere but into an immutable directory (`chattr +i`), and is refused only there.
"""

from __future__ import annotations

import os
from pathlib import Path

from contracts.errors import BadInput
from stack.outputs.lock import claim_under


def utf8_problem(text: str) -> str | None:
    """Why `text` cannot be named in a JSON record (bytes that are not UTF-8), or None.

    Python hands argv bytes that do not decode as lone surrogates; a path holding them is valid on
    Linux, but the record could not hold it, and would fail after the work.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"holds bytes that are not UTF-8 (at character {exc.start}); "
            "the evidence record can only name UTF-8 paths: rename it"
        )
    return None


def check_directory(path: Path, option: str, into: bool = False, locks_itself: bool = False) -> Path | None:
    """Refuse a directory output `path` that cannot be written (module docstring); returns the
    topmost directory that writing it will create, None when `path` exists. `locks_itself`: the
    command takes `path`'s own lock (an in-place writer, stack.outputs.rundir), so only the
    directories above it are claimed here."""
    path = Path(path)
    _check_name(path, option)
    if path.exists():
        if not path.is_dir():
            raise BadInput(f"{option} {path} exists and is not a directory; choose another {option}")
        receiving = path if into else path.absolute().parent
        _check_writable(receiving, path, option, os.R_OK if into else 0)
        claim_under(path, option, itself=into and not locks_itself)
        return None
    created = _check_creatable(path, option)
    claim_under(path, option)
    return created


def check_file(path: Path, option: str) -> Path | None:
    """Refuse a file output `path` that cannot be written (module docstring); returns the topmost
    directory that writing it will create. The file itself is replaced by a rename, so it is its
    directory that must take new entries."""
    path = Path(path)
    _check_name(path, option)
    if path.exists():
        if not path.is_file():
            raise BadInput(
                f"{option} {path} exists and is not a regular file (a directory, a device, a pipe); "
                f"choose another {option}"
            )
        _check_writable(path.absolute().parent, path, option)
        claim_under(path, option)
        return None
    created = _check_creatable(path, option)
    claim_under(path, option)
    return created


def _check_name(path: Path, option: str) -> None:
    problem = utf8_problem(str(path))
    if problem is not None:
        raise BadInput(f"{option} {str(path)!r} {problem}")
    if path.is_symlink():
        target = os.readlink(path)
        missing = "" if path.exists() else ", which does not exist"
        raise BadInput(
            f"{option} {path} is a symbolic link to {target}{missing}; an output is written at a real "
            f"path, never through a link: give that path, or choose another {option}"
        )


def _check_creatable(path: Path, option: str) -> Path:
    """The topmost directory that creating `path` makes; refused when a non-directory stands in the
    way or the nearest existing directory does not let this user create files."""
    created = path.absolute()
    for parent in created.parents:
        if parent.exists() or parent.is_symlink():
            break
        created = parent
    above = created.parent
    if not above.is_dir():
        what = "a file" if above.is_file() else "not a directory"
        raise BadInput(f"{option} {path} cannot be created: {above} is {what}; choose another {option}")
    _check_writable(above, path, option)
    return created


def _check_writable(directory: Path, path: Path, option: str, also: int = 0) -> None:
    if not os.access(directory, os.W_OK | os.X_OK | also):
        raise BadInput(
            f"{option} {path} is not writable: {directory} does not let this user create files; "
            f"fix its permissions or choose another {option}"
        )
