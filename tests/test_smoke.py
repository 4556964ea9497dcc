"""The ten-second run: a tiny model trained from scratch through the real CLIs, as a user would.

Every leg calls the command-line entry point (`stack.cli.main`) with the arguments a user would
type, so argument parsing, exit codes, files on disk and evidence are exercised as on a
terminal, without paying an interpreter start and a torch import per leg. One leg runs the
installed console script in a subprocess, to prove that `stack` itself starts; `--nproc` has its
own subprocess tests in tests/test_dist.py. The integrity check runs in-process too.

When GATESTACK_SMOKE_LEGS names a file, the test writes each leg's wall time there (JSON);
benchmarks/smoke.py reads it. The test itself never asserts on time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import check_integrity
import pytest
from train_support import step_lines, write_corpus

from stack.cli import main
from stack.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parent.parent
LEGS_ENV = "GATESTACK_SMOKE_LEGS"


class Legs:
    """Runs `stack` commands in-process, timing each named leg."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.seconds: dict[str, float] = {}

    @contextmanager
    def leg(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def stack(self, *args: str | Path, expect: int = 0) -> str:
        """`stack ARGS` in-process; asserts the exit code and returns what it printed."""
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        assert code == expect, f"stack {' '.join(map(str, args))}\n{out}\n{err}"
        return out

    def record(self) -> None:
        target = os.environ.get(LEGS_ENV)
        if target:
            Path(target).write_text(json.dumps(self.seconds, indent=2), encoding="utf-8")


def console_script(*args: str | Path) -> str:
    """The installed `stack` script (beside this interpreter) in a subprocess; its stdout."""
    script = shutil.which("stack", path=str(Path(sys.executable).parent))
    argv = [script] if script else [sys.executable, "-m", "stack"]
    proc = subprocess.run([*argv, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"stack {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_ten_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legs = Legs(capsys)
    data, run, straight = tmp_path / "data", tmp_path / "run", tmp_path / "straight"
    with legs.leg("prepare"):
        legs.stack("prepare", write_corpus(tmp_path), "--out", data, "--val-fraction", "0.25")

    smoke = ["--preset", "smoke", "--set", "train.device='cpu'"]
    with legs.leg("train"):
        legs.stack("train", "--data", data, "--out", run, *smoke)
    assert [ln["step"] for ln in step_lines(run)] == [1, 2, 3, 4, 5]
    with legs.leg("resume"):
        legs.stack("train", "--resume", run, "--set", "train.steps=8")
    resumed = step_lines(run)
    assert [ln["step"] for ln in resumed] == list(range(1, 9)), "the history is unbroken and resumes at 6"

    # The batch order does not depend on the schedule: an uninterrupted 8-step run reads the same batches.
    with legs.leg("train straight"):
        legs.stack("train", "--data", data, "--out", straight, *smoke, "--set", "train.steps=8")
    assert [ln["batch_sha256"] for ln in resumed] == [ln["batch_sha256"] for ln in step_lines(straight)]

    latest = ckpt.list_checkpoints(run)[-1]
    assert latest.name == "step-0000008"
    assert sorted(p.name for p in latest.iterdir()) == sorted(
        [*ckpt.FILES, ckpt.TOKENIZER_FILE, ckpt.MANIFEST]
    )
    state = json.loads((latest / "state.json").read_text())
    assert set(ckpt.STATE_KEYS) <= set(state)

    sample = ("sample", run, "--prompt", "gate ", "--tokens", "12", "--seed", "3")
    with legs.leg("sample (console script)"):
        text = console_script(*sample)
    with legs.leg("sample"):
        assert text.startswith("gate ") and text == legs.stack(*sample)
    with legs.leg("eval"):
        scores = json.loads(legs.stack("eval", run, "--split", "val"))
    assert scores["bits_per_byte"] > 0 and scores["bytes"] > 0
    with legs.leg("inspect"):
        info = json.loads(legs.stack("inspect", run, "--json"))
    assert info["step"] == 8 and info["checksums"] == "ok"

    with legs.leg("trace"):
        legs.stack("trace", run, "--prompt", "gate evidence", "--out", tmp_path / "trace")
        legs.stack("trace", run, "--prompt", "gate evidence", "--against", run, "--out", tmp_path / "against")
    assert json.loads((tmp_path / "trace" / "metadata.json").read_text())["metrics"]["verdict"] == "clean"
    with legs.leg("export hf"):
        legs.stack("export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "export.json").read_text())["format"] == "hf"
    with legs.leg("export onnx int8"):
        legs.stack("export", run, "--format", "onnx", "--int8", "--out", tmp_path / "onnx")
    onnx = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert onnx["format"] == "onnx" and any("int8" in name for name in onnx["files"])

    # The tools that look inside and operate on a model.
    lens = tmp_path / "lens.safetensors"
    with legs.leg("lens"):
        legs.stack("lens", run, "--prompt", "gate evidence", "--out", tmp_path / "lens")
        legs.stack(
            "lens", run, "--train", "--data", data, "--save", lens, "--steps", "3", "--seq-len", "16",
            "--heldout-batches", "2", "--out", tmp_path / "lens-train",
        )  # fmt: skip
    with legs.leg("patch"):
        legs.stack(
            "trace", run, "--prompt", "the gate", "--patch", "the step", "--target", "e",
            "--patch-sweep", "output", "--out", tmp_path / "patch",
        )  # fmt: skip
    with legs.leg("laser and quantize"):
        legs.stack("laser", run, "--targets", "ffn_*", "--rho", "0.5", "--out", tmp_path / "laser")
        hqq = ("--bits", "8", "--group-size", "16", "--out", tmp_path / "hqq")
        legs.stack("quantize", run, "--targets", "ffn_*", *hqq)
    with legs.leg("es"):
        legs.stack("es", run, "--data", data, "--out", tmp_path / "es", "--steps", "1", "--population", "2")
    for record in ("lens", "lens-train", "patch", "laser", "hqq", "es", "onnx"):
        assert json.loads((tmp_path / record / "metadata.json").read_text())["run"]["status"] == "completed"

    with legs.leg("integrity"):
        code = check_integrity.main(["--runs-only", "--run", str(run)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    legs.record()
