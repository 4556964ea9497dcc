"""Falsifiers of a training record's invocations: the resumes it lists are the ones its log shows.

A resume listed in `metrics.resumes` switches checks (the wall time is measured from its leg, its
command line may waive a gate), so a forger adding one to an honest record, or moving one, is
caught from the `schedule` event each invocation logs where it starts and the `checkpoint`
events a resume continues from (contracts/derive/invocations.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.ledger_support import (
    CURRENT_RUN,
    assert_caught,
    edited,
    findings,
    log_lines,
    planted,
    rederive,
    write_log,
)
from tests.support.train_support import prepared, smoke_args, train


def _resume_listed(data: dict[str, Any], run_dir: Path, from_step: int) -> None:
    """A resume from `from_step` that changed nothing added to the record, which is then made to
    agree with its artifacts everywhere else."""
    argv = ["stack", "train", "--resume", str(run_dir)]
    data["metrics"]["resumes"] = [
        *data["metrics"].get("resumes", []),
        {"from_step": from_step, "argv": argv, "changed": []},
    ]
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_resume_the_log_does_not_show_is_caught(tmp_path: Path) -> None:
    """The current record ran in one invocation; a resume from its step-20 checkpoint is added."""
    run = planted(tmp_path, CURRENT_RUN, lambda data, run_dir: _resume_listed(data, run_dir, 20))
    assert_caught(
        run,
        "metrics.resumes lists resumes from steps [20], but metrics.jsonl",
        "shows invocations starting at steps [0]",
    )


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of 4 steps (checkpoints at 2 and 4), resumed to 6."""
    root = tmp_path_factory.mktemp("invocations")
    run = root / "run"
    assert (
        train(
            smoke_args(
                prepared(root), run, "train.steps=4", "ckpt.every=2", "eval.every=2", "monitor.sample_every=2"
            )
        )
        == 0
    )
    assert train(["train", "--resume", str(run), "--set", "train.steps=6"]) == 0
    return run


@pytest.mark.holds("GATE-INTEG-001")
def test_a_resumed_record_lists_the_invocations_its_log_shows(resumed: Path) -> None:
    starts = [line["step"] for line in log_lines(resumed) if line.get("event") == "schedule"]
    assert starts == [0, 4]
    assert findings(resumed) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_resume_moved_in_the_record_is_caught(resumed: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(resumed, tmp_path / "run"))
    edited(copy, lambda data, run_dir: data["metrics"]["resumes"][0].update(from_step=2))
    assert_caught(
        copy,
        "metrics.resumes lists resumes from steps [2], but metrics.jsonl",
        "shows invocations starting at steps [0, 4]",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_resume_from_a_step_no_checkpoint_was_written_at_is_caught(resumed: Path, tmp_path: Path) -> None:
    """The log and the record moved together to a resume from step 3, where no checkpoint was
    written (the run checkpoints at 2 and 4)."""
    copy = Path(shutil.copytree(resumed, tmp_path / "run"))

    def moved(data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        for line in lines:
            if line.get("event") == "schedule" and line["step"] == 4:
                line["step"] = 3
        write_log(run_dir, lines)
        data["metrics"]["resumes"][0]["from_step"] = 3
        rederive(data, run_dir)

    edited(copy, moved)
    assert_caught(
        copy,
        "metrics.resumes[0] resumed from step 3, but metrics.jsonl logs no checkpoint written at that step",
    )
