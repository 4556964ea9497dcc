"""The life of a model pretrained with the stack's BPE, through every command that makes a model
of it, with its own tokenizer all the way (docs/life-of-a-model.md walks it by hand).

The walk is tests/support/journey_support.py's, run once for the module. Beside the journey's own checks,
the integrity checker is shown rejecting a chain broken two ways: a parent's record left out of
the ledger, and a child that cites weights its parent's record does not vouch for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from contracts.evidence import EVIDENCE_FILE, REPO_ROOT
from stack.data.manifest import load_manifest
from tests.support.journey_support import Journey, JourneyChecks, assert_every_step_ran, walk
from tools.integrity.check import run_checks

INTEGRITY = "GATE-INTEG-001"


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    return walk(tmp_path_factory.mktemp("bpe"), "bpe")


class TestBpeJourney(JourneyChecks):
    def test_the_tokenizer_is_the_stack_s_bpe(self, journey: Journey) -> None:
        assert load_manifest(journey.dirs["prepare"]).tokenizer.name == "bpe"


def _violations(run_dirs: list[Path]) -> list[str]:
    return [f.message for f in run_checks(REPO_ROOT, run_dirs, runs_only=True).violations]


@pytest.mark.gate(INTEGRITY)
def test_a_parent_left_out_of_the_ledger_breaks_the_chain(journey: Journey) -> None:
    assert_every_step_ran(journey)
    without_sft = [d for d in journey.record_dirs() if d != journey.dirs["sft"]]
    assert any("its init parent's record 'sft' is not in the ledger" in v for v in _violations(without_sft))


@pytest.mark.gate(INTEGRITY)
def test_a_child_citing_other_weights_breaks_the_chain(journey: Journey, tmp_path: Path) -> None:
    assert_every_step_ran(journey)
    forged = tmp_path / "dpo"
    shutil.copytree(journey.dirs["dpo"], forged)
    record = json.loads((forged / EVIDENCE_FILE).read_text())
    record["lineage"]["parents"][0]["checkpoint_sha256"] = "0" * 64  # a model from some other sft
    (forged / EVIDENCE_FILE).write_text(json.dumps(record))
    dirs = [forged if d == journey.dirs["dpo"] else d for d in journey.record_dirs()]
    assert any("vouches for weights" in v and "not the 000000000000" in v for v in _violations(dirs))
