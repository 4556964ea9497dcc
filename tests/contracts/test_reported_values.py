"""What a run reports is what its gates judged, and both are what it measured (spec 1.18.0).

Each falsifier plants, through `stack train`, a bug that leaves the measurements right and the
summary wrong: a token count without gradient accumulation (GATE-TRAIN-001 counted), a gradient
norm read after the clip (GATE-TRAIN-008, which reads the norm the line logs), a held-out mean
that leaves out a batch and a stopper handed half the losses (GATE-EVAL-002 aggregated, judged),
a sampling round scored by its best prompt (GATE-TRAIN-005 scored) and an overfit detector fed the
train loss twice (GATE-EVAL-004 compared, spec 1.19.0); and, from 1.20.0, a logged loss and a
held-out loss other than the cross-entropy the model's forward made (GATE-TRAIN-007 logged,
GATE-EVAL-002 forwards), and from 1.21.0 an evaluation computed in another precision than the run
(GATE-EVAL-001 precision). The judges are then held
at their edge: equal values hold and the nearest float or count past them fires, so a tolerance
slipped into any of these checks turns a test red.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.derive.training import mean_and_stderr
from contracts.judges import judge
from stack.train.early_stop import EarlyStopper
from stack.train.loop import Trainer
from stack.train.objective import Pretrain, StepLoss
from stack.train.overfit import OverfitDetector
from stack.train.presets import PRESETS
from tests.support.ledger_support import config_edited, edited, findings
from tests.support.train_support import (
    autocast_of,
    evidence,
    metric_lines,
    prepared,
    smoke_args,
    step_lines,
    train,
    verdicts,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


def gate_measured(run: Path, gate_id: str) -> dict[str, Any]:
    """The values the record keeps for `gate_id`."""
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == gate_id]
    return result["measured"]


@pytest.mark.holds("GATE-TRAIN-001", "GATE-EVAL-002", "GATE-TRAIN-005")
def test_a_clean_run_logs_what_it_judged(data: Path, tmp_path: Path) -> None:
    """With accumulation, every step line counts the tokens served, the evaluation line logs each
    batch's loss and its mean is theirs, and the record holds the new checks' values."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.grad_accum=2")) == 0
    lines = step_lines(run)
    smoke = PRESETS["smoke"]
    per_step = smoke["train"]["batch_size"] * 2 * smoke["model"]["ctx"]  # grad_accum 2, one rank
    assert {line["tokens"] for line in lines} == {per_step}
    assert evidence(run)["metrics"]["tokens_seen"] == per_step * len(lines)
    (evaluation,) = metric_lines(run, "eval")
    assert (evaluation["heldout_loss"], evaluation["heldout_stderr"]) == mean_and_stderr(
        evaluation["heldout_losses"]
    )
    assert gate_measured(run, "GATE-TRAIN-001")["served_tokens"] == per_step
    assert gate_measured(run, "GATE-EVAL-002")["judged_loss"] == evaluation["heldout_loss"]
    scored = {"texts_score", "observed_score", "logged_score", "texts_scored", "texts_not_drawn"}
    assert scored <= gate_measured(run, "GATE-TRAIN-005").keys()


@pytest.mark.holds("GATE-INTEG-001")
def test_a_run_without_early_stopping_is_not_asked_for_the_stoppers_values(
    data: Path, tmp_path: Path
) -> None:
    """With eval.early_stop=false the stopper judges nothing, so its checks (GATE-EVAL-002 stderr,
    judged) are asked only of records that turn it on; the evaluation's own are still there."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "eval.early_stop=false")) == 0
    assert findings(run) == []
    assert {"reported_loss", "losses_mean"} <= gate_measured(run, "GATE-EVAL-002").keys()
    assert "judged_loss" not in gate_measured(run, "GATE-EVAL-002")


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_step_counted_without_its_accumulation_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tokens_per_step leaves out grad_accum: tokens seen, epochs and the plan are halved."""
    monkeypatch.setattr(
        Trainer,
        "tokens_per_step",
        property(lambda self: self.config.train.batch_size * self.seq_len * self.world.size),
    )
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.grad_accum=2")) == 3
    assert verdicts(run)["GATE-TRAIN-001"] == "FAIL"
    assert step_lines(run) == []  # refused before the first line was written


