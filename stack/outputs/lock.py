"""One writer per directory: an advisory lock held for as long as a command writes there.

Two `stack train --out r` at once used to interleave their metrics and leave a record that
named one run's seed and the other's checkpoint. A command that writes into a run directory
(or a prepared DATA_DIR) takes `DIR/.lock` first: an exclusive `flock`, which the kernel
releases when the process dies, so a lock can never outlive its holder. The file also names the
holder's pid, so the refusal can say who holds it; a file left by a dead process is simply taken
over, and the caller is told.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contracts.errors import BadInput
from stack.artifacts import LOCK_FILE


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def exclusive(directory: Path, what: str) -> Iterator[str | None]:
    """Hold DIR/.lock for the block; yields a note when a dead writer's lock file was taken over.

    Refuses (BadInput, one line) while another live process holds it. `what` names the command
    for the message ("stack train", "stack prepare").
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(
                f"{directory} is being written by another process (pid {_holder(path)}, {what}); "
                "wait for it to finish or stop it first"
            ) from None
        previous = _holder(path)
        note = None
        if previous not in ("unknown", str(os.getpid())):
            note = f"took over {path}: its previous holder (pid {previous}) is gone"
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield note
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()
