"""Which files a `stack prepare --glob PATTERN` may read: the statute GATE-DATA-014's check `inputs`
measures the files read against, apart from the walk that found them (stack.data.corpus).

A file given as an INPUT itself is read whatever the pattern; a file found below a directory
INPUT is read only when its path below that directory, '/'-separated, matches the pattern as
`PurePosixPath.match` matches (a pattern without '/' matches the name at any depth: '*.py' takes
`pkg/mod.py`). Without --glob every file matches.
"""

from __future__ import annotations

from pathlib import PurePosixPath


def glob_admits(name: str, pattern: str | None) -> bool:
    """Whether `pattern` (None: no --glob) admits a file found at `name` below a directory input."""
    return pattern is None or PurePosixPath(name).match(pattern)
