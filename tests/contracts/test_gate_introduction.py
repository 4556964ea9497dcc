"""A record cannot have judged a gate that came after it: stale, not a lie; a release likewise.

Spec 1.7.0 made GATE-TRAIN-007 a gate of every training kind. The ledger's records of 1.6.0 and
before lack it: the checker reports them stale for it (a warning), while a record that claims a
spec that had the gate and lacks it is a violation. A model released under an older spec is not
asked for it either; `stack release`, releasing under today's spec, is.
"""

from __future__ import annotations

import pytest

from contracts.evidence import REPO_ROOT, read_evidence
from contracts.release_rules import release_problems
from contracts.spec import load_spec
from tools.integrity.record_checks import check_record_truth

RUNS = REPO_ROOT / "tests" / "fixtures" / "records"


@pytest.mark.holds("GATE-INTEG-001")
def test_a_record_made_before_a_gate_existed_is_stale_for_it_and_one_made_after_is_not_excused() -> None:
    spec = load_spec()
    record = read_evidence(RUNS / "ft-demo" / "metadata.json")
    assert record.run.kind == "finetune" and "GATE-TRAIN-007" not in {g.id for g in record.gates}
    assert spec.introduced_after("GATE-TRAIN-007", record.spec.version) == "1.7.0"
    findings = check_record_truth(record, RUNS / "ft-demo", spec)
    assert "GATE-TRAIN-007" in findings.stale and not findings.violations
    record.spec.version = "1.7.0"
    findings = check_record_truth(record, RUNS / "ft-demo", spec)
    assert "a completed finetune run must judge GATE-TRAIN-007; it is missing" in findings.violations


@pytest.mark.holds("GATE-INTEG-001")
def test_a_release_is_held_to_the_gates_of_its_spec_and_a_new_one_to_todays() -> None:
    spec = load_spec()
    record = read_evidence(RUNS / "demo-reference-20261122-spec-1.2.0" / "metadata.json")
    stale = {"GATE-TRAIN-007": "the gate came in spec 1.7.0, after the record's"}
    then = release_problems(spec, record, stale, [], record.code.git_sha, released_under="1.2.0")
    assert not any("GATE-TRAIN-007" in problem for problem in then)
    now = release_problems(spec, record, stale, [], record.code.git_sha)
    assert "did not judge GATE-TRAIN-007" in now


@pytest.mark.holds("GATE-INTEG-001")
def test_a_release_stands_on_the_revisions_in_force_when_it_was_made() -> None:
    """GATE-TRAIN-002 rev 3 (1.7.0) came after the demo model's release under 1.2.0: its record's
    rev-2 verdict was current then, so the entry stands; a verdict older than the revision in force
    at the release, or a release made now, is stale all the same."""
    from contracts.release_rules import stale_gates

    spec = load_spec()
    record = read_evidence(RUNS / "demo-reference-20261122-spec-1.2.0" / "metadata.json")
    stale = stale_gates(record, spec)
    assert "GATE-TRAIN-002" in stale and spec.revision_at("GATE-TRAIN-002", "1.2.0") == 2
    then = release_problems(spec, record, stale, [], record.code.git_sha, released_under="1.2.0")
    assert not any("GATE-TRAIN-002" in problem for problem in then)
    now = release_problems(spec, record, stale, [], record.code.git_sha)
    assert any("GATE-TRAIN-002 is stale" in problem for problem in now)
    older = next(g for g in record.gates if g.id == "GATE-TRAIN-002")
    older.revision = 1  # judged under a revision that was already replaced when the model was released
    then = release_problems(spec, record, stale, [], record.code.git_sha, released_under="1.2.0")
    assert any("GATE-TRAIN-002 is stale" in problem for problem in then)
