"""Tamperings the checker derives from what the
repository holds: each is planted in a copy of a committed record of spec 1.29.0, its artifacts
re-hashed as a forger would, and the integrity check must name it; the copy as filed passes.

- a fine-tune's epoch plans said drawn from another seed than the run's;
- a prepare's dedup rechecks said judged at another Jaccard threshold than its settings (on a
  fresh record, tests/integrity/test_integrity_results.py, the
  ledger's being stale under GATE-DATA-013 rev 5);
- an export naming another end-of-text id than its committed checkpoint's tokenizer has;
- a lens reading restated for another prompt of the same length;
- a patching cell that wrote nothing said to have recovered part of the score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import canonical_sha256
from tests.support.ledger_support import (
    EXPORT_RUN,
    FINETUNE_RUN,
    LENS_RUN,
    PATCH_RUN,
    PREPARE_RUN,
    findings,
    gate,
    planted,
)


def _plan_seed(data: dict[str, Any], _run_dir: Path) -> None:
    gate(data, "GATE-DATA-002")["measured"]["plan_seed"] = 7


def _end_of_text_zero(data: dict[str, Any], run_dir: Path) -> None:
    measured = gate(data, "GATE-EXPORT-001")["measured"]
    measured["eot_id"] = 0
    measured["special_ids"] = dict.fromkeys(measured["special_ids"], 0)
    path = run_dir / "export.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    report["eot_id"], report["special_ids"] = 0, dict.fromkeys(report["special_ids"], 0)
    path.write_text(json.dumps(report), encoding="utf-8")


def _another_prompt(data: dict[str, Any], _run_dir: Path) -> None:
    data["run"]["argv"] = [word.replace("def main():", "def test():") for word in data["run"]["argv"]]
    data["config"]["prompt"] = "def test():"
    data["config_sha256"] = canonical_sha256(data["config"])


def _unwritten_cell(data: dict[str, Any], run_dir: Path) -> None:
    """The cell of layers.0.output at position 7 (where the prompts part) said to have written
    nothing, its recovery of 0.157 kept; trace.json left as it was."""
    cell = next(
        c
        for c in gate(data, "GATE-PATCH-002")["measured"]["cells"]
        if (c["site"], c["position"]) == ("layers.0.output", 7)
    )
    cell["written"][0]["changed"] = []
    cell["clean_unlike_corrupted"] = 0


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "says"),
    [
        (FINETUNE_RUN, _plan_seed, "gates[GATE-DATA-002].measured.plan_seed is 7"),
        (EXPORT_RUN, _end_of_text_zero, "gates[GATE-EXPORT-001].measured.eot_id is 0, but the tokenizer of"),
        (
            LENS_RUN,
            _another_prompt,
            "trace.json: its tokens spell 'def main():', but config.prompt is 'def test():'",
        ),
        (PATCH_RUN, _unwritten_cell, "layers.0.output at position 7 wrote nothing, yet scored"),
    ],
    ids=["plan-seed", "end-of-text", "prompt", "unwritten-cell"],
)
def test_a_fact_the_repository_decides_restated_otherwise_is_caught(
    tmp_path: Path, run: str, change: Any, says: str
) -> None:
    found = findings(planted(tmp_path, run, change))
    assert any(says in line for line in found), "\n".join(found) or "(nothing found)"


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("run", [FINETUNE_RUN, PREPARE_RUN, EXPORT_RUN, LENS_RUN, PATCH_RUN])
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _data, _dir: None)) == []
