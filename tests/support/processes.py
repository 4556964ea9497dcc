"""The processes a test started, read from /proc as they are now (Linux): what it signals or kills."""

from __future__ import annotations

import contextlib
from pathlib import Path


def children(pid: int) -> list[int]:
    """The ids of process `pid`'s children, over all its threads; a thread that ends meanwhile is
    passed over."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found
