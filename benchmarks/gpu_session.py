#!/usr/bin/env python3
"""The GPU measurements of docs/gpu.md, run in one sitting under one deadline.

A GPU is often lent for minutes rather than hours, and a measurement typed by hand after a
machine has started spends the loan on typing. This runs the benchmarks docs/gpu.md lists as
named steps, in the order given, each with whatever time is left before the deadline
(`--seconds`): its output goes to OUT/logs/STEP.log and its records to OUT/ledger, from where
they are copied into evidence/runs and checked (`tools/check_integrity.py`). A step that runs
out of time is stopped (SIGTERM, then SIGKILL) and said so, and the steps after it are not
started; one that fails is said so and the next one starts. The corpus the steps train on (the
stdlib and the scientific libraries' Python sources, `LIBRARIES`, as a BPE of 32,768 tokens) is
prepared into OUT/data, its record filed, unless `--data` names one, and only when a step reads it.

    python benchmarks/gpu_session.py --out /tmp/gpu --seconds 540 model repeat trace
    python benchmarks/gpu_session.py --out /tmp/gpu det-on det-off gpu-check   # determinism's price
    python benchmarks/gpu_session.py --out /tmp/gpu --dry-run tput   # the commands, not run
    python benchmarks/gpu_session.py --out /tmp/gpu stats-tiles trace-tiled   # the search, then its tile

A step's command is made when it starts, so a step may read what an earlier one filed: `trace-tiled`
times tracing in the tile the session's tile search found fastest; without that search's record it
is not started, and says so.

Every line it prints is also in OUT/session.log, so a session that was cut off still says
how far it came. It exits 0 when every step ended ok, 1 when one failed, ran out of time or was
not started, and 2 when --out is not a new folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# The corpus the GPU steps train on: the standard library's Python files and those of the
# scientific libraries this interpreter has (a GPU image has all five: 27.3 M training tokens on
# the lent H100 of 2026-11-27, against 2.3 M from its stdlib alone), as a 32,768-token BPE with 5 %
# held out, its prepare record filed with the session's.
LIBRARIES = ("sympy", "numpy", "scipy", "pandas", "sklearn")
PREPARE = ["-m", "stack", "prepare", "--default", "--glob", "*.py", "--tokenizer", "bpe"]
PREPARE += ["--vocab-size", "32768", "--val-fraction", "0.05"]
GRACE_SECONDS = 10  # between SIGTERM and SIGKILL for a step out of time (a checkpoint may be saving)


@dataclass(frozen=True)
class Where:
    """The session's folders: the corpus, the records, the runs the benchmarks make."""

    data: Path
    ledger: Path
    work: Path


class NotYet(Exception):
    """A step's command needs a record an earlier step of the session files, and it is not there."""


@dataclass(frozen=True)
class Step:
    """One measurement: what it is for, whether it reads the corpus, and its command."""

    what: str
    reads_data: bool
    argv: Callable[[Where], list[str]]


def _traced(where: Where, *options: str, batch: int = 8) -> list[str]:
    """benchmarks/trace_overhead.py at 110 M, batch `batch` x 1024 (the context, unless `options`
    name `--tokens`), fp32 and bf16, its records filed with the session's; `options`: `--tile T`,
    `--tokens N` or nothing."""
    return [
        *(PY, "benchmarks/trace_overhead.py", "--device", "cuda", "--preset", "gpt2"),
        *("--vocab", "32768", "--batch", str(batch), *options, "--ledger", str(where.ledger)),
    ]


def _tiled_trace(where: Where) -> list[str]:
    """`_traced` in the tile the newest tile search of the session's ledger found fastest
    (benchmarks.stats_tiles.fastest_in): NotYet where the session has filed none, or its record
    does not read or names no tile that computed the statistics (the steps after it still run)."""
    from benchmarks.stats_tiles import fastest_in  # torch and triton: imported where the step starts
    from contracts.errors import BadInput

    try:
        tile = fastest_in(where.ledger)
    except FileNotFoundError as missing:
        raise NotYet(f"{missing}: run stats-tiles before it") from None
    except (BadInput, ValueError) as unusable:
        raise NotYet(f"the newest tile search names no tile to trace in: {unusable}") from None
    return _traced(where, "--tile", str(tile))


