"""A mixture-of-depths block's inference threshold is set at mod_capacity; planted, one set at another
capacity. Training is bit for bit; every evaluation, sample and saved model routes otherwise.
GATE-ARCH-008 rev 3 (check inference) holds the threshold to the training batch that set it
(contracts.depth_routing.threshold_admits), and `--replay` compares the eval lines too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.depth_routing import capacity_share, threshold_admits
from contracts.judges import judge
from stack.model import depth_router as depth_router_module
from stack.model.depth_router import split_score
from stack.model.mod_checks import split_counts
from tests.support.train_support import metric_lines, prepared, smoke_args, train, verdicts
from tools.integrity.replay import replay

MOD = ("model.n_layers=2", "model.mod_every=2", "model.mod_capacity=0.25", "train.steps=4", "eval.every=2")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("mod-data"))


def _split(capacity: float, admitted: int, tokens: int, tied: int = 0) -> dict[str, object]:
    """GATE-ARCH-008's check inference as the evaluation measures it, for one block."""
    split = {"admitted": admitted, "tokens": tokens, "tied": tied}
    return {"capacity": capacity, "threshold_split": {"layers.1": split}}


@pytest.mark.holds("GATE-ARCH-008")
def test_an_honest_mod_run_passes_and_replays_its_eval_lines(data: Path, tmp_path: Path) -> None:
    """The threshold the evaluations read admits ⌊C·N⌋ of its batch; the replay reproduces the
    eval lines bit for bit, so comparing them adds no false difference."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *MOD)) == 0
    assert verdicts(run)["GATE-ARCH-008"] == "PASS"
    assert metric_lines(run, "eval"), "the run evaluated"
    assert replay(run, data, steps=4).differences == []


@pytest.mark.gate("GATE-ARCH-008")
def test_falsifier_threshold_at_another_capacity_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the threshold split at capacity 0.5 while training's top-k keeps 0.25."""
    real = depth_router_module.split_score
    monkeypatch.setattr(depth_router_module, "split_score", lambda scores, _capacity: real(scores, 0.5))
    status = train(smoke_args(data, tmp_path / "run", *MOD))
    err = capsys.readouterr().err
    assert status == 3, err
    assert "GATE-ARCH-008" in err and "inference threshold admits" in err


def test_a_forged_eval_line_is_caught_by_the_replay(data: Path, tmp_path: Path) -> None:
    """A held-out loss edited in the log (as a mutant's would differ) is a difference the replay names."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *MOD)) == 0
    log = run / "metrics.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    edited = next(line for line in lines if line["type"] == "eval")
    edited["heldout_loss"] -= 0.005
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    found = replay(run, data, steps=4).differences
    assert any(d.startswith(f"eval {edited['step']}: heldout_loss is") for d in found), found


@pytest.mark.gate("GATE-ARCH-008")
def test_falsifier_inference_check_boundary() -> None:
    """⌊C·N⌋ admitted holds; one more, or one fewer than the ties allow, fires."""
    share = capacity_share(0.25, 96)
    assert judge("GATE-ARCH-008", _split(0.25, share, 96)) == []
    assert judge("GATE-ARCH-008", _split(0.25, share - 2, 96, tied=2)) == []
    assert judge("GATE-ARCH-008", _split(0.25, share + 1, 96)) != []
    assert judge("GATE-ARCH-008", _split(0.25, share - 1, 96)) != []
    assert judge("GATE-ARCH-008", _split(0.25, share - 3, 96, tied=2)) != []
    assert judge("GATE-ARCH-008", _split(0.25, capacity_share(0.5, 96), 96)) != []


@settings(max_examples=60)
@given(
    scores=st.lists(st.integers(-4, 4), min_size=2, max_size=40),
    capacity=st.floats(0.05, 1.0),
)
def test_the_stack_split_satisfies_the_statute_with_ties(scores: list[int], capacity: float) -> None:
    """The stack's split_score, scores tied at will (a routed first block scores a repeated token
    alike), admits what contracts.depth_routing.threshold_admits allows."""
    flat = torch.tensor(scores, dtype=torch.float32)
    counts = split_counts(flat, split_score(flat, capacity))
    assert threshold_admits(capacity, counts["tokens"], counts["admitted"], counts["tied"])
