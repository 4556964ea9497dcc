"""GATE-TRAIN-001 check tensorboard across resumes.

TensorBoard turned on at a resume, or a resume after its event files were deleted: the Board a
resume opens first writes what the kept metrics lines give that the files lack (contracts.curves'
rule, read back with the check's reader), so the strict check passes over the whole run rather than
halting each leg on files that lack steps 1..N. A resume with train.tensorboard=false after a halted
leg does not say "completed" over that leg's FAIL: the check's values do not outlive the leg that
measured them. A resume says the step it continues from and what the log rolls back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from contracts import curves
from contracts.evidence import read_evidence
from contracts.judges import CHECKS
from contracts.spec import load_spec
from stack.train import checkpoint as ckpt
from stack.train import tensorboard
from stack.train.metrics import METRICS_FILE, ROLLED_BACK_FILE, read_lines
from tests.support.optional import requires
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth

pytestmark = requires("tensorboard")

SETS = ("train.steps=4", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2")
ON, OFF = "train.tensorboard=true", "train.tensorboard=false"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("tb-resume-data"))


@pytest.fixture(scope="module")
def plain(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of 4 steps without TensorBoard."""
    run = tmp_path_factory.mktemp("tb-resume-plain") / "run"
    assert train(smoke_args(data, run, *SETS)) == 0
    return run


def _resume(run: Path, *sets: str) -> int:
    return train(["train", "--resume", str(run), *[arg for s in sets for arg in ("--set", s)]])


def _gate(run: Path) -> dict[str, Any]:
    record = json.loads((run / "metadata.json").read_text())
    return next(g for g in record["gates"] if g["id"] == "GATE-TRAIN-001") | {
        "status": record["run"]["status"]
    }


def _agrees(run: Path) -> None:
    """The record's verdicts and status agree, and the checker holds it to its artifacts."""
    record = read_evidence(run / "metadata.json")
    assert check_record_truth(record, run, load_spec()).violations == []


def _whole(run: Path) -> None:
    """GATE-TRAIN-001 PASS with the check tensorboard over every point the lines give, from step 1."""
    gate = _gate(run)
    lines = read_lines(run / METRICS_FILE)
    assert gate["verdict"] == "PASS" and gate["status"] == "completed", gate
    assert gate["measured"]["tensorboard_mismatches"] == 0
    assert gate["measured"]["tensorboard_scalars"] == len(curves.expected(lines)) > 0
    shown = curves.shown(tensorboard.read_scalars(run))
    assert sorted(step for tag, step in shown if tag == "train/loss") == list(range(1, 7))
    _agrees(run)


def test_tensorboard_turned_on_at_a_resume_completes_with_whole_curves(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    capsys.readouterr()
    assert _resume(run, "train.steps=6", ON) == 0
    assert f"resuming from {ckpt.step_dir(run, 4).name} (step 4)" in capsys.readouterr().err
    _whole(run)


def test_a_resume_after_the_event_files_were_deleted_completes(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SETS, ON)) == 0
    for file in run.glob("events.out.tfevents.*"):
        file.unlink()
    assert _resume(run, "train.steps=6") == 0
    _whole(run)


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_miscounting_mirror_still_halts_a_resume_that_turns_tensorboard_on(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror that writes each point a step late, planted in the leg that turns TensorBoard on: the
    back-fill does not hide its points."""
    mirror = tensorboard.Board.line

    def counted(board: tensorboard.Board, kind: str, fields: dict[str, Any]) -> None:
        mirror(board, kind, {**fields, "step": board.step + 1})

    monkeypatch.setattr(tensorboard.Board, "line", counted)
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    assert _resume(run, "train.steps=6", ON) == 3
    gate = _gate(run)
    assert gate["verdict"] == "FAIL" and gate["status"] == "halted"
    assert gate["measured"]["tensorboard_mismatches"] > 0


def test_a_halted_run_resumed_with_tensorboard_off_has_a_record_that_agrees(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The halted leg's check values do not outlive its option; the record's verdicts and status
    agree and the checker holds it."""
    mirror = tensorboard.Board.line
    with monkeypatch.context() as planted:
        planted.setattr(
            tensorboard.Board, "line", lambda board, kind, fields: mirror(board, kind, {**fields, "step": 99})
        )
        run = tmp_path / "run"
        assert train(smoke_args(data, run, *SETS, ON)) == 3
    assert _gate(run)["verdict"] == "FAIL"
    assert _resume(run, "train.steps=6", OFF) == 0
    gate = _gate(run)
    assert gate["verdict"] == "PASS" and gate["status"] == "completed", gate
    assert not set(CHECKS["GATE-TRAIN-001"]["tensorboard"]) & set(gate["measured"])
    _agrees(run)


def test_a_resume_says_its_step_and_what_it_rolls_back(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As if the process died after step 4's line, before its checkpoint."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SETS, ON)) == 0
    shutil.rmtree(ckpt.list_checkpoints(run)[-1])
    capsys.readouterr()
    assert _resume(run) == 0
    err = capsys.readouterr().err
    assert f"resuming from {ckpt.step_dir(run, 2).name} (step 2); " in err, err
    assert f"steps 3-4 to be trained again move to {ROLLED_BACK_FILE}" in err, err
    assert [line["step"] for line in read_lines(run / ROLLED_BACK_FILE) if line["type"] == "step"] == [3, 4]
