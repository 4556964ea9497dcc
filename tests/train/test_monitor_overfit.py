"""Held-out loss rising while train loss falls is detected after the window and warned about."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.train.overfit import OverfitDetector

GATE = "GATE-EVAL-004"
WINDOW = load_spec().threshold(GATE, "overfit_window_evals")


def _overfitting_curve(n: int) -> list[tuple[float, float]]:
    """(train, held-out) losses that diverge at every evaluation after the first."""
    return [(2.0 - 0.1 * i, 2.5 + 0.05 * i) for i in range(n)]


@pytest.mark.gate(GATE)
def test_overfitting_is_recorded_as_a_warning() -> None:
    """Plant a run whose held-out loss rises while train loss falls: a WARN after the window."""
    detector = OverfitDetector()
    ledger = Ledger()
    curve = _overfitting_curve(WINDOW + 2)
    with recording(ledger):
        flags = [
            detector.observe(train, heldout, step=100 * i) for i, (train, heldout) in enumerate(curve[:-1])
        ]
        # The first evaluation has nothing to compare with, so WINDOW diverging evals end at index WINDOW.
        assert flags == [False] * WINDOW + [True]
        result = ledger.results[GATE]
        assert (result.verdict, result.measured, result.step) == (
            Verdict.WARN,
            {"diverging_evals": WINDOW},
            100 * WINDOW,
        )
        assert detector.observe(*curve[-1], step=100 * (WINDOW + 1))  # still overfitting, still no halt
    assert detector.detected_at_step == 100 * WINDOW


def test_a_short_divergence_is_not_overfitting() -> None:
    detector = OverfitDetector()
    ledger = Ledger()
    curve = _overfitting_curve(WINDOW)  # one diverging evaluation too few
    curve.append((curve[-1][0] + 0.1, curve[-1][1] + 0.1))  # train loss rises too: not overfitting
    curve += [(curve[-1][0] - 0.1 * i, curve[-1][1] + 0.1 * i) for i in range(1, WINDOW)]
    with recording(ledger):
        flags = [detector.observe(train, heldout, step=i) for i, (train, heldout) in enumerate(curve)]
    assert not any(flags) and detector.detected_at_step is None
    assert ledger.results[GATE].verdict is Verdict.PASS


def test_detection_keeps_the_first_step() -> None:
    detector = OverfitDetector()
    for i, (train, heldout) in enumerate(_overfitting_curve(WINDOW + 1)):
        detector.observe(train, heldout, step=i)
    detector.observe(0.1, 0.1, step=50)  # recovered
    for i, (train, heldout) in enumerate(_overfitting_curve(WINDOW + 1)):
        detector.observe(train - 5.0, heldout, step=60 + i)
    assert detector.detected_at_step == WINDOW


def _run(detector: OverfitDetector, evals: list[tuple[float, float]], first_step: int) -> list[bool]:
    return [detector.observe(train, heldout, first_step + i) for i, (train, heldout) in enumerate(evals)]


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=25), st.data())
def test_state_round_trips_through_json(grid: list[tuple[int, int]], data: st.DataObject) -> None:
    """Saving to JSON mid-streak and resuming detects exactly what an uninterrupted detector detects."""
    evals = [
        (train / 2, heldout / 2) for train, heldout in grid
    ]  # a coarse grid makes ties and streaks common
    cut = data.draw(st.integers(0, len(evals)))
    straight = OverfitDetector()
    expected = _run(straight, evals, 0)

    first = OverfitDetector()
    flags = _run(first, evals[:cut], 0)
    resumed = OverfitDetector()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    flags += _run(resumed, evals[cut:], cut)

    assert flags == expected
    assert resumed.state_dict() == straight.state_dict()
