"""A directory tree as content: what a refused or failed command must leave byte-identical.

The reliability tests take one before and one after a command and compare them; the fuzz suite,
which watches the whole repository, uses a cheaper size-and-mtime walk of its own. `unwritable`
makes the directory a command must be refused for, whoever runs the tests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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


@contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """A new directory this user cannot create files in. Root ignores modes (the kernel's access
    check grants it everything), so for root it is made immutable (`chattr +i`), which binds root
    too; where that cannot be done the test is skipped, saying why."""
    directory.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr +i: no directory is unwritable")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
