#!/usr/bin/env python3
"""What each part of `train.deterministic` costs, and whether the weights repeat without it.

`train.deterministic` sets several switches at once (stack.train.determinism.Switches): PyTorch's
deterministic algorithms, strict; cuDNN deterministic and not benchmarking; Inductor's
deterministic mode; SDPA without its cuDNN backend; cuBLAS's fixed workspace; and the
uninitialised memory PyTorch's deterministic mode would fill left unfilled. Its price as a whole
is the goal `train_determinism_price` (benchmarks/train_throughput.py). This says which part the
price is: the plain loop of that benchmark (`plain_steps`) is timed with every part as
`train.deterministic` sets it ("on"), with `train.deterministic` off, and with every part as it
sets it but one, switched the other way (the fill's leg fills, so its price is negative by what
filling would cost), each leg in a fresh process (cuBLAS reads its workspace setting once per
process, Inductor its mode when it compiles, so its part is priced only with `--compile`), and
each leg run `--runs` times (2 by default) to say whether its trained weights repeat bit for bit.
A part whose leg is no faster, or whose weights do not repeat without it, is worth what it costs;
one that costs and whose weights repeat without it buys nothing on this model (docs/gpu.md shows
the table).

    python benchmarks/determinism_parts.py --device cuda --preset gpt2 --data DATA --steps 20

The record (`bench-determinism-<time>`, no goal of its own) keeps each leg's per-step seconds,
tokens/s, the switches it ran under as torch reported them, and its weights' digests; each part's
price is 1 − ("on") ÷ (that part switched), derived from the legs' rates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.train_throughput import (
    WARMUP,
    data_vocab,
    leg_sets,
    plain_steps,
    steady_sets,
    tokens_per_step,
)
from contracts.derive.benchmarks import DETERMINISM_BENCHMARK, median_rate, overhead
from contracts.evidence import file_record, new_record, run_id
from stack.artifacts import DATA_MANIFEST
from stack.data.prepare import prepare_corpus
from stack.train.config import resolve
from stack.train.determinism import SDPA_BACKENDS, Switches

ROOT = Path(__file__).resolve().parent.parent

# Each part of `train.deterministic` and the switches its leg sets instead, every other part as
# `train.deterministic` sets it: PyTorch's defaults, and the uninitialised memory filled (which
# `train.deterministic` leaves unfilled: stack.train.determinism says why).
PARTS: dict[str, dict[str, Any]] = {
    "deterministic_algorithms": {"deterministic_algorithms": False, "warn_only": False},
    "fill_uninitialized_memory": {"fill_uninitialized_memory": True},
    "cudnn_deterministic": {"cudnn_deterministic": False},
    "inductor_deterministic": {"inductor_deterministic": False},
    "sdpa_cudnn_excluded": {"sdpa_backends": SDPA_BACKENDS},
    "cublas_workspace": {"cublas_workspace_config": None},
}
LEGS = ("on", "off", *PARTS)


def leg_switches(leg: str) -> Switches:
    """The switches of one leg, from this process's (PyTorch's defaults in a fresh one): every part
    on, every part off (`train.deterministic` off), or every part on but the one named."""
    now = Switches.now()
    if leg in ("on", "off"):
        return now.wanted(leg == "on")
    return dataclasses.replace(now.wanted(True), **PARTS[leg])


def run_leg(
    leg: str, data: Path, preset: str, steps: int, device: str, compiled: bool = False
) -> dict[str, Any]:
    """One leg in this process: the plain loop under `leg_switches(leg)`, compiled or eager."""
    sets = [*steady_sets(steps, device), *leg_sets(True, 1)]
    clock = plain_steps(data, preset, sets, steps, compiled, leg_switches(leg))
    return {
        "step_seconds": [round(s, 6) for s in clock.step_seconds],
        "switches": clock.switches,  # as torch reported them while the leg trained
        "weights": clock.weights,
    }


def fresh_leg(
    leg: str, data: Path, preset: str, steps: int, device: str, compiled: bool = False
) -> dict[str, Any]:
    """One leg in a fresh Python process (this script with --leg), its JSON read back."""
    argv = [sys.executable, __file__, "--leg", leg, "--data", str(data), "--preset", preset]
    argv += ["--steps", str(steps), "--device", device, *(["--compile"] if compiled else [])]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"leg {leg} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


Leg = Callable[[str, Path, str, int, str, bool], dict[str, Any]]


def legs_table(
    data: Path, preset: str, steps: int, device: str, runs: int, compiled: bool = False, run: Leg = fresh_leg
) -> list[dict[str, Any]]:
    """Every leg, `runs` times each, each by `run` (in a fresh process by default): the first run's
    seconds and rate, every run's weights digest, and whether they all agree."""
    config = resolve(preset, None, [*steady_sets(steps, device), *leg_sets(True, 1)], vocab=data_vocab(data))
    per_step = tokens_per_step(config)
    rows = []
    for leg in LEGS:
        done = [run(leg, data, preset, steps, device, compiled) for _ in range(runs)]
        seconds = done[0]["step_seconds"]
        digests = [run["weights"] for run in done]
        rows.append(
            {
                "leg": leg,
                "tokens_per_step": per_step,
                "step_seconds": seconds,
                "tokens_per_s": round(median_rate(per_step, *seconds[WARMUP:])),
                "switches": done[0]["switches"],
                "weights": digests,
                "repeats": len(set(digests)) == 1 if runs > 1 else None,
            }
        )
    return rows


