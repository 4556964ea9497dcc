"""GATE-DATA-002: every epoch plan is its seed's, a shuffle, and a fresh one each epoch.

The quota check of GATE-DATA-001 counts a plan's windows and cannot see their order, so two bugs
would train silently: the plan left in corpus order, and the plan seeded without
its epoch, every epoch replaying the first one's order. Two more hide as well: the plan
drawn without train.seed, which the plan checks could not see since they read the plan from
the function that drew it, and a fractional source drawing the same windows every epoch,
which the order checks could not see since they compare positions. Each is planted here in the real
reader; the boundary cases hold the stack's measurement of a plan at max_order_z and max_overlap_z
(10 each) from both sides, and honest plans of many seeds hold, those of a small source among
thousands of windows too, where a shuffle expects a hundredth of a hit and an honest plan has one
or two.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contracts import plan as plan_definition
from contracts.errors import GateViolation
from contracts.judges import judge
from stack.data import mixture
from stack.data.reader import TokenReader
from tests.support.train_support import evidence, prepared, smoke_args, train

# Windows of the boundary plans: 401 distinct ids, so a uniform shuffle puts a window right after
# the one before it 400/401 times per plan on average, with a binomial spread of about 1.
WINDOWS = 401
# The smoke corpus's one source has 1 345 windows of 32 tokens: at weight 0.06 an epoch draws 80 of
# them, 20 steps of 4, and two fresh draws share 4.8 ± 2.1 of them.
SUBSAMPLE_WEIGHT = 0.06
SUBSAMPLE_STEPS = 21


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("order"))


def _in_corpus_order(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Each source's quota concatenated and never shuffled."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        return np.sort(real(mix, seed, epoch))

    return plan


def _same_every_epoch(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The plan seeded without its epoch."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        return real(mix, seed, 0)

    return plan


def _without_seed(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Planted: the plan drawn with seed 0 whatever train.seed says."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        return real(mix, 0, epoch)

    return plan


def _same_subsample(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The same windows every epoch, planted in the definition itself (contracts.plan), so that the plan the
    reader serves is the one it is held to: every epoch shuffles afresh the windows the first
    epoch drew."""

    def plan(ranges: Any, quotas: Any, seed: int, epoch: int) -> np.ndarray:
        first = real(ranges, quotas, seed, 0)
        return first if epoch == 0 else np.random.default_rng([seed, epoch, 7]).permutation(first)

    return plan


@pytest.mark.gate("GATE-DATA-002")
def test_a_plan_that_ignores_the_seed_stops_stack_train_before_its_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 1's run is served seed 0's plan: a fine shuffle, fresh each epoch, and not the plan
    seed 1 defines."""
    monkeypatch.setattr(mixture, "epoch_plan", _without_seed(mixture.epoch_plan))
    out = tmp_path / "run"
    code = train(smoke_args(data, out, "train.seed=1"))
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-002" in err and "seed 1 defines" in err and "step 1/" not in err, err
    measured = next(g for g in evidence(out)["gates"] if g["id"] == "GATE-DATA-002")["measured"]
    assert measured["plan_seed"] == 1 and measured["plan_sha256"] != measured["defined_sha256"]


@pytest.mark.gate("GATE-DATA-002")
def test_a_source_drawing_the_same_windows_every_epoch_stops_stack_train_when_it_wraps(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first epoch's draw holds; the second, its windows again in another order, is refused at
    the wrap, by the windows it drew, though it is a fresh shuffle and the plan it is held to."""
    monkeypatch.setattr(plan_definition, "epoch_plan", _same_subsample(plan_definition.epoch_plan))
    out = tmp_path / "run"
    steps = SUBSAMPLE_STEPS
    sets = [f"data.weights={{main = {SUBSAMPLE_WEIGHT}}}", "data.wrap=true", f"train.steps={steps}"]
    code = train(smoke_args(data, out, *sets, f"eval.every={steps}", f"ckpt.every={steps}"))
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-002" in err and "same subsample every epoch" in err, err
    assert f"step {steps - 1}/{steps}" in err and f"step {steps}/" not in err
    measured = next(g for g in evidence(out)["gates"] if g["id"] == "GATE-DATA-002")["measured"]
    [source] = measured["subsamples"]
    assert source["kept"] == source["drawn"] == 80 and measured["repeat_z"] < 10


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
    """11 pairs in corpus order where a shuffle gives 400/401 ± 1 are 10.0025 standard deviations
    over (beyond max_order_z 10); 10 pairs are 9.0025 over."""
    measured = mixture.order_measured(_ordered_pairs(pairs), None)
    assert bool(judge("GATE-DATA-002", measured)) is fires, measured


