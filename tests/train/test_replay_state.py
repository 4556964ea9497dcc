"""A replay compares the state a step left, not only the numbers it printed (GATE-CKPT-003, --replay).

The mutant: after every optimizer step, each weight is moved by random noise of at most 5e-8. The
losses a smoke run prints do not move at that size for steps; the weights do. Each step of a
run's first steps (and of the steps it replays at run time) logs the sha256 of its weights and
optimizer state (contracts.replay.STATE_KEY), so the run-time replay fails at the first step it
compares, and a record made with that replay made to compare each step with itself is caught by
`check_integrity --replay`, in its own process, at the first step, whose printed numbers all
replay bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from contracts.replay import DIGESTED_STEPS, STATE_KEY
from stack.train import loop
from stack.train.resume_check import Rehearsal
from tests.support.ledger_support import ROOT
from tests.support.train_support import evidence, prepared, smoke_args, step_lines, train

# The most the mutant moves a weight by: below what a printed loss shows for steps.
NUDGE = 5e-8
REPLAYED = ("train.replay_steps=2", "train.deterministic=true", "train.steps=8")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("replay-state"))


@pytest.fixture
def nudged() -> Iterator[None]:
    """Every optimizer's step followed by a random move of each weight, at most NUDGE."""
    noise = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))

    def nudge(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                for weight in group["params"]:
                    weight.add_((torch.rand(weight.shape, generator=noise) * 2 - 1) * NUDGE)

    handle = register_optimizer_step_post_hook(nudge)
    try:
        yield
    finally:
        handle.remove()


def _replay(run: Path, data: Path, steps: int = DIGESTED_STEPS) -> subprocess.CompletedProcess[str]:
    """`check_integrity --replay` of the run's first steps, in a process of its own."""
    argv = [sys.executable, "tools/check_integrity.py", "--replay", str(run), "--data", str(data)]
    return subprocess.run([*argv, "--steps", str(steps)], cwd=ROOT, capture_output=True, text=True)


def test_a_run_logs_its_state_at_the_steps_a_replay_takes(data: Path, tmp_path: Path) -> None:
    """The benign side: an honest run's digests repeat, at run time and in --replay."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *REPLAYED)) == 0
    digested = [line["step"] for line in step_lines(run) if STATE_KEY in line]
    assert digested == list(range(1, DIGESTED_STEPS + 1))
    assert evidence(run)["determinism"]["flags"]["repeatable"] is True
    done = _replay(run, data)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.gate("GATE-CKPT-003")
@pytest.mark.usefixtures("nudged")
def test_falsifier_a_weight_nudge_the_losses_hide_fails_the_run_time_replay(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "run", *REPLAYED)) == 3
    err = capsys.readouterr().err
    assert "GATE-CKPT-003" in err and f"step 1 {STATE_KEY}" in err, err


@pytest.mark.usefixtures("nudged")
def test_a_nudged_run_whose_replay_compared_itself_is_caught_by_the_replay(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-time replay mutated to compare each step taken with itself: the record says
    repeatable, bit for bit; the losses its steps print match a clean replay's; the state does not."""
    real = loop.check_replay

    def with_itself(
        rehearsal: Rehearsal, taken: list[dict[str, Any]], end: dict[str, str], exact: bool
    ) -> None:
        real(Rehearsal(taken, end, rehearsal.seconds), taken, end, exact)

    monkeypatch.setattr(loop, "check_replay", with_itself)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *REPLAYED)) == 0
    assert evidence(run)["determinism"]["flags"]["repeatable"] is True
    # Step 1's printed numbers were computed before the nudge that followed its update: they
    # replay bit for bit, and only the state the step left differs.
    done = _replay(run, data, steps=1)
    assert done.returncode == 3, done.stdout + done.stderr  # a gate fired: GATE-INTEG-001
    named = [line for line in done.stdout.splitlines() if line.startswith("REPLAY")]
    assert len(named) == 1 and f"step 1: {STATE_KEY} is" in named[0], done.stdout
    assert f"step 2: {STATE_KEY} is" in _replay(run, data).stdout
