"""The ten-second run: a tiny model trained from scratch through the real CLIs, as a user would.

Every leg calls the command-line entry point (`stack.cli.main`) with the arguments a user would
type, so argument parsing, exit codes, files on disk and evidence are exercised as on a
terminal, without paying an interpreter start and a torch import per leg. One leg, the Hugging
Face export with its parity check, runs the installed console script in a subprocess, to prove
that `stack` itself starts; it starts as soon as its checkpoint exists and runs beside the
in-process legs, since the test itself keeps to one thread of a machine that has two. `--nproc`
has its own subprocess tests in tests/train/test_dist.py. The integrity check runs in-process too.

When GATESTACK_SMOKE_LEGS names a file, the test writes each leg's wall and CPU time there (JSON);
benchmarks/smoke.py reads it. The test itself never asserts on time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.cli import main
from stack.train import checkpoint as ckpt
from tests.support.train_support import step_lines, write_corpus
from tools.integrity import check as check_integrity

ROOT = Path(__file__).resolve().parents[2]
LEGS_ENV = "GATESTACK_SMOKE_LEGS"


class ConsoleScript:
    """`stack ARGS` through the installed console script (beside this interpreter), started now in
    a subprocess; `result()` waits for it, asserts its exit code and returns its stdout."""

    def __init__(self, *args: str | Path) -> None:
        script = shutil.which("stack", path=str(Path(sys.executable).parent))
        self.argv = [script] if script else [sys.executable, "-m", "stack"]
        self.argv += [str(a) for a in args]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.output = ("", "")
        self.seconds = 0.0
        self._waiter = threading.Thread(target=self._wait)
        self._waiter.start()

    def _wait(self) -> None:  # on its own thread, so that the leg's own time is known whenever it ends
        self.output = self.proc.communicate()
        self.seconds = time.perf_counter() - self.started

    def stop(self) -> None:
        """End the subprocess if it is still running (the test failed before waiting for it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._waiter.join()

    def result(self) -> str:
        self._waiter.join()
        out, err = self.output
        assert self.proc.returncode == 0, f"{' '.join(self.argv)}\n{out}\n{err}"
        return out


class Legs:
    """Runs `stack` commands in-process, timing each named leg (wall and CPU), and the
    console-script leg that runs beside them (its own wall time and how long the test waited)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.times: dict[str, dict[str, float]] = {}
        self.beside: dict[str, dict[str, float]] = {}
        self.scripts: list[ConsoleScript] = []

    @contextmanager
    def leg(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        times = self.times.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0})
        times["seconds"] += time.perf_counter() - wall
        times["cpu_seconds"] += time.process_time() - cpu

    def stack(self, *args: str | Path, expect: int = 0) -> str:
        """`stack ARGS` in-process; asserts the exit code and returns what it printed."""
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        assert code == expect, f"stack {' '.join(map(str, args))}\n{out}\n{err}"
        return out

    def start(self, *args: str | Path) -> ConsoleScript:
        """A console-script leg, started now."""
        self.scripts.append(ConsoleScript(*args))
        return self.scripts[-1]

    def finish(self, name: str, script: ConsoleScript) -> str:
        """Wait for a console-script leg; its stdout."""
        started = time.perf_counter()
        out = script.result()
        self.beside[name] = {"seconds": script.seconds, "waited_seconds": time.perf_counter() - started}
        return out

    def record(self) -> None:
        target = os.environ.get(LEGS_ENV)
        if target:
            legs = {"legs": self.times, "console_script": self.beside}
            Path(target).write_text(json.dumps(legs, indent=2), encoding="utf-8")


@pytest.fixture
def legs(capsys: pytest.CaptureFixture[str]) -> Iterator[Legs]:
    legs = Legs(capsys)
    yield legs
    for script in legs.scripts:  # after a failure, no console-script leg is left running
        script.stop()


def test_ten_second_run(tmp_path: Path, legs: Legs, capsys: pytest.CaptureFixture[str]) -> None:
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

    # The console-script leg: a Hugging Face export, checked in transformers (GATE-EXPORT-001),
    # while the legs below run; nothing below writes to the run it reads.
    hf_export = legs.start("export", run, "--format", "hf", "--out", tmp_path / "hf")

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
    with legs.leg("sample"):
        text = legs.stack(*sample)
        assert text.startswith("gate ") and text == legs.stack(*sample), "a seeded sample repeats"
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
    with legs.leg("export onnx int8"):
        legs.stack("export", run, "--format", "onnx", "--int8", "--out", tmp_path / "onnx")
    onnx = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert onnx["format"] == "onnx" and any("int8" in name for name in onnx["files"])
    assert len(onnx["parity"]) == 2 and all(check["ok"] for check in onnx["parity"].values())

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

    legs.finish("export hf (console script)", hf_export)
    hf = json.loads((tmp_path / "hf" / "export.json").read_text())
    assert hf["format"] == "hf" and hf["status"] == "verified"
    for record in ("lens", "lens-train", "patch", "laser", "hqq", "es", "onnx", "hf"):
        assert json.loads((tmp_path / record / "metadata.json").read_text())["run"]["status"] == "completed"

    with legs.leg("integrity"):
        code = check_integrity.main(["--runs-only", "--run", str(run)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    legs.record()
