"""A whole `stack train` under a curriculum, caps and a bandit: its gates, its resume, its polish pivot."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts import rewards
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.data import policy as policy_module
from stack.data.bandit import Exp3
from stack.model.consumed import recording
from stack.train import checkpoint as ckpt
from stack.train import loop
from stack.train.heldout_reads import to_host, windows_sha256
from tests.support.data_policy_support import mixed_corpus
from tests.support.train_support import evidence, smoke_args, step_lines, train, unjudged, verdicts
from tools.integrity.record_checks import check_record_truth

MIXTURE = (
    "train.steps=12",
    "eval.every=4",
    "eval.batches=32",  # a third of the held-out windows are garbage, all alike (GATE-EVAL-001)
    "ckpt.every=4",
    "ckpt.keep_last=4",
    "data.caps={garbage = 0.2}",
    "data.weights={garbage = 0}",
    "data.phases=[{after_step = 6, caps = {garbage = 0.2}}]",
    "data.policy='bandit'",
    "data.bandit={warmup_steps = 2}",
)
COMPARED = ("step", "loss", "grad_norm", "batch_sha256")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mixed_corpus(tmp_path_factory.mktemp("bandit"))


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train(smoke_args(data, run, *MIXTURE)) == 0
    return run


def _lines(run: Path, kind: str) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [line for line in lines if line["type"] == kind]


def _from_step_4(straight: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for path in ckpt.list_checkpoints(run):
        if int(path.name.split("-")[1]) > 4:
            shutil.rmtree(path)
    return run


@pytest.mark.holds("GATE-DATA-008")
@pytest.mark.holds("GATE-DATA-009")
@pytest.mark.holds("GATE-DATA-011")
def test_a_curriculum_bandit_run_judges_its_mixture(straight: Path) -> None:
    assert unjudged(straight) == {}
    assert {
        g: verdicts(straight)[g] for g in ("GATE-DATA-008", "GATE-DATA-009", "GATE-DATA-011")
    } == dict.fromkeys(("GATE-DATA-008", "GATE-DATA-009", "GATE-DATA-011"), "PASS")
    events = [line for line in _lines(straight, "event") if line["event"] == "phase"]
    assert [(e["step"], e["phase"]) for e in events] == [(7, 1)]
    assert evidence(straight)["metrics"]["phase_switches"] == [{"phase": 1, "step": 7}]
    shares = [line["source_shares"] for line in _lines(straight, "eval")]
    assert shares[0]["garbage"] == 0.0 and 0 < shares[-1]["garbage"] <= 0.2 + 0.15
    assert all("bandit_rewards" in line for line in _lines(straight, "eval"))


def _one_row_of_another_arm(real: Callable[..., dict[str, list[torch.Tensor]]]) -> Callable[..., Any]:
    """source_heldout with `rows` rows of the first arm's first batch taken from the next arm's:
    the bandit would be paid, in part, on text of a source it did not pull."""

    def planted(*args: Any, rows: int = 1) -> dict[str, list[torch.Tensor]]:
        batches = real(*args)
        first, second = sorted(batches)[:2]
        batches[first][0][:rows] = batches[second][0][:rows]
        return batches

    return planted


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(1, marks=pytest.mark.gate("GATE-DATA-005")),
        pytest.param(0, marks=pytest.mark.holds("GATE-DATA-005")),  # nothing planted: the arms' own text
    ],
)
def test_an_arm_paid_on_another_sources_held_out_text_stops_before_step_1(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rows: int
) -> None:
    """Each arm's held-out batches are checked against that source's own held-out windows: one row of
    another source's (beyond) stops the run; none (inside) trains."""
    planted = _one_row_of_another_arm(loop.source_heldout)
    monkeypatch.setattr(loop, "source_heldout", lambda *args: planted(*args, rows=rows))
    code = train(smoke_args(data, tmp_path / "run", *MIXTURE))
    err = capsys.readouterr().err
    if rows:
        assert code == 3 and "GATE-DATA-005" in err and "1 of the" in err, err
        assert "'split': 'heldout:chat'" in err, err
    else:
        assert code == 0, err
        result = next(g for g in evidence(tmp_path / "run")["gates"] if g["id"] == "GATE-DATA-005")
        assert result["verdict"] == "PASS" and result["measured"]["split"] == "heldout"  # the main set, last


