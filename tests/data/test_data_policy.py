"""Mixture policies: caps, floors, phases, the bandit, and GATE-DATA-008..011 with their falsifiers."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contracts import rewards
from contracts.coherence import coherence_score
from contracts.curriculum import project_shares
from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.data import bandit as bandit_module
from stack.data import mixture
from stack.data import policy as policy_module
from stack.data.bandit import Exp3
from stack.data.curriculum import Phase
from stack.data.policy import MixturePolicy
from stack.data.tokenizer import load_tokenizer
from stack.train.config import resolve
from tests.support.data_policy_support import (
    BANDIT,
    SOURCES,
    gate_verdict,
    mixed_corpus,
    mixture_policy,
    raw_loss,
    restored_with_chat_excluded,
    serve_steps,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mixed_corpus(tmp_path_factory.mktemp("policy"))


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with recording(Ledger()) as active:
        yield active


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["data.caps={a = 0.2}", "data.floors={a = 0.3}"], "floor 0.3 above its cap 0.2"),
        (["data.floors={a = 0.6, b = 0.6}"], "floors sum to 1.2"),
        (["data.exclude=['a']", "data.caps={a = 0.1}"], "'a' is excluded but given a cap"),
        (["data.caps={a = 1.5}"], "must be a share in"),
        (["data.phases=[{after_step = 20}, {after_step = 10}]"], "strictly increasing after_step"),
        (["data.bandit={gamma = 0.2}"], 'data.policy is not "bandit"'),
    ],
)
def test_inconsistent_mixtures_are_one_line_of_bad_input(sets: list[str], needle: str) -> None:
    with pytest.raises(BadInput, match=needle) as info:
        resolve("smoke", None, sets, vocab=256)
    assert "\n" not in str(info.value)


def test_a_default_data_section_saves_and_hashes_as_before() -> None:
    config = resolve("smoke", None, [], vocab=256)
    assert config.as_dict()["data"] == {"wrap": True, "weights": {}, "exclude": []}
    assert not config.data.configured


def test_shares_that_cannot_sum_to_one_are_bad_input(data: Path) -> None:
    with pytest.raises(BadInput, match=r"caps of the sources add up to 0\.5"):
        mixture_policy(data, [Phase(0, {}, {"chat": 0.2, "prose": 0.2, "garbage": 0.1}, {})])
    with pytest.raises(BadInput, match="unknown source 'nope'"):
        mixture_policy(data, [Phase(0, {"nope": 1.0}, {}, {})])


@st.composite
def _bounded(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    names = [f"s{i}" for i in range(draw(st.integers(1, 6)))]
    unit = st.floats(0.0, 1.0, allow_nan=False)
    floors = {n: draw(unit) / len(names) for n in names}
    caps = {n: floors[n] + draw(unit) * (1 - floors[n]) for n in names}
    caps[names[-1]] = 1.0  # feasible: one source may take the rest
    wanted = {n: draw(st.floats(0.0, 10.0, allow_nan=False)) for n in names}
    wanted[names[-1]] += 1.0
    return wanted, caps, floors


@settings(max_examples=200)
@given(_bounded())
# A floor one ulp under its cap: both breaks are one float, and the cap must win there.
@example(case=({"s0": 1.5}, {"s0": 1.0}, {"s0": 0.9999999999999999}))
def test_projected_shares_sum_to_one_within_caps_and_floors(
    case: tuple[dict[str, float], dict[str, float], dict[str, float]],
) -> None:
    wanted, caps, floors = case
    shares = project_shares(wanted, caps, floors)
    assert math.isclose(math.fsum(shares.values()), 1.0, abs_tol=1e-9)
    assert all(floors[n] - 1e-9 <= shares[n] <= caps[n] + 1e-9 for n in shares)


# -- GATE-DATA-008: realised shares -------------------------------------------------------------


def _window(served: int, n: int, wanted: float) -> dict:
    return {
        "windows": n,
        "served": {"x": served, "y": n - served},
        "expected_share": {"x": wanted, "y": 1 - wanted},
        "caps": {"x": 1.0, "y": 1.0},
        "floors": {"x": 0.0, "y": 0.0},
        "excluded": [],
    }


def test_the_share_tolerance_is_the_thresholds_multinomial_bound() -> None:
    t = load_spec().gate("GATE-DATA-008").threshold_values
    n, wanted = 1000, 0.25
    tolerance = t["share_sigmas"] * math.sqrt(wanted * (1 - wanted) / n) + t["share_slack_windows"] / n
    inside = math.floor((wanted + tolerance) * n)
    assert judge("GATE-DATA-008", _window(inside, n, wanted)) == []
    assert judge("GATE-DATA-008", _window(inside + 1, n, wanted))


@pytest.mark.holds("GATE-DATA-008")
def test_caps_and_floors_hold_in_what_is_read(data: Path, ledger: Ledger) -> None:
    policy = mixture_policy(data, [Phase(0, {}, {"garbage": 0.1}, {"chat": 0.5})])
    serve_steps(policy, 1, 40)
    realised = policy.close_window(40)
    assert realised["garbage"] <= 0.1 + 0.05 and realised["chat"] >= 0.5 - 0.08
    assert gate_verdict(ledger, "GATE-DATA-008") == Verdict.PASS.value


def _feed_on_repetition(policy: MixturePolicy) -> None:
    """Uniform first steps, then evaluations at which the repetitive source has the lowest loss."""
    serve_steps(policy, 1, 4)
    for step in (8, 12, 16):
        policy.update({"chat": 3.0, "prose": 3.0, "garbage": 0.2})
        serve_steps(policy, step - 3, step)
    policy.close_window(16)


@pytest.mark.gate("GATE-DATA-008")
def test_a_raw_loss_reward_feeding_a_repetitive_source_past_its_cap_is_caught(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bandit_module.REWARDS, "improvement", raw_loss)
    capped = [Phase(0, {}, {"garbage": 0.2}, {})]
    _feed_on_repetition(
        mixture_policy(data, capped, bandit=BANDIT)
    )  # benign: the cap binds the probabilities
    # Plant the bug: the bandit's probabilities are only normalised, the caps never applied.
    monkeypatch.setattr(
        policy_module,
        "project_shares",
        lambda wanted, caps, floors: {n: wanted.get(n, 0.0) / sum(wanted.values()) for n in caps},
    )
    with pytest.raises(GateViolation, match=r"GATE-DATA-008.*garbage's realised share .* above its cap 0.2"):
        _feed_on_repetition(mixture_policy(data, capped, bandit=BANDIT))


@pytest.mark.holds("GATE-DATA-008")
def test_a_restored_bandit_drops_an_excluded_arm(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stack.data.bandit"):
        after = restored_with_chat_excluded(data)
    assert "carries arm 'chat'" in caplog.text
    assert after.bandit is not None and "chat" not in after.bandit.arms
    assert after.shares_at(13)["chat"] == 0.0


@pytest.mark.gate("GATE-DATA-008")
def test_a_restored_state_that_revives_an_excluded_arm_is_caught(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plant both halves of the zombie: the restore keeps every saved arm, and exclusion does not
    # cap a source at 0 (both guards against a revived arm removed).
    def revive(self: Exp3, saved: list[str]) -> list[str]:
        self.arms = sorted(set(self.arms) | set(saved))
        return self.arms

    monkeypatch.setattr(Exp3, "known_arms", revive)
    monkeypatch.setattr(
        mixture,
        "share_bounds",
        lambda sources, caps, floors, exclude: ({n: 1.0 for n in sources}, dict.fromkeys(sources, 0.0)),
    )
    with pytest.raises(GateViolation, match=r"GATE-DATA-008.*excluded source chat has policy share"):
        restored_with_chat_excluded(data)


# -- GATE-DATA-009: curriculum phases -----------------------------------------------------------

CURRICULUM = [Phase(0, {"garbage": 0.0}, {}, {}), Phase(6, {}, {}, {})]


@pytest.mark.holds("GATE-DATA-009")
def test_phases_switch_after_their_step(data: Path, ledger: Ledger) -> None:
    policy = mixture_policy(data, CURRICULUM)
    serve_steps(policy, 1, 6)
    assert policy.close_window(6)["garbage"] == 0.0
    serve_steps(policy, 7, 10)
    assert policy.switches == [{"phase": 1, "step": 7}]
    assert policy.close_window(10)["garbage"] > 0
    assert gate_verdict(ledger, "GATE-DATA-009") == Verdict.PASS.value


@pytest.mark.gate("GATE-DATA-009")
def test_a_phase_that_switches_a_step_early_is_caught(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Plant the bug: a phase serves from its after_step instead of after it.
    monkeypatch.setattr(
        policy_module,
        "phase_at",
        lambda phases, step: max(i for i, p in enumerate(phases) if p.after_step <= step),
    )
    policy = mixture_policy(data, CURRICULUM)
    serve_steps(policy, 1, 5)  # inside: steps before the boundary are served by phase 0 either way
    with pytest.raises(GateViolation, match=r"GATE-DATA-009.*step 6 was served by phase 1"):
        serve_steps(policy, 6, 6)


# -- GATE-DATA-010: the policy's state through a checkpoint ----------------------------------------


def _trained(data: Path) -> MixturePolicy:
    policy = mixture_policy(data, CURRICULUM, bandit=BANDIT)
    serve_steps(policy, 1, 4)
    policy.update({"chat": 3.0, "prose": 3.0, "garbage": 3.0})
    serve_steps(policy, 5, 8)
    policy.update({"chat": 2.0, "prose": 2.9, "garbage": 3.0})
    return policy


@pytest.mark.holds("GATE-DATA-010")
def test_the_policy_state_round_trips_bit_for_bit(data: Path) -> None:
    before = _trained(data)
    saved = json.loads(json.dumps(before.state_dict(8)))
    after = mixture_policy(data, CURRICULUM, bandit=BANDIT)
    after.load_state_dict(saved, 8)
    assert after.state_dict(8) == saved
    assert after.shares_at(9) == before.shares_at(9) != after.shares_at(1)


@pytest.mark.gate("GATE-DATA-010")
def test_a_bandit_state_left_out_of_the_checkpoint_is_caught(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saving = MixturePolicy.state_dict
    # Plant the bug: the checkpoint keeps the phase and books but not the bandit.
    monkeypatch.setattr(
        MixturePolicy, "state_dict", lambda self, step: {**saving(self, step), "bandit": None}
    )
    saved = json.loads(json.dumps(_trained(data).state_dict(8)))
    with pytest.raises(GateViolation, match=r"GATE-DATA-010.*the restored policy would give chat"):
        mixture_policy(data, CURRICULUM, bandit=BANDIT).load_state_dict(saved, 8)


@settings(max_examples=40)
@given(st.lists(st.dictionaries(st.sampled_from(SOURCES), st.floats(0.01, 10.0), min_size=1), max_size=6))
def test_bandit_state_round_trips_through_json(losses: list[dict[str, float]]) -> None:
    bandit = Exp3(SOURCES, reward="improvement", gamma=0.1, eta=1.0, warmup_steps=0, reference={})
    bandit.record_pulls(dict.fromkeys(SOURCES, 1))
    for observed in losses:
        bandit.update(observed)
    again = Exp3(SOURCES, reward="improvement", gamma=0.1, eta=1.0, warmup_steps=0, reference={})
    again.load_state_dict(json.loads(json.dumps(bandit.state_dict())))
    assert again.state_dict() == bandit.state_dict()
    assert again.wanted(1, SOURCES) == bandit.wanted(1, SOURCES)
    assert math.isclose(math.fsum(bandit.wanted(1, SOURCES).values()), 1.0)


def test_the_bandit_is_uniform_until_every_arm_is_pulled() -> None:
    bandit = Exp3(SOURCES, reward="improvement", gamma=0.1, eta=1.0, warmup_steps=3, reference={})
    bandit.log_weights["chat"] = 5.0
    assert set(bandit.wanted(10, SOURCES).values()) == {1 / 3}  # nothing pulled yet
    bandit.record_pulls(dict.fromkeys(SOURCES, 1))
    assert set(bandit.wanted(3, SOURCES).values()) == {1 / 3}  # still warming up
    assert bandit.wanted(4, SOURCES)["chat"] > 0.5


def test_the_rewards_do_not_pay_for_being_easy() -> None:
    assert rewards.improvement(0.2, 0.2, None) == 0.0  # learned already: nothing to gain
    assert rewards.improvement(2.0, 4.0, None) == 0.5
    assert rewards.excess(0.2, None, 0.2) == 0.0
    assert rewards.excess(4.0, None, 2.0) == 0.5


# -- GATE-DATA-011: concentration on a repetitive source ---------------------------------------


def _concentrated(data: Path, floors: dict[str, float], caps: dict[str, float]) -> None:
    policy = mixture_policy(data, [Phase(0, {"garbage": 10.0}, caps, floors)])
    policy.profile_sources(load_tokenizer(data).decode, coherence_score)
    repetitive = load_spec().threshold("GATE-DATA-011", "min_compression_ratio")
    ratios = {name: profile["compression_ratio"] for name, profile in policy.profiles.items()}
    assert ratios["garbage"] < repetitive < min(ratios["chat"], ratios["prose"])
    serve_steps(policy, 1, 20)
    policy.close_window(20)


@pytest.mark.gate("GATE-DATA-011")
def test_a_policy_that_concentrates_on_a_repetitive_source_warns(data: Path) -> None:
    limit = load_spec().threshold("GATE-DATA-011", "max_suspect_share")
    with recording(Ledger()) as inside:
        _concentrated(data, {}, {"garbage": limit - 0.01})
    assert gate_verdict(inside, "GATE-DATA-011") == Verdict.PASS.value
    with recording(Ledger()) as beyond:
        _concentrated(data, {}, {"garbage": limit + 0.01})
    assert gate_verdict(beyond, "GATE-DATA-011") == Verdict.WARN.value
