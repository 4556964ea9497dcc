"""Router collapse is a failure (GATE-ARCH-012); mild imbalance stays GATE-ARCH-002's warning.

The falsifiers plant two collapses in the real routing: the router's logits are
replaced as it returns them, and the stack's own top-k, counting and evaluation do the rest,
through `stack train`. Every token to expert 0 stops the run at its second evaluation; routing
[2044, 2044, 4, 4] of every 4096 assignments with the balance loss zeroed stops it at its second
(collapse_evaluations), and a run with only one such window goes on. Each threshold is probed just
beyond and just inside through the judge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.evidence import EvidenceRecord
from contracts.judges import judge
from contracts.spec import load_spec
from stack.model.moe import MoE
from stack.train.loop import Trainer
from tests.support.train_support import metric_lines, prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth

# Router logits that make a token's top-k the favoured experts: far above the others.
FAVOUR = 20.0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("collapse-data"))


def plant_routing(monkeypatch: pytest.MonkeyPatch, experts_for: Callable[[int], tuple[int, ...]]) -> None:
    """For the length of each training loop (set-up's checks run the model as it is), every MoE
    layer's router returns logits favouring `experts_for(n)` for the n-th token it routes (counted
    per layer and run), instead of what its weights compute: a router that collapsed in training.
    A router is a function of its input, so an input it has routed before is routed as it was (the
    probes score a batch twice, and hold the two scorings to each other, GATE-TRAIN-007)."""
    real_run = Trainer.run

    def collapsing(self: Trainer, resumed: bool) -> str:
        with _router_logits_replaced(experts_for):
            return real_run(self, resumed)

    monkeypatch.setattr(Trainer, "run", collapsing)


@contextmanager
def _router_logits_replaced(experts_for: Callable[[int], tuple[int, ...]]) -> Iterator[None]:
    real = MoE.forward
    seen: dict[int, int] = {}
    routed: dict[tuple[int, bytes], torch.Tensor] = {}  # (layer, sha256 of its input) → the logits given

    def planted(self: MoE, x: torch.Tensor) -> torch.Tensor:
        def replace(_module: Any, args: Any, logits: torch.Tensor) -> torch.Tensor:
            key = (id(self), hashlib.sha256(args[0].detach().cpu().numpy().tobytes()).digest())
            if key not in routed:
                start = seen.get(id(self), 0)
                seen[id(self)] = start + logits.shape[0]
                favoured = torch.zeros_like(logits)
                for row in range(logits.shape[0]):
                    favoured[row, list(experts_for(start + row))] = FAVOUR
                routed[key] = favoured
            return logits * 0 + routed[key]  # keeps the router in the graph, with no say

        handle = self.router.register_forward_hook(replace)
        try:
            return real(self, x)
        finally:
            handle.remove()

    MoE.forward = planted  # type: ignore[method-assign]
    try:
        yield
    finally:
        MoE.forward = real  # type: ignore[method-assign]


def _train(data: Path, out: Path, *sets: str) -> int:
    return train(smoke_args(data, out, "model.moe_experts=4", "train.steps=4", "ckpt.every=4", *sets))


def _result(out: Path, gate_id: str) -> dict[str, Any]:
    gates = json.loads((out / "metadata.json").read_text())["gates"]
    return next(g for g in gates if g["id"] == gate_id)


@pytest.mark.gate("GATE-ARCH-012")
def test_every_token_to_expert_zero_stops_the_run_at_its_second_evaluation(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(data, tmp_path / "healthy", "model.moe_top_k=1", "eval.every=2") == 0
    assert _result(tmp_path / "healthy", "GATE-ARCH-012")["verdict"] == "PASS"
    plant_routing(monkeypatch, lambda n: (0,))
    out = tmp_path / "collapsed"
    assert _train(data, out, "model.moe_top_k=1", "eval.every=2") == 3
    err = capsys.readouterr().err
    assert "GATE-ARCH-012" in err and "layers.0.moe.expert1 received no token in each of the last 2" in err
    assert "raise model.moe_balance_coef" in err  # the fix, for a run whose balance loss is on
    result = _result(out, "GATE-ARCH-012")
    assert result["verdict"] == "FAIL" and result["step"] == 4
    assert result["measured"]["windows"][-1]["layers.0.moe"][1:] == [0, 0, 0]
    assert _result(out, "GATE-ARCH-002")["verdict"] == "WARN"  # the mild band still says its part


def _two_experts_but_every_512th(n: int) -> tuple[int, ...]:
    """[2044, 2044, 4, 4] of every 4096 assignments (top-2 of 2048 tokens)."""
    return (2, 3) if n % 512 == 0 else (0, 1)


@pytest.mark.gate("GATE-ARCH-012")
def test_two_experts_taking_everything_stop_the_run_at_the_second_window_and_one_window_goes_on(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_routing(monkeypatch, _two_experts_but_every_512th)
    zeroed = ("model.moe_balance_coef=0.0", "model.moe_z_coef=0.0")
    once = tmp_path / "once"  # one evaluation window: collapse_evaluations is 2
    assert _train(data, once, *zeroed, "eval.every=4") == 0
    assert _result(once, "GATE-ARCH-012")["verdict"] == "PASS"
    assert _result(once, "GATE-ARCH-012")["measured"]["windows"] == [{"layers.0.moe": [2044, 2044, 4, 4]}]
    out = tmp_path / "twice"
    assert _train(data, out, *zeroed, "eval.every=2") == 3
    err = capsys.readouterr().err
    assert "GATE-ARCH-012" in err and "layers.0.moe.expert0 was routed" in err
    assert "model.moe_balance_coef=0" in err  # the fix names the zeroed balance loss
    assert _result(out, "GATE-ARCH-012")["step"] == 4


def _windows(*counts: list[int]) -> dict[str, Any]:
    return {"windows": [{"layers.0.moe": c} for c in counts], "top_k": 2, "balance_coef": 0.01}


@pytest.mark.gate("GATE-ARCH-012")
def test_a_takeover_just_beyond_the_share_fires_and_just_inside_holds() -> None:
    """Top-2 of 1000 tokens: an expert in 992 tokens' top-2 (0.992) in both windows fires, in 988
    (0.988) holds, and in 992 for one window of the two holds."""
    limit = load_spec().threshold("GATE-ARCH-012", "max_token_share")
    assert 0.988 < limit < 0.992
    beyond, inside = [992, 508, 250, 250], [988, 512, 250, 250]
    assert judge("GATE-ARCH-012", _windows(beyond, beyond)) != []
    assert judge("GATE-ARCH-012", _windows(inside, inside)) == []
    assert judge("GATE-ARCH-012", _windows(inside, beyond)) == []


@pytest.mark.gate("GATE-ARCH-012")
def test_a_starved_expert_just_beyond_the_ratio_fires_and_just_inside_holds_and_none_fires_at_once() -> None:
    """Of 4000 assignments over 4 experts the uniform share is 1000: 9 (0.009 of it) in both windows
    fires, 11 (0.011) holds; 0 in both windows fires, 0 in a single window (the last) holds."""
    ratio = load_spec().threshold("GATE-ARCH-012", "starved_share_ratio")
    assert 0.009 < ratio < 0.011
    beyond, inside = [1330, 1330, 1331, 9], [1330, 1330, 1329, 11]
    assert judge("GATE-ARCH-012", _windows(beyond, beyond)) != []
    assert judge("GATE-ARCH-012", _windows(inside, inside)) == []
    assert judge("GATE-ARCH-012", _windows([1000, 1000, 1000, 1000], [1333, 1333, 1334, 0])) == []
    assert judge("GATE-ARCH-012", _windows([1333, 1333, 1334, 0])) == []  # one window: no history yet
    problems = judge("GATE-ARCH-012", _windows([1333, 1333, 1334, 0], [1333, 1333, 1334, 0]))
    assert "layers.0.moe.expert3 received no token in each of the last 2 windows" in problems
    assert "the router collapsed; raise model.moe_balance_coef above 0.01" in problems[-1]


@pytest.mark.gate("GATE-ARCH-012")
def test_a_collapse_lasting_one_evaluation_less_than_the_spec_holds() -> None:
    need = int(load_spec().threshold("GATE-ARCH-012", "collapse_evaluations"))
    collapsed, healthy = [1990, 1990, 10, 10], [1000, 1000, 1000, 1000]
    assert judge("GATE-ARCH-012", _windows(healthy, *[collapsed] * need)) != []
    assert judge("GATE-ARCH-012", _windows(healthy, *[collapsed] * (need - 1))) == []


# -- check total: a window's assignments are every token each layer received × top_k ----------------


def _overwrite_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each MoE forward overwrites the layer's counts with its own instead of adding them to the
    window's. A window of sixteen held-out batches then counts the last one."""
    real = MoE.forward

    def overwriting(self: MoE, x: torch.Tensor) -> torch.Tensor:
        before = self.routed.clone()
        out = real(self, x)
        self.routed = self.routed - before.to(self.routed.device)  # this forward's counts alone
        return out

    monkeypatch.setattr(MoE, "forward", overwriting)


