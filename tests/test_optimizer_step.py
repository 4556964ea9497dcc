"""GATE-TRAIN-008: every step updates the weights from its own gradients at the scheduled rate.

Each falsifier plants its bug in a real `stack train` run, where a slip in the loop or the
optimizer's set-up would put it, and sees the run stop with exit 3 naming the gate. The rate
falsifiers put a known factor on what the optimizer applies, just beyond and just inside lr_rtol.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from train_support import evidence, prepared, smoke_args, step_lines, train

from contracts.judges import judge
from contracts.schedule import lr_at
from contracts.spec import load_spec
from stack.model import GPT, ModelConfig
from stack.train import loop


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


def _result(run: Path) -> dict[str, Any]:
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-008"]
    return result


def _halted(data: Path, run: Path, step: int) -> dict[str, Any]:
    """Train a smoke run into `run`; it must stop with exit 3, GATE-TRAIN-008 FAILed at `step`.
    Returns what the gate measured there."""
    assert train(smoke_args(data, run)) == 3
    result = _result(run)
    assert result["verdict"] == "FAIL" and result["step"] == step
    return result["measured"]


class _ScaledRate(dict):
    """A parameter group whose rate is stored times `factor` whatever the loop sets: a learning-rate
    multiplier left on a group, as a fine-tuning recipe might leave one."""

    factor = 1.0

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value * self.factor if key == "lr" else value)


def _rate_off_by(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    build = loop.build_optimizer

    def scaled(model: torch.nn.Module, config: object, device: torch.device) -> torch.optim.Optimizer:
        optimizer = build(model, config, device)  # type: ignore[arg-type]
        _ScaledRate.factor = factor
        optimizer.param_groups[:] = [_ScaledRate(group) for group in optimizer.param_groups]
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", scaled)


def _rtol() -> float:
    return load_spec().threshold("GATE-TRAIN-008", "lr_rtol")


def test_a_clean_run_logs_the_rate_it_applied_and_moves_every_parameter(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    result = _result(run)
    assert result["verdict"] == "PASS"
    measured = result["measured"]
    assert measured["stale_gradients"] == 0 and measured["unoptimized_parameters"] == 0
    model = GPT(ModelConfig.from_dict(evidence(run)["config"]["model"]))
    # A smoke run at its last step: every parameter has a nonzero gradient and moves.
    assert measured["stepped_parameters"] == measured["moved_parameters"] == len(list(model.parameters()))
    config = evidence(run)["config"]["train"]
    for line in step_lines(run):
        assert line["lr"] == lr_at(
            line["step"],
            lr=config["lr"],
            min_lr=config["min_lr"],
            warmup_steps=config["warmup_steps"],
            total_steps=config["steps"],
        )


@pytest.mark.gate("GATE-TRAIN-008")
def test_falsifier_an_optimizer_that_never_steps_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss stays at ln(vocab) and every other gate holds: only the weights show it."""
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, optimizer, *args, **kwargs: None)
    run = tmp_path / "run"
    measured = _halted(data, run, 1)
    assert measured["moved_parameters"] == 0 < measured["stepped_parameters"]


@pytest.mark.gate("GATE-TRAIN-008")
def test_falsifier_an_optimizer_over_a_copy_of_the_model_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It steps tensors, just not the model's: the model's gradients are never read."""
    build = loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", lambda m, c, d: build(copy.deepcopy(m), c, d))
    run = tmp_path / "run"
    measured = _halted(data, run, 1)
    assert measured["moved_parameters"] == 0 < measured["unoptimized_parameters"]


@pytest.mark.gate("GATE-TRAIN-008")
def test_falsifier_a_parameter_group_left_out_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The norm gains and biases are never applied: the other weights still move, and the loss falls."""
    build = loop.build_optimizer

    def without_vectors(
        model: torch.nn.Module, config: object, device: torch.device
    ) -> torch.optim.Optimizer:
        optimizer = build(model, config, device)  # type: ignore[arg-type]
        del optimizer.param_groups[1]  # group 0: the decayed matrices, group 1: the vectors
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", without_vectors)
    run = tmp_path / "run"
    measured = _halted(data, run, 1)
    assert measured["unoptimized_parameters"] > 0 and measured["moved_parameters"] > 0


@pytest.mark.gate("GATE-TRAIN-008")
def test_falsifier_gradients_never_cleared_halt_at_the_second_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2 would apply step 1's gradient again, added to its own."""
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", lambda self, set_to_none=True: None)
    run = tmp_path / "run"
    assert _halted(data, run, 2)["stale_gradients"] > 0
    assert [line["step"] for line in step_lines(run)] == [1]


@pytest.mark.gate("GATE-TRAIN-008")
def test_falsifier_a_rate_just_beyond_the_tolerance_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rate_off_by(monkeypatch, 1 + 1.1 * _rtol())
    run = tmp_path / "run"
    measured = _halted(data, run, 1)
    assert measured["applied_lr"] != measured["scheduled_lr"]


@pytest.mark.holds("GATE-TRAIN-008")
def test_a_rate_just_inside_the_tolerance_passes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rate_off_by(monkeypatch, 1 + 0.9 * _rtol())
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    assert _result(run)["verdict"] == "PASS"


@pytest.mark.parametrize(
    ("measured", "found"),
    [
        ({"stepped_parameters": 5, "moved_parameters": 0, "unoptimized_parameters": 0}, "none of the 5"),
        ({"stepped_parameters": 5, "moved_parameters": 5, "unoptimized_parameters": 2}, "2 parameter(s)"),
        ({"stale_gradients": 3}, "3 trained parameter(s)"),
        ({"applied_lr": 2e-3, "scheduled_lr": 3e-4}, "not the one the schedule"),
    ],
)
def test_the_judge_names_what_it_found(measured: dict[str, Any], found: str) -> None:
    (problem,) = judge("GATE-TRAIN-008", measured)
    assert found in problem


def test_a_step_with_no_nonzero_gradient_had_nothing_to_apply() -> None:
    """A clip of 0 or a DPO β of 0 zeroes every gradient: the loss's gates judge that, not this one."""
    nothing = {"stepped_parameters": 0, "moved_parameters": 0, "unoptimized_parameters": 0}
    assert judge("GATE-TRAIN-008", nothing) == []
