"""A `stack es` run stopped by a signal is continued with `stack es --resume`.

A scheduler's SIGTERM (or a Ctrl-C) must not end `stack es` at once with no checkpoint of the step
reached, no record and no resume hint; nor may a directory with no metadata.json of run kind es be
taken for a training run, sending `stack es --resume` to `stack train --resume`, which refuses too.
es stops as `stack train` does (the step finished and saved, the record `interrupted`, exit 130 /
143 naming the resume), and a run killed outright is still known as an ES run by its checkpoints
(or, before its first, its lock) and resumed from its newest checkpoint, bit for bit. Each case
sends a real signal to a real `stack es` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contracts.evidence import EVIDENCE_FILE, read_evidence
from contracts.spec import load_spec
from stack.artifacts import identify
from stack.cli import main
from stack.train import checkpoint as ckpt
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared
from tools.integrity import check as check_integrity
from tools.integrity.record_checks import check_record_truth

ROOT = Path(__file__).resolve().parents[2]
FAR = 100000  # a run's steps no test waits for: only a signal ends it


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model saved as a run, and a byte-tokenised DATA_DIR."""
    root = tmp_path_factory.mktemp("es")
    save_run(root / "source", tiny_model())
    return {"source": root / "source", "data": prepared(root)}


def _new_run(world: dict[str, Path], out: Path, steps: int, save_every: int) -> list[str]:
    return [
        "es",
        str(world["source"]),
        "--data",
        str(world["data"]),
        "--out",
        str(out),
        "--population",
        "4",
        "--steps",
        str(steps),
        "--save-every",
        str(save_every),
    ]


def _started(argv: list[str], **options: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "stack", *argv]
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, **options)


def _step_lines(out: Path) -> int:
    log = out / "metrics.jsonl"
    return log.read_text(encoding="utf-8").count('{"type": "step"') if log.is_file() else 0


def _wait(until: object, proc: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not until():  # type: ignore[operator]
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    assert until(), "the run never got there"  # type: ignore[operator]


def _same_run(a: Path, b: Path, step: int) -> None:
    """Two runs at `step`: the same weights, Adam state, generator, reader position and log."""
    for name in ("model.safetensors", "optimizer.safetensors"):
        x = load_file(str(a / "checkpoints" / f"step-{step:07d}" / name))
        y = load_file(str(b / "checkpoints" / f"step-{step:07d}" / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    states = [json.loads((r / f"checkpoints/step-{step:07d}/state.json").read_text()) for r in (a, b)]
    assert states[0]["es"]["generator"] == states[1]["es"]["generator"]
    assert states[0]["reader"] == states[1]["reader"]
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["term", "int"])
def test_a_signal_saves_the_step_records_interrupted_and_the_resume_it_names_continues_bit_for_bit(
    world: dict[str, Path], tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    out = tmp_path / "run"
    proc = _started(_new_run(world, out, FAR, 3))
    _wait(lambda: (out / "checkpoints" / "step-0000003").is_dir() and _step_lines(out) >= 4, proc)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    stopped = _step_lines(out)
    assert 3 < stopped < FAR
    assert ckpt.list_checkpoints(out)[-1].name == f"step-{stopped:07d}"  # the step reached, saved
    assert err.splitlines()[-1] == (
        f"stack es: interrupted by {stop.name}: stopped at step {stopped} of {FAR}, which is saved in "
        f"step-{stopped:07d}; continue with `stack es --resume {out} --steps {FAR}`"
    )
    record = read_evidence(out / EVIDENCE_FILE)
    assert record.run.kind == "es" and record.run.status.value == "interrupted"
    assert record.run.stop_reason == f"{stop.name} received"
    assert record.checkpoint is not None and record.checkpoint.step == stopped
    assert [s["step"] for s in record.metrics["steps"]] == list(range(1, stopped + 1))
    assert check_record_truth(record, out, load_spec()).violations == []
    assert identify(out).kind.name == "es-run"

    assert main(["es", "--resume", str(out), "--steps", str(stopped + 2)]) == 0
    straight = tmp_path / "straight"
    assert main(_new_run(world, straight, stopped + 2, 3)) == 0
    _same_run(straight, out, stopped + 2)
    resumed = read_evidence(out / EVIDENCE_FILE)
    assert resumed.run.status.value == "completed" and resumed.metrics["resumed_from"] == stopped
    assert check_integrity.main(["--runs-only", "--run", str(out)]) == 0


def test_a_killed_run_is_still_an_es_run_and_resumes_from_its_newest_checkpoint(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL leaves no record (so the run could be taken for `stack train`'s, which neither command
    would resume): the checkpoints' ES state says whose it is, and the resume goes on from the newest,
    its log's later lines rolled back, to the bytes of a run never stopped."""
    out = tmp_path / "run"
    proc = _started(_new_run(world, out, FAR, 3))
    _wait(lambda: (out / "checkpoints" / "step-0000006").is_dir() and _step_lines(out) >= 7, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / EVIDENCE_FILE).exists()
    assert identify(out).kind.name == "es-run"
    newest = ckpt.latest_valid(out, False)[0]
    assert newest is not None
    step = ckpt.read_manifest(newest)["step"]

    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    assert f"resume it with `stack es --resume {out}`" in capsys.readouterr().err
    assert main(["es", "--resume", str(out), "--steps", str(step + 2)]) == 0
    straight = tmp_path / "straight"
    assert main(_new_run(world, straight, step + 2, 3)) == 0
    _same_run(straight, out, step + 2)
    assert check_integrity.main(["--runs-only", "--run", str(out)]) == 0


def test_a_run_killed_before_its_first_checkpoint_is_told_to_start_again_not_sent_to_train(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed before any checkpoint, the run holds its config and its lock, which names `stack es`: the
    resume says there is nothing to continue and how to start again (not `stack train --resume`)."""
    out = tmp_path / "run"
    proc = _started(_new_run(world, out, FAR, FAR))
    _wait(lambda: _step_lines(out) >= 1, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not ckpt.list_checkpoints(out) and not (out / EVIDENCE_FILE).exists()
    assert identify(out).kind.name == "es-run"
    capsys.readouterr()
    assert main(["es", "--resume", str(out), "--steps", "5"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"stack es: error: {out} has no valid checkpoint to resume from (a run that stopped before its "
        f"first checkpoint); start a new run with another --out, or remove {out} and run its first "
        "command again"
    )


def test_ctrl_c_to_the_process_group_stops_the_workers_run_as_one(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A terminal's Ctrl-C reaches every process of the group: the workers leave it to the run's own
    process, which finishes the step with them, saves it and ends 130 (a worker that took the
    KeyboardInterrupt itself broke the step, and nothing was saved)."""
    out = tmp_path / "run"
    proc = _started([*_new_run(world, out, FAR, FAR), "--workers", "2"], start_new_session=True)
    _wait(lambda: _step_lines(out) >= 1, proc, seconds=300)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = _step_lines(out)
    assert ckpt.list_checkpoints(out)[-1].name == f"step-{stopped:07d}"
    assert read_evidence(out / EVIDENCE_FILE).run.status.value == "interrupted"