def _paid_backwards(self: Exp3, losses: dict[str, float]) -> dict[str, float]:
    """The planted bug: the improvement reward with before and now swapped (a loss that rises pays)."""
    paid = {}
    for arm in self.arms:
        now = float(losses[arm])
        paid[arm] = rewards.improvement(self.last_loss[arm] or 0.0, now, None) if self.last_loss[arm] else 0.0
        self.log_weights[arm] += self.eta * paid[arm]
        self.last_loss[arm] = now
    self.updates += 1
    return paid


def _remembers_a_rounded_loss(self: Exp3, losses: dict[str, float]) -> dict[str, float]:
    """The planted bug: the bandit pays its rule right, but remembers each loss rounded to one decimal,
    so every later payment is measured against a loss the run never measured."""
    paid = REAL_UPDATE(self, losses)
    self.last_loss.update({arm: round(loss, 1) for arm, loss in self.last_loss.items() if loss is not None})
    return paid


REAL_UPDATE = Exp3.update


def _paid_on_the_main_set(self: loop.Trainer) -> tuple[dict[str, float], dict[str, str]]:
    """The planted bug: every arm's loss measured on the first batches of the main held-out set."""
    losses, read = {}, {}
    for name, batches in self.source_heldout.items():
        total, scorings = 0.0, []
        for batch in self.heldout[: len(batches)]:
            batch = batch.to(self.device)
            with recording() as tape:
                _, loss = self.model(batch[:, :-1], batch[:, 1:])
            total += float(loss)
            scorings += [to_host(scoring) for scoring in tape]
        losses[name], read[name] = total / len(batches), windows_sha256(scorings)
    return losses, read


@pytest.mark.gate("GATE-DATA-008")
@pytest.mark.parametrize(
    ("where", "planted", "says"),
    [
        (Exp3, ("update", _paid_backwards), "was paid"),
        (loop.Trainer, ("_source_losses", _paid_on_the_main_set), "read other windows than its own"),
        (Exp3, ("update", _remembers_a_rounded_loss), "was paid"),
    ],
    ids=["reward-backwards", "main-held-out-set", "memory-not-the-logged-loss"],
)
def test_a_bandit_paid_otherwise_than_its_rule_on_its_own_text_halts(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: type,
    planted: tuple[str, Callable[..., Any]],
    says: str,
) -> None:
    """The rewards the eval lines log are the bandit's own: only the rule applied again to the losses
    measured, and the windows those losses read, show a bandit paid backwards or on the wrong text."""
    monkeypatch.setattr(where, *planted)
    assert train(smoke_args(data, tmp_path / "run", *MIXTURE)) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-008" in err and says in err, err
    result = next(g for g in evidence(tmp_path / "run")["gates"] if g["id"] == "GATE-DATA-008")
    assert result["verdict"] == "FAIL" and result["measured"]["reward"] == "improvement"


def _stepped_against_the_reward(self: Exp3, losses: dict[str, float]) -> dict[str, float]:
    """Each arm's log-weight moved by −η times its reward (paid right)."""
    before = dict(self.log_weights)
    paid = REAL_UPDATE(self, losses)
    self.log_weights.update({arm: before[arm] - self.eta * reward for arm, reward in paid.items()})
    return paid


def _explores_with_all_of_gamma(self: Exp3, step: int, eligible: Any) -> dict[str, float]:
    """An exploration share of γ for each arm, not γ / K, renormalised."""
    wanted = REAL_WANTED(self, step, eligible)
    if not self.exploiting(step, list(wanted)):
        return wanted
    mixed = {arm: p + self.gamma * (1 - 1 / len(wanted)) for arm, p in wanted.items()}
    total = sum(mixed.values())
    return {arm: p / total for arm, p in mixed.items()}


REAL_WANTED = Exp3.wanted


@pytest.mark.gate("GATE-DATA-008")
@pytest.mark.parametrize(
    ("planted", "says"),
    [
        (("update", _stepped_against_the_reward), "EXP3's step by its reward"),
        (("wanted", _explores_with_all_of_gamma), "EXP3 wants"),
    ],
    ids=["update-sign", "exploration-gamma"],
)
def test_a_bandit_that_steps_or_asks_otherwise_than_exp3_halts(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    planted: tuple[str, Callable[..., Any]],
    says: str,
) -> None:
    """Paid right, the bandit moved its log-weights against the pay, or mixed in too much
    exploration: the shares followed what it asked for, so only EXP3's rule applied again to its
    own state (contracts.rewards) shows it."""
    monkeypatch.setattr(Exp3, *planted)
    assert train(smoke_args(data, tmp_path / "run", *MIXTURE)) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-008" in err and says in err, err


