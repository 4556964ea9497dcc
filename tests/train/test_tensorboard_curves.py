"""GATE-TRAIN-001 check tensorboard: the TensorBoard curves a run writes are its metrics lines'.

A mutant mirror that counts lines instead of reading each line's step draws train/loss of steps
1..6 at steps 2, 4, 5, 8, 9, 11 while metrics.jsonl stays right, and every gate passes unless
something reads the event files back. The run reads them back with TensorBoard's own
reader when it closes them, and holds every (tag, step, value) to the lines by contracts.curves:
the planted mirror halts the finished run (exit 3, the gate FAIL in its record); a correct run and
a resumed one (whose purge drops what a dead process logged past its checkpoint) hold, and the
checker holds their records.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import curves
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.train import checkpoint as ckpt
from stack.train import tensorboard
from stack.train.metrics import METRICS_FILE, read_lines
from tests.support.ledger_support import assert_check_required
from tests.support.optional import requires
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth

pytestmark = requires("tensorboard")

SETS = ("train.steps=4", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2", "train.tensorboard=true")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("tb-data"))


def _gate(run: Path) -> dict[str, Any]:
    record = json.loads((run / "metadata.json").read_text())
    return next(g for g in record["gates"] if g["id"] == "GATE-TRAIN-001") | {
        "status": record["run"]["status"]
    }


def _held(run: Path) -> None:
    """The run's record: GATE-TRAIN-001 PASS over every scalar the lines give, and the checker agrees."""
    gate = _gate(run)
    lines = read_lines(run / METRICS_FILE)
    assert gate["verdict"] == "PASS" and gate["measured"]["tensorboard_mismatches"] == 0, gate
    assert gate["measured"]["tensorboard_scalars"] == len(curves.expected(lines)) > 0
    record = read_evidence(run / "metadata.json")
    assert check_record_truth(record, run, load_spec()).violations == []


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_mirror_that_counts_lines_halts_the_finished_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: each line mirrored at the step after the previous line's, not at its own."""
    mirror = tensorboard.Board.line

    def counted(board: tensorboard.Board, kind: str, fields: dict[str, Any]) -> None:
        mirror(board, kind, {**fields, "step": board.step + 1})

    monkeypatch.setattr(tensorboard.Board, "line", counted)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SETS)) == 3
    err = capsys.readouterr().err
    assert "GATE-TRAIN-001" in err and "train/loss at step" in err, err
    gate = _gate(run)
    assert gate["verdict"] == "FAIL" and gate["status"] == "halted"
    assert (
        gate["measured"]["tensorboard_mismatches"] > 0 and "train/" in gate["measured"]["tensorboard_first"]
    )
    assert [line["step"] for line in read_lines(run / METRICS_FILE) if line["type"] == "step"] == [1, 2, 3, 4]
    # an honest record of the halt: the checker finds nothing to object to
    assert check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations == []


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_curve_value_a_float32_spacing_off_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Just beyond float32 rounding: the last step's loss mirrored 2**-22 relatively higher (one or two
    float32 spacings), at its own step."""
    mirror = tensorboard.Board.line

    def nudged(board: tensorboard.Board, kind: str, fields: dict[str, Any]) -> None:
        if kind == "step" and fields["step"] == 4:
            fields = {**fields, "loss": fields["loss"] * (1 + 2**-22)}
        mirror(board, kind, fields)

    monkeypatch.setattr(tensorboard.Board, "line", nudged)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SETS)) == 3
    err = capsys.readouterr().err
    assert "GATE-TRAIN-001" in err and "train/loss at step 4 shows" in err, err
    assert _gate(run)["measured"]["tensorboard_mismatches"] == 1


@pytest.fixture(scope="module")
def mirrored(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A correct run with TensorBoard on, finished."""
    run = tmp_path_factory.mktemp("tb-run") / "run"
    assert train(smoke_args(data, run, *SETS)) == 0
    return run


@pytest.mark.holds("GATE-TRAIN-001")
def test_a_run_and_its_resume_keep_curves_that_are_the_lines(mirrored: Path, tmp_path: Path) -> None:
    """A correct run holds; so does its resume from step 2 after the process 'died' past step 4's
    line (the purge drops those scalars, as metrics.jsonl rolls the lines back), at float32."""
    _held(mirrored)
    run = tmp_path / "run"
    shutil.copytree(mirrored, run)
    shutil.rmtree(ckpt.list_checkpoints(run)[-1])  # as if the process died after step 4's line
    assert train(["train", "--resume", str(run)]) == 0
    _held(run)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # both processes' files were read


