"""The coherence monitor halts a degenerate model and catches a training path that never samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.coherence import coherence_score
from contracts.errors import GateViolation
from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.train.coherence import CoherenceMonitor

GATE = "GATE-TRAIN-005"
FLOOR = load_spec().threshold(GATE, "min_coherence_score")
MAX_LOW = load_spec().threshold(GATE, "max_consecutive_low")
ROOT = Path(__file__).resolve().parents[2]

DEGENERATE = {
    "empty": "",
    "one word repeated": "the the the the",
    "one letter": "aaaaaaa",
    "long run of one letter": "a" * 500,
    "two tokens alternating": "ab " * 100,
    "sentence loop": "the cat sat on the mat. " * 20,
    "code loop": "def f(x):\n    return x\n" * 15,
}

ORDINARY = {
    "sentence": "The cat sat on the mat.",
    "prose": (
        "Early stopping needs a patience of several evaluations, because a single noisy held-out "
        "score says little about where the loss is going. A run stopped too soon loses everything "
        "it would have learnt after, and nobody notices the missing quality."
    ),
    "python": (
        "def mean_and_stderr(losses):\n"
        "    if len(losses) < 2:\n"
        "        raise ValueError('need two losses')\n"
        "    mean = sum(losses) / len(losses)\n"
        "    var = sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)\n"
        "    return mean, (var / len(losses)) ** 0.5\n"
    ),
    "a whole python module": (ROOT / "contracts" / "ledger.py").read_text(encoding="utf-8"),
}


@pytest.mark.parametrize("text", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_text_scores_below_the_floor(text: str) -> None:
    assert coherence_score(text) < FLOOR


@pytest.mark.parametrize("text", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_text_scores_well_above_the_floor(text: str) -> None:
    assert coherence_score(text) > FLOOR + 20


@settings(max_examples=60)
@given(st.text(max_size=300))
def test_score_stays_in_0_to_100(text: str) -> None:
    assert 0.0 <= coherence_score(text) <= 100.0


def test_case_does_not_hide_repetition() -> None:
    assert coherence_score("The the THE tHe the") < FLOOR


@pytest.mark.gate(GATE)
def test_a_streak_of_degenerate_samples_halts_the_run() -> None:
    """Plant a model stuck on one token: its samples score low until the gate fires."""
    monitor = CoherenceMonitor()
    stuck_sample = "the " * 48
    for step in range(MAX_LOW - 1):
        monitor.observe(coherence_score(stuck_sample), step=step * 50)
    with pytest.raises(GateViolation) as info:
        monitor.observe(coherence_score(stuck_sample), step=999)
    assert info.value.gate_id == GATE
    assert len(info.value.measured["recent_scores"]) == MAX_LOW
    assert info.value.threshold["max_consecutive_low"] == MAX_LOW
    assert monitor.history[-1][0] == 999  # the sample that fired is on record


def test_a_coherent_sample_resets_the_streak() -> None:
    monitor = CoherenceMonitor()
    ledger = Ledger()
    with recording(ledger):
        for step in range(MAX_LOW - 1):
            monitor.observe(FLOOR - 1, step)
        monitor.observe(FLOOR, step=100)  # exactly at the floor is not low
        assert monitor.consecutive_low == 0
        for step in range(MAX_LOW - 1):
            monitor.observe(0.0, step=200 + step)
    assert monitor.consecutive_low == MAX_LOW - 1
    assert ledger.results[GATE].verdict is Verdict.PASS


@pytest.mark.gate(GATE)
def test_a_training_path_that_never_samples_is_caught() -> None:
    """Plant a loop that trains past the cadence and never calls observe: require_ran refuses it."""
    monitor = CoherenceMonitor()
    with pytest.raises(GateViolation, match="skips the coherence monitor") as info:
        monitor.require_ran(total_steps=200, sample_every=50)
    assert info.value.measured["samples_scored"] == 0


@pytest.mark.gate(GATE)
def test_switching_sampling_off_is_caught() -> None:
    with pytest.raises(GateViolation, match="switched off"):
        CoherenceMonitor().require_ran(total_steps=10, sample_every=0)


def test_require_ran_passes_a_sampled_or_short_run() -> None:
    monitor = CoherenceMonitor()
    monitor.require_ran(total_steps=49, sample_every=50)  # never due a sample
    assert not monitor.observed_any
    monitor.observe(80.0, step=50)
    assert monitor.observed_any
    monitor.require_ran(total_steps=200, sample_every=50)


def _run(monitor: CoherenceMonitor, scores: list[float], first_step: int) -> list[bool]:
    """Observe each score; True where the gate fired."""
    fired = []
    for offset, score in enumerate(scores):
        try:
            monitor.observe(score, step=first_step + offset)
            fired.append(False)
        except GateViolation:
            fired.append(True)
    return fired


@settings(max_examples=60)
@given(st.lists(st.floats(0.0, 100.0), max_size=30), st.data())
def test_state_round_trips_through_json(scores: list[float], data: st.DataObject) -> None:
    """Stopping, saving to JSON and resuming continues exactly as an uninterrupted monitor."""
    cut = data.draw(st.integers(0, len(scores)))
    straight = CoherenceMonitor()
    expected = _run(straight, scores, 0)

    first = CoherenceMonitor()
    fired = _run(first, scores[:cut], 0)
    resumed = CoherenceMonitor()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    fired += _run(resumed, scores[cut:], cut)

    assert fired == expected
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.history == straight.history