@pytest.mark.gate("GATE-DATA-008")
def test_a_bandit_step_just_beyond_its_tolerance_fires_and_just_inside_holds() -> None:
    rtol = load_spec().threshold("GATE-DATA-008", "bandit_rtol")

    def stepped(error: float) -> dict[str, Any]:
        """Arm a paid the improvement of a loss halved (0.5), its log-weight stepped from 2 by η 1."""
        paid = {"reward": "improvement", "losses": {"a": 1.0}, "before": {"a": 2.0}, "reference": {}}
        paid |= {"rewards": {"a": 0.5}, "windows_read": {"a": "x"}, "windows_stated": {"a": "x"}}
        return paid | {"eta": 1.0, "log_weights_before": {"a": 2.0}, "log_weights_after": {"a": 2.5 + error}}

    assert not measure("GATE-DATA-008", stepped(2 * rtol * 2.5)).ok
    assert measure("GATE-DATA-008", stepped(0.5 * rtol)).ok


# -- checks tallied, stepped and wanted: the bandit held to the policy's books of it -----------------


def _pulls_assigned(self: Exp3, served: dict[str, int]) -> None:
    """Planted: each step's served windows assigned to the pull counts, not added."""
    for arm in self.arms:
        self.pulls[arm] = served.get(arm, 0)


def _never_exploits(self: Exp3, step: int, eligible: Any) -> bool:
    """A bandit that waits for a pull it never counts: uniform for the whole run."""
    return False


@pytest.mark.gate("GATE-DATA-008")
@pytest.mark.parametrize(
    ("planted", "says"),
    [
        (("record_pulls", _pulls_assigned), "pulls are not the windows served"),
        (("exploiting", _never_exploits), "EXP3 wants"),
    ],
    ids=["pulls-assigned", "never-exploits"],
)
def test_a_bandit_whose_statistics_are_not_what_was_served_and_paid_halts(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    planted: tuple[str, Callable[..., Any]],
    says: str,
) -> None:
    """Pulls assigned where they add up leave an arm missing from the last step counted as never
    pulled, so the bandit stays uniform; a bandit that never exploits does so outright. The shares
    follow what it asks for, its pay and steps are its rule's, and the wanted check, had it taken the
    bandit's own pulls, would pass: the windows the policy booked as served (tallied) and EXP3 of the
    policy's books (wanted) show both. Exit 3 naming the gate."""
    monkeypatch.setattr(Exp3, *planted)
    assert train(smoke_args(data, tmp_path / "run", *MIXTURE)) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-008" in err and says in err, err


@pytest.mark.holds("GATE-DATA-008")
def test_the_checker_holds_the_logged_pulls_and_log_weights_to_what_was_served_and_paid(
    straight: Path, tmp_path: Path
) -> None:
    """Every evaluation logs the bandit's pulls (the windows its arms served so far) and log-weights
    (EXP3's steps of the rewards due), and the record checks clean; one evaluation's pulls edited to
    the last step's alone, as a mutant bandit counts them, contradict the windows its log served."""
    paid = [line for line in _lines(straight, "eval") if "bandit_pulls" in line]
    assert paid and all(sum(line["bandit_pulls"].values()) == 4 * line["step"] for line in paid)
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    at = [i for i, line in enumerate(lines) if '"bandit_pulls"' in line][1]
    line = json.loads(lines[at])
    line["bandit_pulls"] = {arm: min(n, 1) for arm, n in line["bandit_pulls"].items()}
    lines[at] = json.dumps(line)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    violations = check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations
    said = f"the evaluation at step {line['step']} logs the bandit's pulls"
    assert any(said in v for v in violations), violations


# -- check static: a policy without a bandit serves weight × natural share ---------------------------

STATIC = (
    "train.steps=6",
    "eval.every=3",
    "eval.batches=32",  # a third of the held-out windows are garbage, all alike (GATE-EVAL-001)
    "ckpt.every=3",
    "data.policy='static'",
    "data.weights={garbage = 0.5}",
)