@pytest.mark.gate("GATE-TRAIN-008")
def test_a_gradient_norm_read_after_the_clip_is_caught_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's norm is the clipped gradient's, not the one clipping measured: the line would log
    the clip (0.5 here) as the norm. GATE-TRAIN-008 compares the logged norm with its reference."""
    clip = torch.nn.utils.clip_grad_norm_

    def after_the_clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        clip(parameters, max_norm, *args, **kwargs)
        return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", after_the_clip)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.clip_norm=0.5")) == 3
    assert verdicts(run)["GATE-TRAIN-008"] == "FAIL"
    assert "gradient norm before the clip" in str(evidence(run)["gates"])


@pytest.mark.gate("GATE-EVAL-002")
def test_a_held_out_mean_without_its_last_batch_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation reports the mean of all batches but the last."""
    monkeypatch.setattr("stack.train.loop.mean_and_stderr", lambda losses: mean_and_stderr(losses[:-1]))
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert verdicts(run)["GATE-EVAL-002"] == "FAIL"
    assert metric_lines(run, "eval") == []  # refused before the line was written


@pytest.mark.gate("GATE-EVAL-002")
def test_a_stopper_handed_half_the_losses_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early stopping judges the first half of the held-out losses."""
    observe = EarlyStopper.observe

    def half(self: EarlyStopper, losses: list[float], epoch: float, step: int) -> bool:
        return observe(self, losses[: len(losses) // 2], epoch, step)

    monkeypatch.setattr(EarlyStopper, "observe", half)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert verdicts(run)["GATE-EVAL-002"] == "FAIL"


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_logged_loss_other_than_the_forwards_stops_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objective logs half the loss it back-propagates (a second division by grad_accum 2):
    the weights train on the right loss, the line and every judge of it read the wrong one."""
    loss = Pretrain.loss

    def halved(self: Pretrain, forward: Any, model: torch.nn.Module, batch: torch.Tensor) -> StepLoss:
        made = loss(self, forward, model, batch)
        return StepLoss(backprop=made.backprop, logged=made.logged / 2, metrics=made.metrics)

    monkeypatch.setattr(Pretrain, "loss", halved)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.grad_accum=2")) == 3
    assert verdicts(run)["GATE-TRAIN-007"] == "FAIL"
    assert step_lines(run) == []


@pytest.mark.gate("GATE-EVAL-002")
def test_a_held_out_loss_altered_after_its_forward_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each held-out batch's loss is shaved by 1% after the model made it: the mean, its error and
    the stopper all agree with each other, and none with the model."""
    heldout_loss = Pretrain.heldout_loss

    def shaved(self: Pretrain, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return heldout_loss(self, model, batch) * 0.99

    monkeypatch.setattr(Pretrain, "heldout_loss", shaved)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert verdicts(run)["GATE-EVAL-002"] == "FAIL"
    assert "not the cross-entropy their forward computed" in str(evidence(run)["gates"])


@pytest.mark.gate("GATE-EVAL-001")
@pytest.mark.parametrize(
    ("precision", "other"),
    [("fp32", "bfloat16"), ("bf16", None)],
    ids=["fp32-evaluated-in-bf16", "bf16-evaluated-in-fp32"],
)
def test_an_evaluation_in_another_precision_than_the_run_stops_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str, other: str | None
) -> None:
    """The evaluation computes under an autocast to `other` (None: none at all) whatever the run
    asked for: training computes as configured, the held-out losses it is compared with do not."""
    evaluate, configured, elsewhere = Trainer.evaluate, Trainer._autocast, autocast_of(other)
    evaluating = [False]

    def marked(self: Trainer) -> dict[str, Any]:
        evaluating[0] = True
        try:
            return evaluate(self)
        finally:
            evaluating[0] = False

    monkeypatch.setattr(Trainer, "evaluate", marked)
    monkeypatch.setattr(Trainer, "_autocast", lambda self: (elsewhere if evaluating[0] else configured)(self))
    run = tmp_path / "run"
    assert train(smoke_args(data, run, f"train.precision='{precision}'")) == 3
    assert verdicts(run)["GATE-EVAL-001"] == "FAIL"
    assert "the evaluation read logits in" in str(evidence(run)["gates"])


@pytest.mark.gate("GATE-EVAL-004")
def test_an_overfit_detector_fed_the_train_loss_is_recorded(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector is handed the train loss as the held-out loss, so the two can never part. A
    warning gate: the run goes on and its record says WARN, naming what the detector compared."""
    observe = OverfitDetector.observe

    def blind(self: OverfitDetector, train_loss: float, heldout_loss: float, step: int) -> bool:
        return observe(self, train_loss, train_loss, step)

    monkeypatch.setattr(OverfitDetector, "observe", blind)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    assert verdicts(run)["GATE-EVAL-004"] == "WARN"
    assert "the detector watched other numbers" in str(evidence(run)["gates"])


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_round_scored_by_its_best_prompt_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor is fed the best prompt's score: one good sample hides the others' collapse."""
    monkeypatch.setattr("stack.train.loop.sample_score", max)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert verdicts(run)["GATE-TRAIN-005"] == "FAIL"


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_round_scoring_its_prompt_with_the_samples_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The texts scored carry their prompt's words ahead of what the model drew: a round of fluent
    prompts flatters the score of a collapsing model, every count of the draws and the score's
    arithmetic still right. The draws decoded again are not those texts."""
    text_drawn = Trainer.text_drawn
    monkeypatch.setattr(Trainer, "text_drawn", lambda self, drawn: "def " + text_drawn(self, drawn))
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert verdicts(run)["GATE-TRAIN-005"] == "FAIL"
    measured = gate_measured(run, "GATE-TRAIN-005")
    assert measured["texts_not_drawn"] == measured["texts_scored"] > 0


