"""The model a run trains is the model it evaluates, saves and serves (spec 1.22.0).

GATE-TRAIN-007 rev 6: every scoring records the mode its model ran in, and a training step's must
be training mode (check mode); at the probes, in both modes, the logits the loss read and the
loss itself are the model's plain forward without targets and its mean cross-entropy (check
inference). GATE-EVAL-001 rev 5: every evaluation's forwards run in evaluation mode (check mode).

Each falsifier plants one bug, or its nearest kin, through the stack's own
code and runs `stack train`: a loop that leaves the model in evaluation mode after evaluating
or leaves one module there, an evaluation run in training mode, a loss path that
skips the final norm in training or only in evaluation, and losses and logits off the
served ones just beyond inference_rtol (with their twins just inside, which hold).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from contracts.judges import judge
from contracts.spec import load_spec
from stack.model import gpt as gpt_module
from stack.model.config import ModelConfig
from stack.model.consumed import EVAL, MIXED, TRAIN, mode_of
from stack.model.gpt import GPT
from stack.train.loop import Trainer
from tests.support.train_support import evidence, prepared, smoke_args, train

# Two evaluations in four steps: a step after an evaluation is the third.
CADENCE = ("train.steps=4", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("served-data"))


def _failed(run: Path, gate_id: str) -> dict[str, Any]:
    """The FAIL result of `gate_id` in the halted run's record."""
    record = evidence(run)
    assert record["run"]["status"] == "halted"
    (result,) = [g for g in record["gates"] if g["id"] == gate_id]
    assert result["verdict"] == "FAIL"
    return result


def _passed(run: Path, gate_id: str) -> dict[str, Any]:
    """The measured values of `gate_id`'s PASS in the completed run's record."""
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == gate_id]
    assert result["verdict"] == "PASS"
    return result["measured"]


# -- the mode of every forward -----------------------------------------------------------------


def test_a_model_is_in_the_mode_every_one_of_its_modules_is_in() -> None:
    model = GPT(ModelConfig(vocab=11, d_model=8, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=16, ctx=8))
    assert mode_of(model.train()) == TRAIN and mode_of(model.eval()) == EVAL
    model.train().layers[0].eval()
    assert mode_of(model) == MIXED


@pytest.mark.holds("GATE-TRAIN-007", "GATE-EVAL-001")
def test_a_clean_run_trains_in_training_mode_and_evaluates_in_evaluation_mode(
    data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *CADENCE)) == 0
    trained, evaluated = _passed(run, "GATE-TRAIN-007"), _passed(run, "GATE-EVAL-001")
    assert (trained["modes"], trained["mismatched_modes"]) == ([TRAIN], 0)
    assert (evaluated["modes"], evaluated["mismatched_modes"]) == ([EVAL], 0)


def _after_an_evaluation(monkeypatch: pytest.MonkeyPatch, restore: Callable[[GPT], None]) -> None:
    """Once the loop has evaluated, a request for training mode does `restore` instead: the
    planted loop that does not (wholly) switch the model back."""
    evaluate, evaluated = Trainer.evaluate, []
    train_mode = nn.Module.train

    def evaluating(self: Trainer) -> dict[str, Any]:
        evaluated.append(True)
        return evaluate(self)

    def switching(self: nn.Module, mode: bool = True) -> nn.Module:
        if mode and evaluated and isinstance(self, GPT):
            restore(self)
            return self
        return train_mode(self, mode)

    monkeypatch.setattr(Trainer, "evaluate", evaluating)
    monkeypatch.setattr(GPT, "train", switching)


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize(
    ("restore", "mode"),
    [
        (lambda model: None, EVAL),
        (lambda model: nn.Module.train(model).layers[0].eval(), MIXED),
    ],
    ids=["left-in-evaluation-mode", "one-block-left-in-evaluation-mode"],
)
def test_a_step_after_an_evaluation_not_in_training_mode_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore: Callable[[GPT], None], mode: str
) -> None:
    """Planted: the model left out of training mode after an evaluation, its dropout not drawn (a LoRA
    run's adapters would train without it): the first step after the first evaluation stops, naming
    the mode its loss ran in."""
    _after_an_evaluation(monkeypatch, restore)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *CADENCE)) == 3
    result = _failed(run, "GATE-TRAIN-007")
    assert result["step"] == 3 and result["measured"]["modes"] == [mode]
    assert result["measured"]["mismatched_modes"] == 1  # the step's one scoring


