"""A directory tree as content: what a refused or failed command must leave byte-identical.

The reliability tests take one before and one after a command and compare them; the fuzz suite,
which watches the whole repository, uses a cheaper size-and-mtime walk of its own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root`, hidden ones included → sha256 of a file, 'dir', or a link's target."""
    entries = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = f"link -> {os.readlink(path)}"
            else:
                entries[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return entries
