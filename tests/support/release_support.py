"""What the tests of `stack release` share: the commit runs are recorded at, and the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from contracts.evidence import REPO_ROOT
from contracts.registry import REGISTRY_FILE


def head() -> str:
    """This repository's HEAD: scratch runs are recorded as made there from a clean tree."""
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def release_argv(root: Path, run_dir: Path, name: str, version: str, *extra: str) -> list[str]:
    """`stack release` of `run_dir` (filed in root's ledger under its own name) into root's models
    and registry, with `extra` options after."""
    return [
        *("release", str(run_dir), "--ledger-record", str(root / "evidence/runs" / run_dir.name)),
        *("--name", name, "--version", version, "--models-dir", str(root / "evidence/models")),
        *("--registry", str(root / REGISTRY_FILE), *extra),
    ]
