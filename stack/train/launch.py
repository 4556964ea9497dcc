"""`stack train --nproc N`: the same command under torchrun, ending as a single process would.

Every check of a run (bad input, a gate at set-up or at a step) happens inside the worker
processes, each of which would print its refusal, and torchrun would then end with its own
traceback and exit 1 whatever the workers said. So the command is run by this module's entry
point (`python -m stack.train.launch`), which starts torchrun's agent without its error report,
and each worker that ends on a refusal hands its one line and exit code to the launcher through
a file (`LAUNCH_DIR_ENV`) instead of printing it. The launcher exits with the worst code the
workers gave (a gate's 3 over bad input's 2 over an internal error's 1, whose line names its crash
file, over an interrupt's 130 or 143: workers a signal stopped after their checkpoint) and prints
each distinct line of the workers that ended on their own account once. An interrupt's line is
printed only when every worker was interrupted: once one worker refuses, torchrun SIGTERMs the
others, and a sibling still setting up would otherwise add "interrupted by SIGTERM" to the refusal.
A worker that died without a word is an internal error naming torchrun's exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from stack.outputs.lock import running_command

# Where a worker under `launch` leaves the line it ended on (unset outside a launch).
LAUNCH_DIR_ENV = "GATESTACK_LAUNCH_DIR"
OMP_THREADS_ENV = "OMP_NUM_THREADS"
# Exit codes by how much they say: a gate that fired, then bad input, then an internal error, then
# an interrupt (any other code, 130 or 143).
SEVERITY = {3: 3, 2: 2, 1: 1}


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run `argv` (a `stack` command line) under torchrun with `nproc` processes on this node;
    print the workers' distinct lines and return the worst of their exit codes."""
    rest, skip = [], False
    for arg in argv[1:]:  # drop "stack" and every --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    with tempfile.TemporaryDirectory(prefix="gatestack-launch-") as where:
        # torchrun's agent makes a folder per attempt and rank under its log directory, by default a
        # new torchelastic_* one in the system's temporary folder that nothing removes: here it is
        # a folder of this launch's own, removed with it.
        logs = f"--log-dir={Path(where) / 'torchrun'}"
        command = [
            sys.executable,
            "-m",
            __name__,
            "--standalone",
            f"--nproc-per-node={nproc}",
            logs,
            "-m",
            "stack",
        ]
        # torchrun gives each worker one OpenMP thread unless OMP_NUM_THREADS says otherwise, and
        # says so in a five-line banner on every launch: the same default, set here, goes unsaid.
        env = {OMP_THREADS_ENV: "1", **os.environ, LAUNCH_DIR_ENV: where}
        code = subprocess.run([*command, *rest], env=env, check=False).returncode
        ended = [
            json.loads(path.read_text(encoding="utf-8")) for path in sorted(Path(where).glob("rank-*.json"))
        ]
    if not ended:
        if code:
            print(
                f"{running_command('stack train')}: internal error: torchrun ended with exit code {code} and "
                "no worker said why; "
                "the workers' output is above",
                file=sys.stderr,
            )
        return code
    lines, worst = verdict(ended)
    for line in lines:
        print(line, file=sys.stderr)
    return worst


def verdict(ended: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The distinct lines to print and the exit code for the workers' handed-over `ended` entries:
    the worst code, and the lines of the workers that ended on their own account (a refusal, a gate,
    a crash) or, when every worker was interrupted, the interrupts' lines."""
    own = [entry for entry in ended if entry["code"] in SEVERITY] or ended
    worst = max((entry["code"] for entry in ended), key=lambda c: SEVERITY.get(c, 0))
    return list(dict.fromkeys(entry["line"] for entry in own)), worst


def hand_over(line: str, code: int) -> bool:
    """In a worker of a launch, leave the line it ends on (and its exit code) for the launcher and
    return True; outside a launch, return False (the caller prints it)."""
    where = os.environ.get(LAUNCH_DIR_ENV)
    rank = os.environ.get("RANK")
    if where is None or rank is None:
        return False
    (Path(where) / f"rank-{int(rank):04d}.json").write_text(
        json.dumps({"line": line, "code": code}), encoding="utf-8"
    )
    return True


def end_worker(code: int) -> None:
    """End a worker process of a data-parallel run (torchrun's RANK, a WORLD_SIZE of 2 or more) with
    its command's exit `code`, without tearing the interpreter down; anywhere else, return.

    The command has returned: the run's files are written and closed, and the process group left
    (stack.train.distributed.leave). What the interpreter's teardown would still do is destroy the
    objects nothing freed, and under FSDP2 those include gloo's process group: FSDP2's state,
    which the collector does not free even once the model is gone, keeps the group referenced past
    destroy_process_group, and gloo has no shutdown of its own, so its threads run until the
    teardown destroys them in a half-finalized interpreter. That can abort a worker whose run
    completed ("terminate called without an active exception"), and the launch would end as an
    internal error. So the worker flushes what it printed and leaves with os._exit: its exit code
    is its command's."""
    world = os.environ.get("WORLD_SIZE", "1")
    if os.environ.get("RANK") is None or not world.isdigit() or int(world) < 2:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a stream closed
            stream.flush()
    logging.shutdown()
    os._exit(code)


def _agent(args: list[str]) -> int:
    """torchrun's agent over `args`, its own error report left out: a failed worker's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(args))
    except ChildFailedError as failed:
        _, first = failed.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(_agent(sys.argv[1:]))