def _weights_alone(weights: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    """Planted: each source's weight over the sum of the weights, its size dropped."""
    total = sum(weights.values())
    return {name: weights[name] / total for name in sizes}


@pytest.mark.gate("GATE-DATA-008")
def test_a_static_policy_that_drops_the_natural_sizes_halts(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Served as asked (the shares check, whose expected shares are the policy's own, holds), but not
    weight × natural share: contracts.curriculum.static_shares of the config's weights and the
    manifest's windows shows it at the first step. Exit 3 naming the gate."""
    monkeypatch.setattr(policy_module, "weighted", _weights_alone)
    assert train(smoke_args(data, tmp_path / "run", *STATIC)) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-008" in err and "the static policy serves" in err, err


@pytest.mark.holds("GATE-DATA-008")
def test_a_static_policy_serves_its_rule_s_shares_and_the_checker_derives_them(
    data: Path, tmp_path: Path
) -> None:
    """A static run's shares are the rule's, and its record checks clean; its logged shares edited
    to uniform (GATE-DATA-008's expected shares derive from them) contradict the rule applied again
    to the config and the windows the check recorded."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *STATIC)) == 0
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-DATA-008")["measured"]
    assert measured["static_weights"] == {"garbage": 0.5} and measured["static_windows"]
    assert check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations == []
    lines = (run / "metrics.jsonl").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"event": "shares"' in line)
    line = json.loads(lines[at])
    line["shares"] = dict.fromkeys(line["shares"], 1 / 3)
    lines[at] = json.dumps(line)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    violations = check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations
    assert any("natural share of the windows" in v for v in violations), violations


@pytest.mark.gate("GATE-DATA-008")
def test_a_static_share_just_beyond_its_tolerance_fires_and_just_inside_holds() -> None:
    rtol = load_spec().threshold("GATE-DATA-008", "static_rtol")

    def served(error: float) -> dict[str, Any]:
        """Sources of 100 and 300 windows at weights 1 and 1/3: half each, a's moved by `error`."""
        rule = {"static_weights": {"b": 1 / 3}, "static_caps": {}, "static_floors": {}, "static_excluded": []}
        return rule | {"static_windows": {"a": 100, "b": 300}, "static_shares": {"a": 0.5 + error, "b": 0.5}}

    assert measure("GATE-DATA-008", served(0.99 * rtol)).ok
    assert not measure("GATE-DATA-008", served(1.01 * rtol)).ok
    assert not measure("GATE-DATA-008", served(0.5 - 100 / 400)).ok  # the natural shares, unweighted


def test_the_checker_pays_the_logged_losses_again(straight: Path, tmp_path: Path) -> None:
    """The record of a bandit run checks clean; one evaluation's rewards written backwards in its log
    (the losses left as they were) contradict the rule applied again to those losses."""
    clean = check_record_truth(read_evidence(straight / "metadata.json"), straight, load_spec())
    assert clean.violations == []
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    at = [i for i, line in enumerate(lines) if '"bandit_rewards"' in line][1]
    line = json.loads(lines[at])
    line["bandit_rewards"] = {arm: -paid for arm, paid in line["bandit_rewards"].items()}
    lines[at] = json.dumps(line)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    violations = check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations
    said = f"the evaluation at step {line['step']} logs bandit rewards"
    assert any(said in v for v in violations), violations


@pytest.mark.holds("GATE-DATA-010")
def test_a_bandit_run_resumes_bit_for_bit(straight: Path, tmp_path: Path) -> None:
    run = _from_step_4(straight, tmp_path)
    assert train(["train", "--resume", str(run)]) == 0
    assert verdicts(run)["GATE-DATA-010"] == "PASS"
    pick = [[{k: line[k] for k in COMPARED} for line in step_lines(r)] for r in (straight, run)]
    assert pick[0] == pick[1]
    assert [line["source_shares"] for line in _lines(run, "eval")] == [
        line["source_shares"] for line in _lines(straight, "eval")
    ]


def test_a_polish_pivot_keeps_the_history_and_archives_the_policy(straight: Path, tmp_path: Path) -> None:
    run = _from_step_4(straight, tmp_path)
    assert train(["train", "--resume", str(run), "--set", "data.caps={garbage = 0.1}"]) == 0
    resumed = evidence(run)["metrics"]["resumes"][0]
    assert resumed["changed"] == ["data.caps"]
    archived = json.loads((run / resumed["policy_archive"]).read_text())
    assert archived["step"] == 4 and archived["data"]["caps"] == {"garbage": 0.2}
    assert archived["policy"]["bandit"]["pulls"]["chat"] > 0
    history = [line["loss"] for line in step_lines(run)]
    assert history[:4] == [line["loss"] for line in step_lines(straight)][:4] and len(history) == 12
