"""Falsifiers of the training gates: each plants its bug in a real `stack train` run and sees it fire."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from train_support import evidence, prepared, smoke_args, step_lines, train, verdicts

from contracts.errors import GateViolation
from stack.model.gpt import GPT
from stack.train.loop import Trainer
from stack.train.metrics import MetricsLog


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


def test_a_clean_run_passes_its_gates(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    record = evidence(run)
    assert record["run"]["status"] == "completed"
    got = verdicts(run)
    for gate in (
        "GATE-TRAIN-001",
        "GATE-TRAIN-002",
        "GATE-TRAIN-003",
        "GATE-TRAIN-004",
        "GATE-TRAIN-005",
        "GATE-CKPT-001",
        "GATE-EVAL-001",
        "GATE-EVAL-002",
    ):
        assert got[gate] == "PASS", gate
    # A 30k-token corpus cannot feed even a tiny model to the spec's tokens per parameter.
    assert got["GATE-DATA-004"] == "WARN"
    assert [ln["step"] for ln in step_lines(run)] == [1, 2, 3, 4, 5]


@pytest.mark.gate("GATE-TRAIN-003")
def test_non_finite_loss_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = GPT.forward

    def poisoned(self: GPT, idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):
        logits, loss = original(self, idx, targets, **kw)
        if targets is not None and self.training and poisoned.calls >= 2:
            loss = loss * float("nan")
        poisoned.calls += targets is not None and self.training
        return logits, loss

    poisoned.calls = 0
    monkeypatch.setattr(GPT, "forward", poisoned)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert "GATE-TRAIN-003" in capsys.readouterr().err
    record = evidence(run)
    assert record["run"]["status"] == "halted" and "GATE-TRAIN-003" in record["run"]["stop_reason"]
    assert verdicts(run)["GATE-TRAIN-003"] == "FAIL"
    assert [ln["step"] for ln in step_lines(run)] == [1, 2]  # step 3 never reached the weights


@pytest.mark.gate("GATE-TRAIN-002")
def test_config_without_clipping_is_refused_unless_waived(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "a", "train.clip_norm=0")) == 3
    assert "GATE-TRAIN-002" in capsys.readouterr().err
    waived = [
        *smoke_args(data, tmp_path / "b", "train.clip_norm=0"),
        "--waive",
        "GATE-TRAIN-002",
        "--reason",
        "measuring an unclipped baseline",
    ]
    assert train(waived) == 0
    assert verdicts(tmp_path / "b")["GATE-TRAIN-002"] == "WAIVED"
    assert evidence(tmp_path / "b")["waivers"][0]["reason"] == "measuring an unclipped baseline"


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_skipped_metrics_line_fires(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    line = {
        "step": 1,
        "epoch": 0,
        "loss": 5.0,
        "lr": 1e-3,
        "grad_norm": 1.0,
        "tokens_per_s": 10.0,
        "batch_sha256": "ab",
    }
    log.step(line)
    with pytest.raises(GateViolation, match=r"GATE-TRAIN-001.*jump from step 1 to 3"):
        log.step({**line, "step": 3})
    with pytest.raises(GateViolation, match="lacks grad_norm"):
        log.step({**line, "step": 2, "grad_norm": None})


@pytest.mark.gate("GATE-TRAIN-004")
def test_a_broken_init_is_caught_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = GPT.init_weights

    @torch.no_grad()
    def loud_init(self: GPT, generator: torch.Generator | None = None) -> None:
        original(self, generator)
        self.embed.weight.mul_(200.0)  # the planted bug: logits far from uniform

    monkeypatch.setattr(GPT, "init_weights", loud_init)
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert verdicts(tmp_path / "run")["GATE-TRAIN-004"] == "FAIL"


@pytest.mark.gate("GATE-TRAIN-005")
def test_degenerate_samples_halt_the_run(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stack.train.loop.coherence_score", lambda text: 0.0)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=8", "monitor.sample_every=1")) == 3
    assert verdicts(run)["GATE-TRAIN-005"] == "FAIL"
    assert len(step_lines(run)) == 5  # the fifth low score in a row halts


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_loop_that_skips_sampling_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Trainer, "sample", lambda self: {})
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert verdicts(tmp_path / "run")["GATE-TRAIN-005"] == "FAIL"


@pytest.mark.gate("GATE-EVAL-001")
def test_a_tiny_heldout_set_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "run", "eval.batches=4")) == 3
    assert "GATE-EVAL-001" in capsys.readouterr().err


@pytest.mark.gate("GATE-EVAL-002")
def test_impatient_early_stopping_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "run", "eval.patience=1")) == 3
    assert "GATE-EVAL-002" in capsys.readouterr().err
    assert train(smoke_args(data, tmp_path / "ok", "eval.patience=1", "eval.early_stop=false")) == 0


@pytest.mark.gate("GATE-DATA-004")
def test_inadequate_corpus_is_recorded_as_warn(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=6")) == 0
    metrics = evidence(run)["metrics"]
    assert metrics["tokens_per_parameter"] < 1 and verdicts(run)["GATE-DATA-004"] == "WARN"
    assert math.isclose(metrics["planned_tokens"], 6 * 4 * 32)
