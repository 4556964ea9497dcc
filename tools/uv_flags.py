#!/usr/bin/env python3
"""`python tools/uv_flags.py`: pip's package sources on this machine, as `uv pip install` flags.

The Makefile builds .venv with uv, which installs the same packages as pip in a fraction of the
time (about 30 s against 90 s on the 2-core CI machine, bytecode compiled by both). uv does
not read pip's configuration, so a machine that points pip at a mirror, a wheel folder or a
constraints file would silently install from elsewhere; this prints those settings as uv's flags
(one per line, for the shell to split), read from `pip config list`, where pip's own precedence
between files and PIP_* variables is already applied.

It runs before anything is installed, so it uses the standard library only.
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip's setting -> uv's flag; a value pip reads as a whitespace-separated list gives one flag each.
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}
# pip's scopes from weakest to strongest: a later one replaces an earlier one's value.
SCOPES = ("global", "user", "site", ":env:")


def pip_settings(listing: str) -> dict[str, str]:
    """{setting: value} from `pip config list` output (`scope.setting='value'` per line)."""
    found: dict[tuple[int, str], str] = {}
    for line in listing.splitlines():
        key, _, quoted = line.partition("=")
        scope, _, setting = key.rpartition(".")
        if scope in SCOPES and quoted:
            found[(SCOPES.index(scope), setting)] = ast.literal_eval(quoted)
    return {setting: value for (_, setting), value in sorted(found.items())}


def uv_flags(settings: dict[str, str]) -> list[str]:
    """uv's flags for pip's settings; pip looks in every index for the best match, so uv does too."""
    flags = ["--index-strategy", "unsafe-best-match"]
    for setting, flag in FLAGS.items():
        for value in settings.get(setting, "").split():
            flags += [flag, value]
    if "cert" in settings:  # a certificate bundle of the system: uv reads the system's store
        flags.append("--native-tls")
    return flags


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    print("\n".join(uv_flags(pip_settings(listing))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