def prices(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each part's price, 1 − (every part on) ÷ (every part on but it), and every part's together,
    1 − on ÷ off, from the legs' rates."""
    rate = {row["leg"]: row["tokens_per_s"] for row in rows}
    found = {part: round(overhead(rate[part], rate["on"]), 4) for part in PARTS}
    return {"all": round(overhead(rate["off"], rate["on"]), 4), **found}


def parts_metrics(
    rows: list[dict[str, Any]], preset: str, steps: int, runs: int, compiled: bool = False
) -> dict[str, Any]:
    """The record's metrics: the legs as measured and the prices derived from them."""
    return {
        "benchmark": DETERMINISM_BENCHMARK,
        "preset": preset,
        "compiled": compiled,
        "steps": steps,
        "warmup_steps": WARMUP,
        "runs": runs,
        "legs": rows,
        "prices": prices(rows),
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: also what tools/integrity reads a record's `run.argv` with
    (tools/integrity/settings/bench_argv.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", default="demo", help="the preset the plain loop trains (default demo)")
    parser.add_argument(
        "--steps", type=int, default=20, help="steps a leg (default 20; the first 5 are warm-up)"
    )
    parser.add_argument(
        "--runs", type=int, default=2, help="runs of each leg, to see whether its weights repeat"
    )
    parser.add_argument("--compile", action="store_true", help="the plain loop under torch.compile")
    parser.add_argument("--data", type=Path, help="a prepared DATA_DIR (default: the embedded corpus, bytes)")
    parser.add_argument("--ledger", type=Path, default=ROOT / "evidence/runs", help="where the record goes")
    parser.add_argument("--leg", choices=LEGS, help=argparse.SUPPRESS)  # one leg, in a fresh process
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.steps <= WARMUP or args.runs < 1:
        print(f"determinism_parts: give --steps above {WARMUP} and --runs of at least 1")
        return 2
    if args.data is not None and not (args.data / DATA_MANIFEST).is_file():
        print(f"determinism_parts: --data {args.data} is not a prepared DATA_DIR; run `stack prepare` first")
        return 2
    if args.leg is not None:
        if args.data is None:
            print("determinism_parts: --leg runs one leg of a table and needs --data")
            return 2
        print(json.dumps(run_leg(args.leg, args.data, args.preset, args.steps, args.device, args.compile)))
        return 0
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    record = new_record("benchmark", run_id("bench-determinism"), sys.argv, device=name)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            prepare_corpus([], data, default=True)
        rows = legs_table(data, args.preset, args.steps, args.device, args.runs, args.compile)
    record.metrics = parts_metrics(rows, args.preset, args.steps, args.runs, args.compile)
    path = file_record(args.ledger, record)
    print(json.dumps(record.metrics["prices"], indent=2))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
