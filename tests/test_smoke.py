"""The twenty-second run: a tiny model trained from scratch through the real CLIs, as a user would.

The training, sampling, evaluation, trace and export legs run as subprocesses (`python -m stack
...`), so argument parsing, exit codes, files on disk and evidence are exercised exactly as on a
terminal; the lens, patching, surgery and evolution-strategies legs call the same entry point
in-process (`stack.cli.main`), which costs no interpreter start each. The steps and their wall
times are what benchmarks/smoke.py records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from train_support import step_lines, write_corpus

from stack.cli import main
from stack.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parent.parent


def stack(*args: str | Path, expect: int = 0) -> str:
    """Run `python -m stack ARGS`; assert its exit code and return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "stack", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == expect, f"stack {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_twenty_second_run(tmp_path: Path) -> None:
    data, run, straight = tmp_path / "data", tmp_path / "run", tmp_path / "straight"
    stack("prepare", write_corpus(tmp_path), "--out", data, "--val-fraction", "0.25")

    smoke = ["--preset", "smoke", "--set", "train.device='cpu'"]
    stack("train", "--data", data, "--out", run, *smoke)
    assert [ln["step"] for ln in step_lines(run)] == [1, 2, 3, 4, 5]
    stack("train", "--resume", run, "--set", "train.steps=8")
    resumed = step_lines(run)
    assert [ln["step"] for ln in resumed] == list(range(1, 9)), "the history is unbroken and resumes at 6"

    # The batch order does not depend on the schedule: an uninterrupted 8-step run reads the same batches.
    stack("train", "--data", data, "--out", straight, *smoke, "--set", "train.steps=8")
    assert [ln["batch_sha256"] for ln in resumed] == [ln["batch_sha256"] for ln in step_lines(straight)]

    latest = ckpt.list_checkpoints(run)[-1]
    assert latest.name == "step-0000008"
    assert sorted(p.name for p in latest.iterdir()) == sorted([*ckpt.FILES, ckpt.MANIFEST])
    state = json.loads((latest / "state.json").read_text())
    assert set(ckpt.STATE_KEYS) <= set(state)

    text = stack("sample", run, "--prompt", "gate ", "--tokens", "12", "--seed", "3")
    assert text.startswith("gate ") and text == stack(
        "sample", run, "--prompt", "gate ", "--tokens", "12", "--seed", "3"
    )
    scores = json.loads(stack("eval", run, "--split", "val"))
    assert scores["bits_per_byte"] > 0 and scores["bytes"] > 0
    info = json.loads(stack("inspect", run, "--json"))
    assert info["step"] == 8 and info["checksums"] == "ok"

    stack("trace", run, "--prompt", "gate evidence", "--out", tmp_path / "trace")
    assert json.loads((tmp_path / "trace" / "metadata.json").read_text())["metrics"]["verdict"] == "clean"
    stack("trace", run, "--prompt", "gate evidence", "--against", run, "--out", tmp_path / "against")
    stack("export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "export.json").read_text())["format"] == "hf"

    # The tools that look inside and operate on a model, in-process (the CLI's own entry point).
    lens = tmp_path / "lens.safetensors"
    assert main(["lens", str(run), "--prompt", "gate evidence", "--out", str(tmp_path / "lens")]) == 0
    assert (
        main(
            [
                "lens",
                str(run),
                "--train",
                "--data",
                str(data),
                "--save",
                str(lens),
                "--steps",
                "3",
                "--seq-len",
                "16",
                "--heldout-batches",
                "2",
                "--out",
                str(tmp_path / "lens-train"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "trace",
                str(run),
                "--prompt",
                "the gate",
                "--patch",
                "the step",
                "--target",
                "e",
                "--patch-sweep",
                "output",
                "--out",
                str(tmp_path / "patch"),
            ]
        )
        == 0
    )
    assert (
        main(["laser", str(run), "--targets", "ffn_*", "--rho", "0.5", "--out", str(tmp_path / "laser")]) == 0
    )
    assert (
        main(
            [
                "quantize",
                str(run),
                "--targets",
                "ffn_*",
                "--bits",
                "8",
                "--group-size",
                "16",
                "--out",
                str(tmp_path / "hqq"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "es",
                str(run),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "es"),
                "--steps",
                "1",
                "--population",
                "2",
            ]
        )
        == 0
    )
    for record in ("lens", "lens-train", "patch", "laser", "hqq", "es"):
        assert json.loads((tmp_path / record / "metadata.json").read_text())["run"]["status"] == "completed"

    integrity = subprocess.run(
        [sys.executable, "tools/check_integrity.py", "--runs-only", "--run", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert integrity.returncode == 0, integrity.stdout + integrity.stderr