@pytest.mark.gate("GATE-ARCH-012")
def test_routed_counts_overwritten_by_each_forward_stop_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts of the last held-out batch judged as the window: GATE-ARCH-012's check total halts
    the run at its first evaluation (exit 3), and GATE-ARCH-002 names the same short window."""
    _overwrite_routed(monkeypatch)
    out = tmp_path / "overwritten"
    assert _train(data, out) == 3
    err = capsys.readouterr().err
    assert "GATE-ARCH-012" in err and "the window's assignments add up to" in err
    shares = _result(out, "GATE-ARCH-002")
    assert shares["verdict"] == "WARN" and "the window's assignments add up to" in shares["message"]
    received, top_k = _result(out, "GATE-ARCH-012")["measured"]["routed_tokens"], 2
    window = _result(out, "GATE-ARCH-012")["measured"]["windows"][-1]
    assert all(sum(window[layer]) < n * top_k for layer, n in received.items())


@pytest.mark.holds("GATE-ARCH-002")
@pytest.mark.holds("GATE-ARCH-012")
def test_a_whole_window_adds_up_and_the_checker_derives_its_tokens(data: Path, tmp_path: Path) -> None:
    """A clean run's windows add up to batches × batch × ctx × top_k, which the checker derives
    from the config and the evaluation line: a record whose tokens say otherwise is refused."""
    out = tmp_path / "clean"
    assert _train(data, out) == 0
    record = EvidenceRecord.model_validate_json((out / "metadata.json").read_text())
    config = record.config or {}
    line = metric_lines(out, "eval")[-1]
    want = line["batches"] * config["train"]["batch_size"] * config["model"]["ctx"]
    for gate_id in ("GATE-ARCH-002", "GATE-ARCH-012"):
        result = _result(out, gate_id)
        assert result["verdict"] == "PASS" and result["measured"]["routed_tokens"] == {"layers.0.moe": want}
    assert sum(line["routed"]["layers.0.moe"]) == want * 2
    assert check_record_truth(record, out, load_spec()).violations == []
    forged = record.model_copy(deep=True)
    shares = next(g for g in forged.gates if g.id == "GATE-ARCH-002")
    shares.measured["routed_tokens"] = {"layers.0.moe": want // 16}
    violations = check_record_truth(forged, out, load_spec()).violations
    assert any("routed_tokens" in v and f"derive {want}" in v for v in violations), violations


@pytest.mark.gate("GATE-ARCH-002")
@pytest.mark.gate("GATE-ARCH-012")
def test_a_window_one_assignment_off_its_tokens_fires_and_an_exact_one_holds() -> None:
    """2048 tokens at top-2 are 4096 assignments: one fewer or one more fires both gates' check
    total, exactly 4096 holds."""
    for assigned, fires in ((4095, True), (4097, True), (4096, False)):
        window = {"layers.0.moe": [1024, 1024, 1024, assigned - 3072]}
        total = {"routed_tokens": {"layers.0.moe": 2048}, "top_k": 2}
        assert bool(judge("GATE-ARCH-002", {"routed": window, **total})) is fires
        collapse = {"windows": [window], **total, "balance_coef": 0.01}
        assert bool(judge("GATE-ARCH-012", collapse)) is fires