def _determinism_run(where: Where, deterministic: bool) -> list[str]:
    """`stack train` of the gpt2 preset, compiled, with `train.deterministic` as given and its record
    filed: the pair's medians of tokens_per_s past the first steps are determinism's price
    (docs/gpu.md), and the run with it off is judged by the tolerances such a run gets."""
    setting = str(deterministic).lower()
    sets = ["train.steps=60", "eval.every=60", "ckpt.every=60", "monitor.sample_every=60"]
    sets += [f"train.deterministic={setting}", "train.compile=true"]
    return [
        *(PY, "-m", "stack", "train", "--data", str(where.data), "--preset", "gpt2"),
        *("--out", str(where.work / f"gpt2-deterministic-{setting}")),
        *(item for pair in (("--set", s) for s in sets) for item in pair),
        *("--evidence-dir", str(where.ledger)),
    ]


# The healthy 110 M runs GATE-TRACE-003's calibration asks for (docs/trace.md, "Calibration"): the
# gpt2 preset at grad_accum 1, as the run that traced a false anomaly after 120 steps trained, for
# each of these step budgets, then traced on the reference run's prompt.
HEALTHY_STEPS = (120, 400, 1500)


def _healthy_run(where: Where, steps: int) -> list[str]:
    """benchmarks/reference_run.py's train and trace of the gpt2 preset for `steps` steps (fewer if
    early stopping ends it), a checkpoint only at the end, each record filed with the session's."""
    sets = [f"train.steps={steps}", "train.grad_accum=1", f"train.warmup_steps={min(100, steps // 4)}"]
    sets += [f"eval.every={max(10, steps // 10)}", f"ckpt.every={steps}", f"monitor.sample_every={steps}"]
    folders = ["--work", str(where.work / "healthy"), "--ledger", str(where.ledger)]
    return [
        *(PY, "benchmarks/reference_run.py", "--data", str(where.data), "--preset", "gpt2", *folders),
        *("--commands", "train", "trace", *(word for value in sets for word in ("--set", value))),
    ]


STEPS: dict[str, Step] = {
    "model": Step(
        "the model against the hand-written GPT, eager and compiled (model_vs_reference_gpu)",
        False,
        lambda w: [PY, "benchmarks/model_speed.py", "--device", "cuda", "--ledger", str(w.ledger)],
    ),
    "repeat": Step(
        "two straight runs and a SIGTERM + --resume, eager then compiled (repeatable_runs_gpu)",
        True,
        lambda w: [
            *(PY, "benchmarks/repeatability.py", "--data", str(w.data), "--preset", "gpt2"),
            *("--set", "train.grad_accum=1", "--set", "train.steps=30", "--stop-at", "16"),
            *("--work", str(w.work / "repeat"), "--ledger", str(w.ledger)),
        ],
    ),
    "tput": Step(
        "stack train against a plain loop at gpt2: step cost, determinism price, peak memory by owner, MFU",
        True,
        lambda w: [
            *(PY, "benchmarks/train_throughput.py", "--device", "cuda", "--preset", "gpt2", "--compile"),
            # 20 steps a leg (15 past the warm-up): 396 s on the H200 of 2026-11-30, most of it the
            # legs' first steps; with `trace` after it, one call of a 15-minute loan.
            *("--steps", "20", "--data", str(w.data), "--ledger", str(w.ledger)),
        ],
    ),
    "trace": Step(
        "tracing at 110 M, batch 8 x 1024, fp32 and bf16, with the traced forward's kernels (trace_overhead)",
        False,
        _traced,
    ),
    "trace-short": Step(
        "tracing one 12-token prompt at 110 M, fp32 and bf16: what a user's sentence costs (trace_overhead)",
        False,
        lambda w: _traced(w, "--tokens", "12", batch=1),
    ),
    "stats-tiles": Step(
        "which tile the CUDA statistics kernel should cut a traced forward's sites in, at 110 M",
        False,
        lambda w: [PY, "benchmarks/stats_tiles.py", "--ledger", str(w.ledger)],
    ),
    "trace-tiled": Step(
        "the trace step with the statistics cut in the tile the session's stats-tiles found fastest",
        False,
        _tiled_trace,
    ),
    "det-parts": Step(
        "what each part of train.deterministic costs at gpt2, and whether the weights repeat without it",
        True,
        lambda w: [
            *(PY, "benchmarks/determinism_parts.py", "--device", "cuda", "--preset", "gpt2"),
            *("--data", str(w.data), "--steps", "12", "--runs", "2", "--ledger", str(w.ledger)),
        ],
    ),
    "det-on": Step(
        "stack train at gpt2, compiled, 60 steps, train.deterministic on: the price's baseline",
        True,
        lambda w: _determinism_run(w, True),
    ),
    "det-off": Step(
        "the same run with train.deterministic off: what determinism costs, and the wider tolerances",
        True,
        lambda w: _determinism_run(w, False),
    ),
    "reference": Step(
        "the reference run at base: every gate on until held-out loss flattens, eval, trace, export hf",
        True,
        lambda w: [
            *(PY, "benchmarks/reference_run.py", "--data", str(w.data), "--work", str(w.work / "reference")),
            *("--ledger", str(w.ledger)),
        ],
    ),
    **{
        f"healthy-{steps}": Step(
            f"a healthy 110 M run of {steps} steps at grad_accum 1, traced: no anomaly under GATE-TRACE-003",
            True,
            lambda w, steps=steps: _healthy_run(w, steps),
        )
        for steps in HEALTHY_STEPS
    },
    "gpu-check": Step(
        "make gpu-check: kernels, bf16 training, the fp16 resume, compile, --nproc",
        False,
        lambda w: [PY, "tools/gpu_check.py", "--ledger", str(w.ledger)],
    ),
}