@pytest.mark.parametrize(
    "same, fires",
    [
        pytest.param(12, True, marks=pytest.mark.gate("GATE-DATA-002")),
        pytest.param(11, False, marks=pytest.mark.holds("GATE-DATA-002")),
    ],
)
def test_positions_repeating_the_last_epoch_just_beyond_max_order_z_fire_and_just_inside_hold(
    same: int, fires: bool
) -> None:
    """12 positions holding the previous epoch's window where a shuffle gives 1 ± 1 (its spread,
    0.9988, counted as one) are 11 standard deviations over; 11 are 10, at max_order_z, and hold."""
    plan, previous = _same_positions(same)
    measured = mixture.order_measured(plan, previous)
    assert bool(judge("GATE-DATA-002", measured)) is fires, measured
    assert measured["order_z"] == 0


def _drawn_overlapping(kept: int) -> tuple[mixture.Mixture, np.ndarray, np.ndarray]:
    """A source of 1 000 windows at weight 0.1 (100 drawn an epoch) and two epochs' plans whose
    draws share exactly `kept` windows: ids 0..99, and 100 − kept .. 199 − kept."""
    mix = mixture.Mixture({"s": (0, 1000)}, {"s": 0.1}, {}, frozenset(), 16)
    return mix, np.arange(100), np.arange(100 - kept, 200 - kept)


@pytest.mark.parametrize(
    "kept, fires",
    [
        pytest.param(39, True, marks=pytest.mark.gate("GATE-DATA-002")),
        pytest.param(38, False, marks=pytest.mark.holds("GATE-DATA-002")),
    ],
)
def test_windows_drawn_again_just_beyond_max_overlap_z_fire_and_just_inside_hold(
    kept: int, fires: bool
) -> None:
    """Two fresh draws of 100 of 1 000 windows share 10 ± 2.85: 39 shared are 10.18 standard
    deviations over (beyond max_overlap_z 10), 38 are 9.83 over."""
    mix, plan, previous = _drawn_overlapping(kept)
    measured = mixture.redrawn_measured(mix, plan, previous)
    assert measured["subsamples"][0]["kept"] == kept
    assert bool(judge("GATE-DATA-002", measured)) is fires, measured


@pytest.mark.holds("GATE-DATA-002")
def test_a_draw_of_few_windows_is_held_to_a_spread_of_one_window() -> None:
    """Two windows drawn of 10 000 share none on average, with a spread far below one window: both
    drawn again is 2 windows over, which is what a count can show, not 100 deviations."""
    mix = mixture.Mixture({"s": (0, 10_000)}, {"s": 0.0002}, {}, frozenset(), 16)
    measured = mixture.redrawn_measured(mix, np.array([5, 9]), np.array([9, 5]))
    assert measured["subsamples"][0]["kept"] == 2 and not judge("GATE-DATA-002", measured)


@pytest.mark.holds("GATE-DATA-002")
@settings(max_examples=60)
# Two plans of small sources among thousands of windows, whose shuffles expect 0.014 repeated
# positions and 0.036 pairs in corpus order, and which hold 2 of each: 16.7 and 10.3 deviations
# with the spread below one, 2.0 with it counted as one.
@example(seed=1634691313, epoch=36, sizes=[2004, 1721], weight=0.03818051191138263)
@example(seed=1256271485, epoch=8, sizes=[1393, 1941, 1725], weight=0.03840082521587488)
@given(
    seed=st.integers(0, 2**31),
    epoch=st.integers(1, 50),
    sizes=st.lists(st.integers(2, 3000), min_size=1, max_size=3),
    weight=st.floats(0.01, 3.0),
)
def test_honest_plans_hold_over_many_seeds(seed: int, epoch: int, sizes: list[int], weight: float) -> None:
    """Every plan the stack draws, for any seed and epoch, sources and fractional weight, is the one
    its seed and epoch define, shuffled, and drawn afresh: every check of the plan holds."""
    ranges, lo = {}, 0
    for number, size in enumerate(sizes):
        ranges[f"s{number}"], lo = (lo, lo + size), lo + size
    mix = mixture.Mixture(ranges, dict.fromkeys(ranges, weight), {}, frozenset(), 16)
    plan, previous = mixture.epoch_plan(mix, seed, epoch), mixture.epoch_plan(mix, seed, epoch - 1)
    outcome = mixture.plan_outcome(mix, seed, epoch, plan, previous)
    assert outcome.ok, outcome.message


def test_a_shuffle_of_few_or_repeated_windows_is_held_to_what_its_shuffle_can_show() -> None:
    """One window many times is in 'corpus order' at every pair, as its only shuffle is: it holds;
    so does every epoch plan the stack draws for a source of few windows at several weights."""
    one_window = np.zeros(500, dtype=np.int64)
    assert not judge("GATE-DATA-002", mixture.order_measured(one_window, one_window))
    for windows in (2, 3, 7, 40):
        for weight in (1.0, 2.5, 9.0):
            mix = mixture.Mixture({"s": (0, windows)}, {"s": weight}, {}, frozenset(), 16)
            for epoch in range(1, 6):
                plan, previous = mixture.epoch_plan(mix, 0, epoch), mixture.epoch_plan(mix, 0, epoch - 1)
                assert mixture.plan_outcome(mix, 0, epoch, plan, previous).ok
