"""Judges refuse missing evidence: each gate declares the measured keys of its checks, and an absent
key, an empty collection where items are required, or a check with only some of its values is
Malformed, never a pass."""

from __future__ import annotations

import pytest

from contracts.judges import CHECKS, JUDGES, judge
from contracts.spec import GateStatus, load_spec


@pytest.mark.holds("GATE-INTEG-001")
def test_every_gate_of_the_spec_has_a_judge_that_declares_its_checks() -> None:
    spec = load_spec()
    active = sorted(g for g, gate in spec.gates.items() if gate.status is GateStatus.ACTIVE)
    assert [g for g in active if g not in JUDGES] == []
    assert [g for g in active if not CHECKS.get(g) or not all(CHECKS[g].values())] == []


@pytest.mark.gate("GATE-HQQ-001")
def test_an_empty_collection_where_items_are_required_is_malformed() -> None:
    found = judge("GATE-HQQ-001", {"matrices": []})
    assert found and "no items to judge" in found[0]
    assert judge("GATE-HQQ-001", {"matrices": [{"matrix": "m", "hqq_error": 1.0, "rtn_error": 1.0}]}) == []


@pytest.mark.gate("GATE-TRAIN-002")
def test_a_check_with_some_of_its_own_values_but_not_all_is_malformed() -> None:
    """The clip check's own key without the clip: not a check that ran and held."""
    found = judge("GATE-TRAIN-002", {"post_clip_norm": 0.5})
    assert found and "check clip has post_clip_norm but lacks clip_norm" in found[0]
    assert judge("GATE-TRAIN-002", {"post_clip_norm": 0.5, "clip_norm": 1.0}) == []


@pytest.mark.gate("GATE-TRAIN-002")
def test_undecayed_matrices_beside_no_matrix_decay_fire_rather_than_crash_the_judge() -> None:
    """A record whose matrix decay is None (a LoRA run's) yet counts undecayed matrices contradicts
    itself: the judge says so, where formatting the None once stopped the whole check."""
    decay = {"decayed_vectors": 0, "matrix_weight_decay": None}
    found = judge("GATE-TRAIN-002", {**decay, "undecayed_matrices": 1})
    assert found and "1 weight matri(x/ces) outside decoupled weight decay (smallest decay none" in found[0]
    assert judge("GATE-TRAIN-002", {**decay, "undecayed_matrices": 0}) == []


@pytest.mark.gate("GATE-EVAL-002")
def test_values_of_no_check_are_malformed() -> None:
    found = judge("GATE-EVAL-002", {"unrelated": 1})
    assert found and "none of the checks' values are present" in found[0]
    assert judge("GATE-EVAL-002", {"heldout_stderr": 0.05}) == []


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_streak_over_no_scores_is_malformed() -> None:
    found = judge("GATE-TRAIN-005", {"recent_scores": []})
    assert found and "'recent_scores' is []" in found[0]
    assert judge("GATE-TRAIN-005", {"recent_scores": [90.0]}) == []