def _dated(run: Path, ahead_s: float) -> str:
    """Rename the run's one event file as if made `ahead_s` seconds from now, on a host whose name
    sorts after any other, by a process's tenth writer (so a same-second name sorts after it too)."""
    (old,) = run.glob(tensorboard.EVENT_FILES)
    name = f"events.out.tfevents.{int(time.time() + ahead_s):010d}.zzzz.1.9"
    old.rename(run / name)
    return name


@pytest.mark.holds("GATE-TRAIN-001")
def test_a_resume_in_the_dead_process_s_second_still_shows_its_own_curves(
    mirrored: Path, tmp_path: Path
) -> None:
    """A flake once seen in the proofs, planted: the dead process's file is named to sort after whatever a
    resume made at once would be named (TensorBoard reads files in name order, so its stale steps 3-4
    showed over the resume's). The resume waits until its own file sorts last, and holds."""
    run = tmp_path / "run"
    shutil.copytree(mirrored, run)
    shutil.rmtree(ckpt.list_checkpoints(run)[-1])
    old = _dated(run, 3)
    assert train(["train", "--resume", str(run)]) == 0
    _held(run)
    assert sorted(path.name for path in run.glob(tensorboard.EVENT_FILES))[0] == old


def test_a_resume_behind_an_event_file_from_the_future_is_refused_in_one_line(
    mirrored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event file dated well past this machine's clock (copied from a node whose clock runs ahead)
    would sort after the resume's for as long as it is ahead: one line naming it and the ways out."""
    run = tmp_path / "run"
    shutil.copytree(mirrored, run)
    shutil.rmtree(ckpt.list_checkpoints(run)[-1])
    old = _dated(run, tensorboard.CLOCK_WAIT_S + 60)
    capsys.readouterr()
    assert train(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert old in line and "ahead of this machine's clock" in line and "train.tensorboard=false" in line, err
    assert "Traceback" not in err
    assert train(["train", "--resume", str(run), "--set", "train.tensorboard=false"]) == 0


@pytest.mark.gate("GATE-INTEG-001")
def test_a_tensorboard_record_without_the_check_is_caught(mirrored: Path, tmp_path: Path) -> None:
    """run_kinds: a completed run with train.tensorboard on must show the check's values."""
    assert_check_required(mirrored, tmp_path / "run", "train", "GATE-TRAIN-001", "tensorboard")


# Metrics lines as the loop writes them: steps (with an objective's extra number), evaluations,
# samples and events, at steps in any order, some repeated.
LINES = st.lists(
    st.one_of(
        st.builds(
            lambda step, loss, extra: {
                "type": "step",
                "step": step,
                "loss": loss,
                "lr": 1e-3,
                "margin": extra,
            },
            st.integers(1, 9),
            st.floats(0.0, 20.0),
            st.integers(0, 2**30),
        ),
        st.builds(
            lambda step, loss: {"type": "eval", "step": step, "heldout_loss": loss, "early_stop": False},
            st.integers(1, 9),
            st.floats(0.0, 20.0),
        ),
        st.builds(
            lambda step: {"type": "sample", "step": step, "score": 0.5, "texts": ["x"]}, st.integers(1, 9)
        ),
        st.builds(lambda step: {"type": "event", "step": step, "event": "wrap"}, st.integers(1, 9)),
    ),
    max_size=20,
)


def _written(lines: list[dict[str, Any]], shift: int = 0) -> list[curves.Scalar]:
    """The scalars a mirror writes by the statute's rule, `shift` steps late, stored at float32."""
    return [
        (tag, line["step"] + shift, curves.float32(value))
        for line in lines
        for tag, value in curves.line_scalars(line["type"], line)
    ]


@given(LINES)
def test_the_scalars_the_rule_writes_match_their_lines(lines: list[dict[str, Any]]) -> None:
    assert curves.mismatches(_written(lines), lines) == []


@given(LINES, st.integers(1, 3))
def test_scalars_written_at_other_steps_never_match(lines: list[dict[str, Any]], shift: int) -> None:
    written = _written(lines, shift)
    assert (curves.mismatches(written, lines) == []) == (written == [])
