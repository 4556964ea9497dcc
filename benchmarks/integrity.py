#!/usr/bin/env python3
"""How long check_integrity takes over 10,000 synthetic evidence records.

Builds a scratch repository (spec copy, one commit, N records each with two judged gate
results and one artifact), times `run_checks` on it, and files the measurement as evidence under
evidence/runs/bench-integrity-<time>/. The goal is read from spec/benchmarks.yaml; the
benchmark reports whether it was met and never asserts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from contracts.derive.benchmarks import INTEGRITY_BENCHMARK as GOAL
from contracts.evidence import file_completed, new_record, run_id
from contracts.spec import load_spec
from tools.integrity.check import run_checks
from tools.records.scratch import make_record, make_repo, passed

ROOT = Path(__file__).resolve().parent.parent


def measure(records: int) -> dict[str, float | int | bool]:
    """Time one integrity check over `records` synthetic records; returns the metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sha = make_repo(root)
        outcomes = passed("GATE-INTEG-001", "GATE-INTEG-002")
        for i in range(records):
            make_record(root, f"run-{i:05d}", sha, outcomes, artifact_text=f'{{"step": {i}}}\n', minutes=i)
        start = time.perf_counter()
        report = run_checks(root, [])
        seconds = round(time.perf_counter() - start, 3)  # met judged on the number recorded
    if report.violations:
        raise SystemExit(f"benchmark repository is not clean: {report.violations[0].line()}")
    goal = load_spec().benchmark(GOAL)
    return {
        "records": report.records,
        "seconds": seconds,
        "goal": goal.goal,
        "met": goal.met(seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    record = new_record("benchmark", run_id("bench-integrity"), sys.argv, device="cpu")
    record.metrics = {"benchmark": GOAL, **measure(args.records)}
    path = file_completed(record)
    print(
        f"{GOAL}: {record.metrics['records']} records in {record.metrics['seconds']} s "
        f"(goal ≤ {record.metrics['goal']} s, met: {record.metrics['met']}) -> {path.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
