#!/usr/bin/env python3
"""Wall time of the ten-second run (tests/test_smoke.py), with each leg's share, filed as evidence.

The smoke test itself never asserts on time; this benchmark runs it under pytest, measures the
whole (interpreter start, collection and all) and compares it with its goal in
spec/benchmarks.yaml, and records the legs' own times, which the test writes to the file named
by GATESTACK_SMOKE_LEGS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts.evidence import file_completed, new_record, run_id
from contracts.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
GOAL = "smoke_wall_time"
# Hypothesis's pytest plugin imports hypothesis at every session's end, whether a test used it
# or not; the smoke test does not, so its session goes without (the whole suite keeps it).
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "tests/test_smoke.py"]


def main() -> int:
    record = new_record("benchmark", run_id("bench-smoke"), sys.argv, device="cpu")
    command = [sys.executable, *PYTEST]
    with tempfile.TemporaryDirectory() as tmp:
        legs_file = Path(tmp) / "legs.json"
        env = {**os.environ, "GATESTACK_SMOKE_LEGS": str(legs_file)}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=env, check=False)
        seconds = time.perf_counter() - start
        legs = json.loads(legs_file.read_text()) if legs_file.exists() else {}
    if proc.returncode != 0:
        print("bench-smoke: the smoke test failed; nothing recorded", file=sys.stderr)
        return 1
    goal = load_spec().benchmark(GOAL)
    in_process = legs.get("legs", {})
    beside = legs.get("console_script", {})
    on_the_path = sum(t["seconds"] for t in in_process.values()) + sum(
        t["waited_seconds"] for t in beside.values()
    )
    record.metrics = {
        "benchmark": GOAL,
        "seconds": round(seconds, 2),
        "command": command,
        # One after another in the test's process: wall and CPU seconds of each.
        "legs_seconds": {name: round(t["seconds"], 3) for name, t in in_process.items()},
        "legs_cpu_seconds": {name: round(t["cpu_seconds"], 3) for name, t in in_process.items()},
        # The console-script leg runs beside them: its own wall time, and how long the test waited for it.
        "console_script_seconds": {name: round(t["seconds"], 3) for name, t in beside.items()},
        "console_script_waited_seconds": {name: round(t["waited_seconds"], 3) for name, t in beside.items()},
        # Interpreter start, pytest, the imports before the first leg, and the session's end.
        "outside_legs_seconds": round(seconds - on_the_path, 2),
        "goal": goal.goal,
        "met": goal.met(seconds),
    }
    path = file_completed(record)
    print(f"{GOAL}: {seconds:.1f} s (goal ≤ {goal.goal} s) -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
