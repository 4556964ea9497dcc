"""GATE-DATA-002 rev 2: every epoch plan is a shuffle, and a fresh one each epoch.

The quota check of GATE-DATA-001 counts a plan's windows and cannot see their order, so a black-box
survey's two mutants trained silently: the plan left in corpus order, and the plan seeded without
its epoch, every epoch replaying the first one's order. Each is planted here in the real reader;
the boundary cases hold the stack's measurement of a plan at max_order_z (10) from both sides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from train_support import evidence, prepared, smoke_args, train

from contracts.errors import GateViolation
from stack.data import mixture
from stack.data.reader import TokenReader

# Windows of the boundary plans: 401 distinct ids, so a uniform shuffle puts a window right after
# the one before it 400/401 times per plan on average, with a binomial spread of about 1.
WINDOWS = 401


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("order"))


def _in_corpus_order(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The survey's M12: each source's quota concatenated and never shuffled."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        return np.sort(real(mix, seed, epoch))

    return plan


def _same_every_epoch(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The survey's M28: the plan seeded without its epoch."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        return real(mix, seed, 0)

    return plan


@pytest.mark.gate("GATE-DATA-002")
def test_a_plan_in_corpus_order_stops_stack_train_before_its_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mixture, "epoch_plan", _in_corpus_order(mixture.epoch_plan))
    out = tmp_path / "run"
    code = train(smoke_args(data, out))
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-002" in err and "Traceback" not in err, err
    assert "step 1/" not in err
    result = next(g for g in evidence(out)["gates"] if g["id"] == "GATE-DATA-002")
    assert result["verdict"] == "FAIL" and result["measured"]["order_z"] > 10


@pytest.mark.gate("GATE-DATA-002")
def test_an_epoch_in_the_first_epochs_order_stops_the_reader_when_it_wraps(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first epoch's plan is a shuffle and holds; the second, in the same order, is refused
    where the reader makes it."""
    monkeypatch.setattr(mixture, "epoch_plan", _same_every_epoch(mixture.epoch_plan))
    reader = TokenReader(data, batch_size=4, seq_len=16, seed=0)
    reader._plan(0)
    with pytest.raises(GateViolation, match="GATE-DATA-002") as fired:
        reader._plan(1)
    assert fired.value.measured["repeat_z"] > 10


def test_a_run_that_wraps_plans_every_epoch_afresh(data: Path, tmp_path: Path) -> None:
    """A run into the third epoch of the corpus: each plan was judged, each later one against the
    one before, and held."""
    out = tmp_path / "run"
    steps = 2 * TokenReader(data, batch_size=12, seq_len=64, seed=0).steps_per_epoch + 1
    sets = ["train.batch_size=12", "model.ctx=64", f"train.steps={steps}", f"eval.every={steps}"]
    assert train(smoke_args(data, out, *sets, f"ckpt.every={steps}", f"monitor.sample_every={steps}")) == 0
    result = next(g for g in evidence(out)["gates"] if g["id"] == "GATE-DATA-002")
    assert result["verdict"] == "PASS" and "repeat_z" in result["measured"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(line.get("event") == "wrap" for line in lines) >= 2


def _ordered_pairs(k: int) -> np.ndarray:
    """WINDOWS ids of which exactly `k` consecutive pairs are in corpus order: 0, 1, …, k, then the
    rest descending (each step −1, which is not corpus order)."""
    return np.concatenate([np.arange(k + 1), np.arange(WINDOWS - 1, k, -1)])


def _same_positions(k: int) -> tuple[np.ndarray, np.ndarray]:
    """A plan with no pair in corpus order (all descending) and a previous epoch's plan holding
    the same window at exactly its first `k` positions (the rest rotated by one)."""
    plan = np.arange(WINDOWS - 1, -1, -1)
    return plan, np.concatenate([plan[:k], np.roll(plan[k:], 1)])


@pytest.mark.parametrize(
    "pairs, fires",
    [
        pytest.param(11, True, marks=pytest.mark.gate("GATE-DATA-002")),
        pytest.param(10, False, marks=pytest.mark.holds("GATE-DATA-002")),
    ],
)
def test_pairs_in_corpus_order_just_beyond_max_order_z_fire_and_just_inside_hold(
    pairs: int, fires: bool
) -> None:
    """11 pairs in corpus order where a shuffle gives about 1 ± 1 are 10.03 standard deviations
    over (beyond max_order_z 10); 10 pairs are 9.03 over."""
    outcome = mixture.order_outcome(_ordered_pairs(pairs), None)
    assert outcome.ok is not fires, outcome.measured


@pytest.mark.parametrize(
    "same, fires",
    [
        pytest.param(11, True, marks=pytest.mark.gate("GATE-DATA-002")),
        pytest.param(10, False, marks=pytest.mark.holds("GATE-DATA-002")),
    ],
)
def test_positions_repeating_the_last_epoch_just_beyond_max_order_z_fire_and_just_inside_hold(
    same: int, fires: bool
) -> None:
    """11 positions holding the previous epoch's window where a shuffle gives about 1 ± 1 are 10.01
    standard deviations over; 10 are 9.01 over."""
    plan, previous = _same_positions(same)
    outcome = mixture.order_outcome(plan, previous)
    assert outcome.ok is not fires, outcome.measured
    assert outcome.measured["order_z"] == 0


def test_a_shuffle_of_few_or_repeated_windows_is_held_to_what_its_shuffle_can_show() -> None:
    """One window many times is in 'corpus order' at every pair, as its only shuffle is: it holds;
    so does every epoch plan the stack draws for a source of few windows at several weights."""
    assert mixture.order_outcome(np.zeros(500, dtype=np.int64), np.zeros(500, dtype=np.int64)).ok
    for windows in (2, 3, 7, 40):
        for weight in (1.0, 2.5, 9.0):
            mix = mixture.Mixture({"s": (0, windows)}, {"s": weight}, {}, frozenset(), 16)
            for epoch in range(1, 6):
                plan = mixture.epoch_plan(mix, 0, epoch)
                assert mixture.order_outcome(plan, mixture.epoch_plan(mix, 0, epoch - 1)).ok