class Session:
    """The deadline, and the log every line is written to as well as printed."""

    def __init__(self, out: Path, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.logs = out / "logs"
        self.log = out / "session.log"

    def left(self) -> float:
        """Seconds before the deadline."""
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        """Print `line` and keep it in session.log."""
        print(f"gpu_session: {line}", flush=True)
        with self.log.open("a", encoding="utf-8") as log:
            log.write(line + "\n")

    def run(self, name: str, argv: list[str]) -> str:
        """Run one command until it ends or the deadline passes: "ok", "exit N" or "out of time"."""
        began = time.monotonic()
        with (self.logs / f"{name}.log").open("w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = proc.wait(timeout=max(self.left(), 0.0))
            except subprocess.TimeoutExpired:
                _stop(proc)
                self.say(f"{name}: out of time after {time.monotonic() - began:.0f} s, stopped")
                return "out of time"
        ended = "ok" if code == 0 else f"exit {code}"
        self.say(f"{name}: {ended} in {time.monotonic() - began:.0f} s (log: {self.logs / name}.log)")
        return ended


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's whole process group, SIGKILL if it has not ended in GRACE_SECONDS."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def library_sources() -> list[str]:
    """`NAME=FOLDER` of each of LIBRARIES this interpreter can import, found without importing it."""
    found = []
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.append(f"{name}={next(iter(spec.submodule_search_locations))}")
    return found


# A step's command, made when the step starts (NotYet where it cannot be yet).
Command = Callable[[], list[str]]


def plan(names: list[str], where: Where, prepare: bool) -> list[tuple[str, Command]]:
    """(name, command) of each step asked for, the corpus's preparation first when one reads it
    and none was given."""
    commands: list[tuple[str, Command]] = [(name, partial(STEPS[name].argv, where)) for name in names]
    if prepare and any(STEPS[name].reads_data for name in names):
        corpus = [*PREPARE, *library_sources(), "--out", str(where.data), "--evidence-dir", str(where.ledger)]
        commands.insert(0, ("prepare", lambda: [PY, *corpus]))
    return commands


def shown(command: Command) -> str:
    """The command line a dry run prints: the command, or what it waits for."""
    try:
        return " ".join(command())
    except NotYet as why:
        return f"(made when it starts: {why})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="+", choices=sorted(STEPS), metavar="STEP", help=", ".join(STEPS))
    parser.add_argument("--out", type=Path, required=True, help="a new folder for logs, ledger and runs")
    parser.add_argument("--seconds", type=float, default=540.0, help="the deadline, from now (default 540)")
    parser.add_argument("--data", type=Path, help="a prepared DATA_DIR (default: prepared into OUT/data)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    where = Where(args.data.resolve() if args.data else out / "data", out / "ledger", out / "work")
    commands = plan(args.steps, where, prepare=args.data is None)
    if args.dry_run:
        for name, command in commands:
            print(f"{name}: {shown(command)}")
        return 0
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"gpu_session: error: --out {out} is not an empty folder; name a new one", file=sys.stderr)
        return 2
    for folder in (where.ledger, where.work, out / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    session = Session(out, args.seconds)
    ended: dict[str, str] = {}
    for name, command in commands:
        if session.left() <= 0:
            session.say(f"{name}: not started, the deadline has passed")
            ended[name] = "not started"
            continue
        try:
            argv = command()
        except NotYet as why:
            session.say(f"{name}: not started: {why}")
            ended[name] = "not started"
            continue
        session.say(f"{name}: started with {session.left():.0f} s left: {' '.join(argv)}")
        ended[name] = session.run(name, argv)
        if name == "prepare" and ended[name] != "ok":
            session.say("the corpus was not prepared: the steps that read it cannot run")
            break
    session.say(f"records in {where.ledger}: copy them into evidence/runs and run tools/check_integrity.py")
    return 0 if ended and all(e == "ok" for e in ended.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