@pytest.mark.gate("GATE-EVAL-001")
def test_an_evaluation_in_training_mode_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop evaluates without switching the model to evaluation mode: dropout
    is drawn into every held-out loss early stopping judges. The first evaluation stops."""
    evaluate = Trainer.evaluate

    def in_training_mode(self: Trainer) -> dict[str, Any]:
        self.model.eval = lambda: self.model  # type: ignore[method-assign]
        try:
            return evaluate(self)
        finally:
            del self.model.eval

    monkeypatch.setattr(Trainer, "evaluate", in_training_mode)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *CADENCE)) == 3
    result = _failed(run, "GATE-EVAL-001")
    assert result["step"] == 2 and result["measured"]["modes"] == [TRAIN]
    assert result["measured"]["mismatched_modes"] == result["measured"]["scorings"]


# -- the loss trains the served function --------------------------------------------------------


@contextmanager
def _final_norm_as(model: GPT, module: nn.Module) -> Iterator[None]:
    """`model` with `module` (in the model's mode) in place of its final norm for the block."""
    norm = model.final_norm
    model.final_norm = module.train(model.training)
    try:
        yield
    finally:
        model.final_norm = norm


class _Scaled(nn.Module):
    """A norm's output times `factor`: the head's logits times `factor` (the head has no bias)."""

    def __init__(self, norm: nn.Module, factor: float) -> None:
        super().__init__()
        self.norm, self.factor = norm, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.factor


def _loss_path(
    monkeypatch: pytest.MonkeyPatch, norm: Callable[[GPT], nn.Module], only_eval: bool = False
) -> None:
    """GPT.forward with targets (the loss path) runs with `norm(model)` as its final norm, in every
    mode or (`only_eval`) in evaluation mode only; without targets it is the model's own."""
    forward = GPT.forward

    def planted(self: GPT, idx: torch.Tensor, targets: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if targets is None or (only_eval and self.training):
            return forward(self, idx, targets, **kwargs)
        with _final_norm_as(self, norm(self)):
            return forward(self, idx, targets, **kwargs)

    monkeypatch.setattr(GPT, "forward", planted)


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize("only_eval", [False, True], ids=["in-every-mode", "in-evaluation-mode-only"])
def test_a_loss_path_that_skips_the_final_norm_stops_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only_eval: bool
) -> None:
    """Planted: the loss (and, in evaluation mode, every held-out loss) is computed without
    the final norm the served model applies; every earlier probe called the model without targets."""
    _loss_path(monkeypatch, lambda model: nn.Identity(), only_eval)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *CADENCE)) == 3
    result = _failed(run, "GATE-TRAIN-007")
    assert result["step"] == 1 and result["measured"]["inference_logits_deviation"] > 0.1


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRAIN-007")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRAIN-007")),
    ],
)
def test_logits_off_the_served_ones_just_beyond_inference_rtol_fire_and_just_inside_hold(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: float, fires: bool
) -> None:
    """The loss path's logits are the served ones times 1 + times × inference_rtol: that far off
    in units of the largest logit (the loss moves less: its own deviation stays inside)."""
    rtol = load_spec().threshold("GATE-TRAIN-007", "inference_rtol")
    _loss_path(monkeypatch, lambda model: _Scaled(model.final_norm, 1 + times * rtol))
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == (3 if fires else 0)
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert measured["inference_logits_deviation"] == pytest.approx(times * rtol, rel=0.01)
    assert measured["inference_loss_deviation"] < rtol


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRAIN-007")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRAIN-007")),
    ],
)
def test_a_loss_off_the_served_cross_entropy_just_beyond_inference_rtol_fires_and_just_inside_holds(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: float, fires: bool
) -> None:
    """The forward's cross-entropy times 1 + times × inference_rtol, its logits untouched: the loss
    is read as it trains, not as the forward recorded its logits (the gradient probe's tolerance is
    ten times wider, so only the inference check can see it)."""
    rtol = load_spec().threshold("GATE-TRAIN-007", "inference_rtol")
    cross_entropy = gpt_module.F.cross_entropy

    class Scaled:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch.nn.functional, name)

        def cross_entropy(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            return cross_entropy(*args, **kwargs) * (1 + times * rtol)

    monkeypatch.setattr(gpt_module, "F", Scaled())
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == (3 if fires else 0)
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert measured["inference_loss_deviation"] == pytest.approx(times * rtol, rel=0.01)


# -- the judges at their edge ---------------------------------------------------------------------

RTOL = float(load_spec().threshold("GATE-TRAIN-007", "inference_rtol"))
AT_RTOL = {"inference_logits_deviation": RTOL, "inference_loss_deviation": RTOL}


def past(value: float) -> float:
    """The next float above `value`: the smallest disagreement there is."""
    return math.nextafter(value, math.inf)


def case(gate_id: str, measured: dict[str, Any], name: str, mark: Any) -> Any:
    """One judge case, marked for the gate it proves."""
    return pytest.param(gate_id, measured, id=name, marks=mark(gate_id))


@pytest.mark.parametrize(
    ("gate_id", "measured"),
    [
        case(
            "GATE-TRAIN-007",
            {**AT_RTOL, "inference_logits_deviation": past(RTOL)},
            "logits",
            pytest.mark.gate,
        ),
        case("GATE-TRAIN-007", {**AT_RTOL, "inference_loss_deviation": past(RTOL)}, "loss", pytest.mark.gate),
        case("GATE-TRAIN-007", {**AT_RTOL, "inference_loss_deviation": "nan"}, "nan", pytest.mark.gate),
        case("GATE-TRAIN-007", {"modes": [TRAIN, EVAL], "mismatched_modes": 1}, "train", pytest.mark.gate),
        case("GATE-EVAL-001", {"modes": [EVAL, TRAIN], "mismatched_modes": 1}, "eval", pytest.mark.gate),
    ],
)
def test_the_nearest_disagreement_fires(gate_id: str, measured: dict[str, Any]) -> None:
    assert judge(gate_id, measured)


@pytest.mark.parametrize(
    ("gate_id", "measured"),
    [
        case("GATE-TRAIN-007", AT_RTOL, "at-rtol", pytest.mark.holds),
        case("GATE-TRAIN-007", {"modes": [TRAIN, EVAL], "mismatched_modes": 0}, "train", pytest.mark.holds),
        case("GATE-EVAL-001", {"modes": [EVAL], "mismatched_modes": 0}, "eval", pytest.mark.holds),
    ],
)
def test_agreement_holds(gate_id: str, measured: dict[str, Any]) -> None:
    assert judge(gate_id, measured) == []
