"""Loss spikes are detected against the trailing window, recorded, and warned about without halting."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.train.spikes import SpikeDetector

GATE = "GATE-TRAIN-006"
SIGMA = load_spec().threshold(GATE, "spike_sigma")
WINDOW = int(load_spec().threshold(GATE, "spike_window_steps"))


def _noisy_losses(n: int, seed: int = 0) -> list[float]:
    """A loss curve with ordinary step-to-step noise, no spike: uniform noise never reaches 4 sigma."""
    rng = random.Random(seed)
    return [2.0 + rng.uniform(-0.05, 0.05) for _ in range(n)]


@pytest.mark.gate(GATE)
def test_a_spike_is_recorded_as_a_warning_and_training_goes_on() -> None:
    """Plant one spike in a noisy curve: it is warned about and kept, never smoothed away."""
    detector = SpikeDetector()
    ledger = Ledger()
    with recording(ledger):
        flags = [detector.observe(loss, step) for step, loss in enumerate(_noisy_losses(WINDOW + 10))]
        assert not any(flags)
        assert ledger.results[GATE].verdict is Verdict.PASS
        assert detector.observe(9.0, step=WINDOW + 10)  # a warning gate: no exception
        assert not detector.observe(2.0, step=WINDOW + 11)
    result = ledger.results[GATE]
    assert result.verdict is Verdict.WARN
    assert (result.measured["loss"], result.measured["window_len"], result.step) == (9.0, WINDOW, WINDOW + 10)
    [spike] = detector.spikes
    assert spike["step"] == WINDOW + 10 and spike["loss"] == 9.0
    assert spike["loss"] > spike["mean"] + SIGMA * spike["std"]


def test_nothing_is_judged_before_the_window_is_full() -> None:
    detector = SpikeDetector()
    flags = [detector.observe(loss, step) for step, loss in enumerate(_noisy_losses(WINDOW - 1))]
    flags.append(detector.observe(1000.0, step=WINDOW - 1))
    assert not any(flags) and detector.spikes == []


def test_a_lasting_level_shift_stops_counting_once_the_window_has_seen_it() -> None:
    detector = SpikeDetector()
    for step, loss in enumerate(_noisy_losses(WINDOW)):
        detector.observe(loss, step)
    shifted = [
        detector.observe(loss + 1.0, WINDOW + step) for step, loss in enumerate(_noisy_losses(WINDOW, 1))
    ]
    assert shifted[0] and not shifted[-1]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        SpikeDetector().observe(bad, step=3)


def _run(detector: SpikeDetector, losses: list[float], first_step: int) -> list[bool]:
    return [detector.observe(loss, first_step + i) for i, loss in enumerate(losses)]


@settings(max_examples=40)
@given(st.lists(st.floats(1.0, 2.0), min_size=WINDOW + 1, max_size=WINDOW + 40), st.data())
def test_state_round_trips_through_json(losses: list[float], data: st.DataObject) -> None:
    """Saving the window to JSON and resuming flags exactly the spikes an uninterrupted run flags."""
    planted = data.draw(st.sets(st.integers(WINDOW, len(losses) - 1), max_size=3))
    losses = [loss + 100.0 if i in planted else loss for i, loss in enumerate(losses)]
    cut = data.draw(st.integers(0, len(losses)))
    straight = SpikeDetector()
    expected = _run(straight, losses, 0)
    assert any(expected) == bool(planted)  # the first planted spike is always far above the window

    first = SpikeDetector()
    flags = _run(first, losses[:cut], 0)
    resumed = SpikeDetector()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    flags += _run(resumed, losses[cut:], cut)

    assert flags == expected
    assert resumed.state_dict() == straight.state_dict()
