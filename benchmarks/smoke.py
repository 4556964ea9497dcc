#!/usr/bin/env python3
"""Wall time of the ten-second run (tests/cli/test_smoke.py), with each leg's share and the floor
under it, filed as evidence.

The smoke test itself never asserts on time; this benchmark runs it under pytest, measures the
whole (interpreter start, collection and all) and compares it with its goal in
spec/benchmarks.yaml, and records the legs' own times, which the test writes to the file named
by GATESTACK_SMOKE_LEGS: each in-process leg's wall and CPU seconds, and for the console-script
leg, which runs beside them, its own wall time and how long the test waited for it.

It also measures, each in fresh interpreters, what any run of the test must pay before and
besides the stack's own work: the interpreter and a pytest session, importing torch, importing
torch._dynamo (torch.optim imports it when an optimizer takes its first parameter group, and
the ONNX exporter runs on it) and the ONNX exporter's first use (onnxscript's op library, built
once per process). Their sum is the floor the goal is measured against; what is left is the
stack's work, the test's own and the interpreter's exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts.derive.benchmarks import remainder, total
from contracts.evidence import file_completed, new_record, run_id
from contracts.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
GOAL = "smoke_wall_time"
# Hypothesis's pytest plugin imports hypothesis at every session's end, whether a test used it
# or not; the smoke test does not, so its session goes without (the whole suite keeps it).
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
REPEATS = 3  # fresh interpreters per fixed-cost probe; the median counts

_ONNX_FIRST_USE = """
import tempfile, torch, torch._dynamo
with tempfile.TemporaryDirectory() as tmp:
    torch.onnx.export(torch.nn.Linear(4, 4).eval(), (torch.zeros(1, 4),), dynamo=True).save(tmp + "/m.onnx")
"""
# Each probe does what the one before it did, and one thing more.
PROBES = (
    ("interpreter", ["-c", "pass"]),
    ("torch import", ["-c", "import torch"]),
    ("dynamo import", ["-c", "import torch, torch._dynamo"]),
    ("onnx exporter first use", ["-c", _ONNX_FIRST_USE]),
)


def _seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Median wall time of `python ARGV` over REPEATS fresh interpreters."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fixed_costs() -> dict[str, float]:
    """What the smoke run pays outside the stack's own work, each as its increment in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the tests run
    costs, before = {}, 0.0
    for name, argv in PROBES:
        total = _seconds(argv, ROOT, env)
        costs[name], before = total - before, total
    with tempfile.TemporaryDirectory() as tmp:  # one empty test, the project's pytest settings, no conftest
        (Path(tmp) / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
        config = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", tmp]
        session = _seconds([*PYTEST, *config, "test_nothing.py"], Path(tmp), env)
    costs["pytest session"] = session - costs["interpreter"]
    return costs


def main() -> int:
    # No options: parsing still answers --help and refuses a stray argument before a minute of work.
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    record = new_record("benchmark", run_id("bench-smoke"), sys.argv, device="cpu")
    command = [sys.executable, *PYTEST, "tests/cli/test_smoke.py"]
    with tempfile.TemporaryDirectory() as tmp:
        legs_file = Path(tmp) / "legs.json"
        env = {**os.environ, "GATESTACK_SMOKE_LEGS": str(legs_file)}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=env, check=False)
        seconds = round(time.perf_counter() - start, 2)  # met judged on the number recorded
        legs = json.loads(legs_file.read_text()) if legs_file.exists() else {}
    if proc.returncode != 0:
        print("bench-smoke: the smoke test failed; nothing recorded", file=sys.stderr)
        return 1
    floor = fixed_costs()
    goal = load_spec().benchmark(GOAL)
    in_process = legs.get("legs", {})
    beside = legs.get("console_script", {})
    waited = [t["waited_seconds"] for t in beside.values()]
    legs_seconds = [t["seconds"] for t in in_process.values()]
    record.metrics = {
        "benchmark": GOAL,
        "seconds": seconds,
        "command": command,
        # One after another in the test's process: wall and CPU seconds of each.
        "legs_seconds": {name: round(t["seconds"], 3) for name, t in in_process.items()},
        "legs_cpu_seconds": {name: round(t["cpu_seconds"], 3) for name, t in in_process.items()},
        # The console-script leg runs beside them: its own wall time, and how long the test waited for it.
        "console_script_seconds": {name: round(t["seconds"], 3) for name, t in beside.items()},
        "console_script_waited_seconds": {name: round(t["waited_seconds"], 3) for name, t in beside.items()},
        # Interpreter start, pytest, the imports before the first leg, and the session's end.
        "outside_legs_seconds": round(remainder(seconds, *legs_seconds, *waited), 2),
        # What any run pays besides the stack's work (module docstring), and what is left.
        "fixed_costs_seconds": {name: round(value, 2) for name, value in floor.items()},
        "floor_seconds": round(total(*floor.values()), 2),
        "above_floor_seconds": round(remainder(seconds, *floor.values()), 2),
        "goal": goal.goal,
        "met": goal.met(seconds),
    }
    path = file_completed(record)
    print(
        f"{GOAL}: {seconds:.1f} s (goal ≤ {goal.goal} s; the floor of fixed costs "
        f"{record.metrics['floor_seconds']} s) -> {path.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
