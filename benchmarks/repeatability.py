#!/usr/bin/env python3
"""Does `stack train` repeat itself? Two straight runs and a SIGTERM + `--resume`, compared bit for bit.

One kernel that is not deterministic is enough to make two straight runs with the defaults
differ (on an H100 at 12 × 768, ctx 1024, SDPA's cuDNN backward makes them part from step 2:
docs/gpu.md, "Determinism"), and a record stamped before the setting takes effect misstates it.
This runs, for eager and for compiled training, each mode's three runs one after another:

    A  the straight run                     B  the same command again
    C  the same command, stopped by SIGTERM once it logged step --stop-at (it must end with the
       stack's 143 for a run a signal stopped after saving), then `--resume`d

and compares B and C with A: every number of every step and held-out line of metrics.jsonl
(except its timings) and the sha256 of the final weights, as the ledger files them. A, B and C are
filed as train records (their `determinism.flags` and GATE-CKPT-003's run-time replay are what a
reader checks, and tools/check_integrity.py derives each comparison again from them); this record
holds the comparison and is judged by `repeatable_runs_gpu` (spec/benchmarks.yaml): the
number of runs that differ from their straight run, at most 0.

Each run has the device to itself: three compiled `gpt2` runs side by side ran out of an H100's
80 GB (evidence/runs/bench-repeat-20261126T180411); `--side-by-side` runs them at once anyway.

    python benchmarks/repeatability.py --data DATA_DIR --preset gpt2 --set train.grad_accum=1

The data must be a prepared DATA_DIR (docs/gpu.md's records read `stack prepare --default
--tokenizer bpe --vocab-size 32768 --val-fraction 0.15`). On CPU it runs too (the tests use a tiny preset).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from contracts.derive.benchmarks import (
    REPEAT_BENCHMARK,
    REPEATED_RUNS,
    STRAIGHT_RUN,
    leg_failures,
    logged_median_rate,
    mismatched_runs,
    run_differences,
)
from contracts.errors import BadInput
from contracts.evidence import RunStatus, file_record, new_record, now, run_id
from contracts.release_rules import WEIGHTS_FILE
from contracts.spec import load_spec
from stack.data.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.01  # a smoke run logs several steps in a tenth of a second; C must stop in time


def train_argv(data: Path, out: Path, preset: str, sets: list[str], compiled: bool) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "stack",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--preset",
        preset,
    ]
    for item in [*sets, f"train.compile={str(compiled).lower()}"]:
        argv += ["--set", item]
    return argv


def launch(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as handle:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def logged_steps(run_dir: Path) -> int:
    """The last step metrics.jsonl holds so far (0 before the first)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(x).get("step", 0) for x in path.read_text().splitlines() if '"type": "step"' in x]
    return max(steps, default=0)


def stop_at(proc: subprocess.Popen[bytes], run_dir: Path, step: int) -> None:
    """SIGTERM `proc` once its run has logged `step`, as a scheduler preempting a job would."""
    while proc.poll() is None and logged_steps(run_dir) < step:
        time.sleep(POLL_SECONDS)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def filed(ledger: Path, run_id: str) -> tuple[str, str | None]:
    """A run as the ledger files it: its metrics.jsonl and its last checkpoint's weights digest."""
    record = json.loads((ledger / run_id / "metadata.json").read_text())
    weights = ((record.get("checkpoint") or {}).get("files") or {}).get(WEIGHTS_FILE, {})
    return (ledger / run_id / "metrics.jsonl").read_text(), weights.get("sha256")


def differences(ledger: Path, straight: str, other: str) -> list[str]:
    """Where the filed run `other` differs from the filed run `straight` (the checker derives the
    same list again from the same files: contracts.derive.benchmarks.run_differences)."""
    (a, a_weights), (b, b_weights) = filed(ledger, straight), filed(ledger, other)
    return run_differences(a, b, a_weights, b_weights)


def record_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metadata.json").read_text())


def run_mode(args: argparse.Namespace, work: Path, compiled: bool) -> dict[str, Any]:
    """A, B and C of one mode, one after another (side by side with --side-by-side); then C's
    resume; then the comparison."""
    mode = "compiled" if compiled else "eager"
    # The directory names are the runs' ids in the ledger: unique to this benchmark run.
    dirs = {name: work / f"{args.stamp}-{mode}-{name}" for name in "ABC"}
    evidence = ["--evidence-dir", str(args.ledger)]
    procs = {}
    for name, run_dir in dirs.items():
        argv = train_argv(args.data, run_dir, args.preset, args.sets, compiled)
        procs[name] = launch(argv + (evidence if name != "C" else []), work / f"{mode}-{name}.log")
        if name == "C":
            stop_at(procs["C"], run_dir, args.stop_at)
        if not args.side_by_side:
            procs[name].wait()
    codes = {name: proc.wait() for name, proc in procs.items()}
    stopped_at = logged_steps(dirs["C"])
    resume = [sys.executable, "-m", "stack", "train", "--resume", str(dirs["C"]), *evidence]
    codes["C resumed"] = launch(resume, work / f"{mode}-C.log").wait()
    if failed := leg_failures(codes):
        return {"mode": mode, "exit_codes": codes, "error": f"{failed}: see {work}/{mode}-*.log"}
    records = {name: record_of(run_dir) for name, run_dir in dirs.items()}
    return {
        "mode": mode,
        "exit_codes": codes,
        "stopped_at_step": stopped_at,
        "steps": logged_steps(dirs["A"]),
        "runs": {name: records[name]["run"]["id"] for name in "ABC"},
        **{
            key: differences(args.ledger, dirs[STRAIGHT_RUN].name, dirs[run].name)
            for run, key in REPEATED_RUNS.items()
        },
        "flags": {name: r["determinism"]["flags"] for name, r in records.items()},
        "replay": {name: r["metrics"].get("repeatability") for name, r in records.items()},
        "tokens_per_s_median": {
            name: logged_median_rate((d / "metrics.jsonl").read_text()) for name, d in dirs.items()
        },
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: also what tools/integrity reads a record's `run.argv` with
    (tools/integrity/settings/bench_argv.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA_DIR")
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a config override")
    parser.add_argument("--stop-at", type=int, default=16, help="the step after which run C gets SIGTERM")
    parser.add_argument("--work", type=Path, required=True, help="a new directory for the runs")
    parser.add_argument("--ledger", type=Path, default=ROOT / "evidence/runs")
    parser.add_argument("--modes", default="eager,compiled", help="eager, compiled or both")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="run A, B and C at once (faster; three gpt2 runs can outgrow an 80 GB GPU)",
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    try:
        load_manifest(args.data)
    except BadInput as refused:  # before any run: their exits would be filed as runs that differ
        print(f"repeatability: {refused}")
        return 2
    if args.work.exists():
        print(f"repeatability: --work {args.work} already exists; name a new directory for the runs")
        return 2
    args.work.mkdir(parents=True)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    record = new_record("benchmark", run_id("bench-repeat"), sys.argv, device=device, cuda=torch.version.cuda)
    args.stamp = record.run.id
    modes = [run_mode(args, args.work, mode == "compiled") for mode in args.modes.split(",")]
    differing = mismatched_runs(modes)
    goal = load_spec().benchmark(REPEAT_BENCHMARK)
    record.metrics = {
        "benchmark": REPEAT_BENCHMARK,
        "mismatched_runs": differing,
        "goal": goal.goal,
        "met": goal.met(differing),
        "preset": args.preset,
        "sets": args.sets,
        "modes": modes,
    }
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    print(json.dumps(record.metrics, indent=1)[:4000])
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