# -- the judges at their edge: equal holds, the nearest value past it fires -----------------------

LOSSES = [5.0, 5.25, 4.5, 5.125]
MEAN, STDERR = mean_and_stderr(LOSSES)
AGGREGATED = {
    "set_batches": 4,
    "averaged_losses": 4,
    "losses_mean": MEAN,
    "losses_stderr": STDERR,
    "reported_loss": MEAN,
    "reported_stderr": STDERR,
    "judged_loss": MEAN,
    "judged_stderr": STDERR,
}


def past(value: float) -> float:
    """The next float above `value`: the smallest disagreement there is."""
    return math.nextafter(value, math.inf)


COMPARED = {
    "compared_train_loss": 4.0,
    "compared_heldout_loss": MEAN,
    "reported_train_loss": 4.0,
    "reported_heldout_loss": MEAN,
}
NAN = dict.fromkeys(AGGREGATED.keys() - {"set_batches", "averaged_losses"}, "nan")


def case(gate_id: str, measured: dict[str, Any], mark: Any) -> Any:
    """One judge case, marked for the gate it proves."""
    return pytest.param(gate_id, measured, marks=mark(gate_id))


@pytest.mark.parametrize(
    ("gate_id", "measured"),
    [
        case("GATE-EVAL-002", {**AGGREGATED, "averaged_losses": 3}, pytest.mark.gate),
        case("GATE-EVAL-002", {**AGGREGATED, "reported_loss": past(MEAN)}, pytest.mark.gate),
        case("GATE-EVAL-002", {**AGGREGATED, "reported_stderr": past(STDERR)}, pytest.mark.gate),
        case("GATE-EVAL-002", {**AGGREGATED, "judged_loss": past(MEAN)}, pytest.mark.gate),
        case("GATE-EVAL-002", {**AGGREGATED, "judged_stderr": past(STDERR)}, pytest.mark.gate),
        case(
            "GATE-TRAIN-005",
            {"texts_score": 50.0, "observed_score": past(50.0), "logged_score": 50.0},
            pytest.mark.gate,
        ),
        case(
            "GATE-TRAIN-005",
            {"texts_score": 50.0, "observed_score": 50.0, "logged_score": past(50.0)},
            pytest.mark.gate,
        ),
        case("GATE-TRAIN-005", {"texts_scored": 3, "texts_not_drawn": 1}, pytest.mark.gate),
        case("GATE-TRAIN-001", {"served_tokens": 256, "step_tokens": 257}, pytest.mark.gate),
        case("GATE-TRAIN-001", {"served_tokens": 256, "step_tokens": 255}, pytest.mark.gate),
        case("GATE-EVAL-004", {**COMPARED, "compared_heldout_loss": past(MEAN)}, pytest.mark.gate),
        case("GATE-EVAL-004", {**COMPARED, "compared_train_loss": past(4.0)}, pytest.mark.gate),
        case("GATE-TRAIN-007", {"logged_loss": past(MEAN), "forward_loss": MEAN}, pytest.mark.gate),
        case("GATE-EVAL-002", {"compared_losses": 16, "mismatched_losses": 1}, pytest.mark.gate),
        case("GATE-EVAL-001", {"precision": "fp32", "logits_dtypes": ["bfloat16"]}, pytest.mark.gate),
        case(
            "GATE-EVAL-001", {"precision": "bf16", "logits_dtypes": ["bfloat16", "float32"]}, pytest.mark.gate
        ),
    ],
)
def test_the_nearest_disagreement_fires(gate_id: str, measured: dict[str, Any]) -> None:
    assert judge(gate_id, measured)


