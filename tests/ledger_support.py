"""Planting a tampering in a copy of one ledger record, and asking the integrity check about it.

A forger edits a record and then re-hashes every artifact it cites, so the checksums still
match; what must catch the edit is the record's truth. The tests of re-derivation share these.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from check_integrity import run_checks

from contracts.evidence import EVIDENCE_FILE, LEDGER_DIR

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / LEDGER_DIR
Change = Callable[[dict[str, Any], Path], None]


def planted(tmp_path: Path, run: str, change: Change, rehash: bool = True) -> Path:
    """A copy of ledger record `run` with `change` applied to its JSON (and its directory), every
    cited artifact re-hashed as a forger would; returns the copy's directory."""
    target = tmp_path / run
    shutil.copytree(LEDGER / run, target)
    path = target / EVIDENCE_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data, target)
    for art in data["artifacts"] if rehash else []:
        file = (target / art["path"]).resolve()
        if file.is_file() and file.is_relative_to(target):
            art.update(sha256=hashlib.sha256(file.read_bytes()).hexdigest(), bytes=file.stat().st_size)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return target


def findings(run_dir: Path) -> list[str]:
    """What the integrity check reports of one run directory, as printed lines."""
    return [f.line() for f in run_checks(ROOT, [run_dir], runs_only=True).violations]


def assert_caught(run_dir: Path, *fragments: str) -> None:
    found = findings(run_dir)
    assert any(all(f in line for f in fragments) for line in found), "\n".join(found) or "(nothing found)"


def gate(data: dict[str, Any], gate_id: str) -> dict[str, Any]:
    return next(g for g in data["gates"] if g["id"] == gate_id)


def log_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def write_log(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
