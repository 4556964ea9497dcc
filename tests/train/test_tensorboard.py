"""`train.tensorboard = true`: event files beside metrics.jsonl, read back by TensorBoard's own reader.

The curves must be the metrics lines' numbers (the same host values, float32 in TensorBoard's
files), the gate verdicts and the samples must be there as text, and a run that asks for it
without the package is refused before it writes anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stack.train import checkpoint as ckpt
from stack.train import tensorboard
from tests.support.optional import requires
from tests.support.train_support import prepared, smoke_args, step_lines, train

if TYPE_CHECKING:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = requires("tensorboard")

STEPS = ["train.steps=4", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2", "train.tensorboard=true"]


def _read(run: Path) -> EventAccumulator:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _text(accumulator: EventAccumulator, tag: str) -> list[str]:
    return [event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors(f"{tag}/text_summary")]


def test_a_run_writes_its_curves_verdicts_and_samples_for_tensorboard(tmp_path: Path) -> None:
    data, run = prepared(tmp_path), tmp_path / "run"
    assert train(smoke_args(data, run, *STEPS)) == 0
    board = _read(run)
    scalars = set(board.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/heldout_loss"} <= scalars
    lines = step_lines(run)
    for name in ("loss", "lr", "grad_norm"):
        curve = [(e.step, e.value) for e in board.Scalars(f"train/{name}")]
        assert curve == [(line["step"], pytest.approx(line[name], rel=1e-6)) for line in lines]
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e.value for e in board.Scalars("eval/heldout_loss")] == [
        pytest.approx(e["heldout_loss"], rel=1e-6) for e in evals
    ]
    gates = _text(board, "gates")[-1]
    assert "| GATE-TRAIN-001 | PASS |" in gates and "| GATE-TRAIN-002 | PASS |" in gates
    samples = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"sample"' in x]
    assert len(_text(board, "samples")) == len(samples) == 2
    assert samples[-1]["texts"][0].splitlines()[0] in _text(board, "samples")[-1]


def test_tensorboard_asked_for_without_the_package_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tensorboard.importlib.util, "find_spec", lambda name: None)
    data, run = prepared(tmp_path), tmp_path / "run"
    assert train(smoke_args(data, run, *STEPS)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gatestack[tensorboard]" in err
    assert not run.exists()


def test_a_resume_keeps_one_curve(tmp_path: Path) -> None:
    """What a dead process logged after the checkpoint a resume starts from is dropped, as
    metrics.jsonl rolls those lines back: every step appears once, with the resumed run's value."""
    data, run = prepared(tmp_path), tmp_path / "run"
    assert train(smoke_args(data, run, *STEPS)) == 0
    shutil.rmtree(ckpt.list_checkpoints(run)[-1])  # as if the process died after step 4's line
    assert train(["train", "--resume", str(run)]) == 0
    curve = [(e.step, e.value) for e in _read(run).Scalars("train/loss")]
    assert [step for step, _ in curve] == [1, 2, 3, 4]
    assert [value for _, value in curve] == [
        pytest.approx(line["loss"], rel=1e-6) for line in step_lines(run)
    ]