@pytest.mark.parametrize(
    ("gate_id", "measured"),
    [
        case("GATE-EVAL-002", AGGREGATED, pytest.mark.holds),
        case("GATE-EVAL-002", {**AGGREGATED, **NAN}, pytest.mark.holds),
        case(
            "GATE-TRAIN-005",
            {"texts_score": 50.0, "observed_score": 50.0, "logged_score": 50.0},
            pytest.mark.holds,
        ),
        case("GATE-TRAIN-005", {"texts_scored": 3, "texts_not_drawn": 0}, pytest.mark.holds),
        case("GATE-TRAIN-001", {"served_tokens": 256, "step_tokens": 256}, pytest.mark.holds),
        case("GATE-EVAL-004", COMPARED, pytest.mark.holds),
        case("GATE-TRAIN-007", {"logged_loss": MEAN, "forward_loss": MEAN}, pytest.mark.holds),
        case("GATE-TRAIN-007", {"logged_loss": "nan", "forward_loss": "nan"}, pytest.mark.holds),
        case("GATE-EVAL-002", {"compared_losses": 16, "mismatched_losses": 0}, pytest.mark.holds),
        case("GATE-EVAL-001", {"precision": "fp32", "logits_dtypes": ["float32"]}, pytest.mark.holds),
        case("GATE-EVAL-001", {"precision": "bf16", "logits_dtypes": ["bfloat16"]}, pytest.mark.holds),
    ],
)
def test_agreement_holds(gate_id: str, measured: dict[str, Any]) -> None:
    """Equal values hold, NaN included (a NaN loss is GATE-EVAL-002's stderr check's to judge)."""
    assert judge(gate_id, measured) == []


# -- GATE-EVAL-002 check asked: the set every evaluation scored is the one the recorded config asks for --


@pytest.mark.gate("GATE-EVAL-002")
def test_a_held_out_set_sized_by_the_default_not_eval_batches_stops_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the loop hands the objective no eval.batches (`heldout(…, None)`), so a run asked
    for 20 held-out batches scores the spec's minimum at every evaluation while its config says 20.
    GATE-EVAL-002's check asked holds the set scored to the config: exit 3 before the line is written."""
    heldout = Pretrain.heldout

    def dropped(self: Pretrain, data_dir: Path, batch_size: int, seq_len: int, n: int | None) -> list[Any]:
        return heldout(self, data_dir, batch_size, seq_len, None)

    monkeypatch.setattr(Pretrain, "heldout", dropped)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "eval.batches=20")) == 3
    assert verdicts(run)["GATE-EVAL-002"] == "FAIL"
    assert "where the run's config asks for 20" in str(evidence(run)["gates"])
    assert metric_lines(run, "eval") == []


@pytest.mark.holds("GATE-EVAL-002")
def test_a_held_out_set_of_the_asked_size_holds_and_the_checker_agrees(data: Path, tmp_path: Path) -> None:
    """eval.batches=20 scored as 20 holds; the record states the asked size and the checker derives
    it from config.toml and metrics.jsonl. A line whose set is one batch short is a finding."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "eval.batches=20")) == 0
    assert gate_measured(run, "GATE-EVAL-002")["asked_batches"] == 20
    (evaluation,) = metric_lines(run, "eval")
    assert evaluation["batches"] == len(evaluation["heldout_losses"]) == 20
    assert findings(run) == []
    measured = dict(gate_measured(run, "GATE-EVAL-002"))
    assert judge("GATE-EVAL-002", measured) == []
    assert judge("GATE-EVAL-002", measured | {"asked_batches": 21})


@pytest.mark.gate("GATE-INTEG-001")
def test_a_config_asking_for_another_held_out_set_than_the_lines_scored_is_caught(
    data: Path, tmp_path: Path
) -> None:
    """The record of a run that scored 20 held-out batches, its config.toml made to ask for 24 and
    everything else re-derived by a perfect forger: the evaluation lines still say 20, as those of a
    loop that ignores eval.batches would."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "eval.batches=20")) == 0
    edited(run, config_edited("batches = 20", "batches = 24"))
    assert any(
        "scored 20 held-out batches (20 losses), but its config asks for 24" in f for f in findings(run)
    )
