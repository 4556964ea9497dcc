#!/usr/bin/env python3
"""The reference run: a real model trained with every gate, then scored, traced and exported.

Toy training records say nothing of a model at a size users train; this runs one through the
whole life a user gives it, as one command, so a GPU lent for minutes runs it without typing:
`stack train` of PRESET on DATA (early stopping on, so the run ends where held-out loss stops
improving, or at its step budget), then `stack eval` of the held-out split, `stack
trace` of a prompt and `stack export --format hf` with its parity check. Each command files its
record into LEDGER (default: this repository's evidence/runs, where `stack release` wants the
training record) and the run and export go under WORK. The first command that fails stops the
rest; the exit code is its own (0 when every command run succeeded).

    python benchmarks/reference_run.py --data DATA --work /tmp/reference
    python benchmarks/reference_run.py --data DATA --work /tmp/ref --preset gpt2 --set train.steps=3000
    python benchmarks/reference_run.py --data DATA --work /tmp/ref --preset gpt2 --commands train trace

`--commands` runs some of the four, in their order: a healthy checkpoint traced is all GATE-TRACE-003's
calibration asks of a run (docs/trace.md, "Calibration"), and the 110 M shape's at 120, 400 and 1,500
steps are three such runs (benchmarks/gpu_session.py, the `healthy-*` steps).

The step budget and evaluation cadence below fit a few minutes of an H100 at `base` (all four
commands took 394 s there); `--set` overrides them and anything else. Releasing the run
(`stack release`, with `--weights-url` for weights this size) is left to a person: it names the
model and where its weights will be kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = [sys.executable, "-m", "stack"]
# 1,500 steps at `base` (65 k tokens a step) trained in under six minutes on an H100, eager, every
# gate live (evidence/runs/reference-base-20261127T152551); evaluations every 100 steps give early
# stopping (patience 5) a curve to read.
DEFAULT_SETS = ("train.steps=1500", "train.warmup_steps=100", "eval.every=100", "ckpt.every=500")
DEFAULT_SETS += ("monitor.sample_every=250",)
PROMPT = "def main():"


COMMANDS = ("train", "eval", "trace", "export")


def commands(args: argparse.Namespace, run_id: str) -> list[tuple[str, list[str]]]:
    """(name, argv) of the commands `args.commands` names, in the order of COMMANDS."""
    run, filed = args.work / run_id, ["--evidence-dir", str(args.ledger)]
    sets = [word for value in (*DEFAULT_SETS, *args.set) for word in ("--set", value)]
    on = ["--device", args.device]
    every = [
        ("train", [*STACK, "train", "--data", str(args.data), "--out", str(run), "--preset", args.preset,
                   *sets, *filed]),
        ("eval", [*STACK, "eval", str(run), "--split", "val", *on, *filed]),
        ("trace", [*STACK, "trace", str(run), "--prompt", PROMPT, *on, *filed]),
        ("export", [*STACK, "export", str(run), "--format", "hf", "--out", f"{run}-hf", *filed]),
    ]  # fmt: skip
    return [(name, argv) for name, argv in every if name in args.commands]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA_DIR")
    parser.add_argument("--work", type=Path, required=True, help="where the run and its export go")
    parser.add_argument("--preset", default="base", help="the model and its training (default base)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="after the defaults")
    parser.add_argument("--device", default="cuda", help="for eval and trace (default cuda)")
    parser.add_argument(
        "--ledger", type=Path, default=ROOT / "evidence" / "runs", help="where records are filed"
    )
    parser.add_argument(
        "--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS), help="which to run (default all)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if "train" not in args.commands:
        parser.error("--commands must include train: the others read the run it makes")
    run_id = f"reference-{args.preset}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    for name, command in commands(args, run_id):
        print(f"reference_run: {name}: {' '.join(command)}", flush=True)
        if args.dry_run:
            continue
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        if code != 0:
            print(
                f"reference_run: {name} ended with exit {code}; the commands after it were not run",
                flush=True,
            )
            return code
    if not args.dry_run:
        print(f"reference_run: done: {args.work / run_id}, its records in {args.ledger}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
