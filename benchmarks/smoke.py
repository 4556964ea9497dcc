#!/usr/bin/env python3
"""Wall time of the twenty-second run (tests/test_smoke.py), filed as evidence.

The smoke test itself never asserts on time; this benchmark runs it, measures it and compares
it with its goal in spec/benchmarks.yaml.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from contracts.evidence import file_completed, new_record, run_id
from contracts.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
GOAL = "smoke_wall_time"


def main() -> int:
    record = new_record("benchmark", run_id("bench-smoke"), sys.argv, device="cpu")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_smoke.py"], cwd=ROOT, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print("bench-smoke: the smoke test failed; nothing recorded", file=sys.stderr)
        return 1
    goal = load_spec().benchmark(GOAL)
    record.metrics = {
        "benchmark": GOAL,
        "seconds": round(seconds, 2),
        "goal": goal.goal,
        "met": goal.met(seconds),
    }
    path = file_completed(record)
    print(f"{GOAL}: {seconds:.1f} s (goal ≤ {goal.goal} s) -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
