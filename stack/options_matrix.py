"""Every advertised option on every path: the matrix of GATE-ARCH-013, run through the CLI.

spec/options_matrix.yaml lists the architecture options (each as the model settings that turn
it on) and the paths a user takes with a model. Each cell runs `stack` in this process, as a
user would on the command line, at smoke size: a one-block model of the `smoke` preset trained
for TRAIN_STEPS steps on a prepared DATA_DIR, resumed for one more, then sampled, evaluated,
traced, inspected and exported. A cell's outcome comes from the command's exit code alone:

    0 → ok        2 → refused (one line, by construction of stack.cli.main)
    3 → gate      1, or a traceback on stderr, or an exception out of main → crashed
    missing       not run: a setting ModelConfig does not have, or a path after a failed train

Mixture of depths runs with mod_every 1, so the one block routes. The matrix lives in this
module and not in stack/model because it drives the command line, which stands above the model.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure
from contracts.spec import default_spec_dir
from stack.model.config import ModelConfig

MATRIX_FILE = "options_matrix.yaml"
TRAIN_STEPS = 2  # a fresh run; the resume adds one more
PROMPT = "gate model"
SAMPLE_TOKENS = 4
EVAL_BYTES = 2000  # whole held-out documents up to about this many bytes
TRACEBACK = "Traceback (most recent call last)"
# The command line a cell runs through: `stack.cli.main`, handed in by the command that runs the
# matrix, which stands above it.
Command = Callable[[list[str]], int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionSpec(_Strict):
    """One advertised option: its name and the model settings that turn it on."""

    name: str
    model: dict[str, bool | int | float | str]


class PathSpec(_Strict):
    """One path, and whether it may refuse an option (in one line, exit 2)."""

    name: str
    may_refuse: bool


class Matrix(_Strict):
    """Options × paths, in the order they run."""

    options: list[OptionSpec]
    paths: list[PathSpec]


@dataclass(frozen=True)
class Cell:
    """What one path did with one option."""

    outcome: str  # ok | refused | gate | crashed | missing
    message: str  # the last line the command printed, or why the cell was not run
    seconds: float = 0.0


def load_matrix(spec_dir: Path | None = None) -> Matrix:
    """The matrix of the spec (spec/options_matrix.yaml), validated."""
    path = (spec_dir or default_spec_dir()) / MATRIX_FILE
    try:
        return Matrix.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise BadInput(f"spec file missing: {path}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise BadInput(f"{path}: {where}: {problem['msg']}") from None


def _sets(section: str, values: dict[str, Any]) -> list[str]:
    """`--set section.key=value` arguments; json's literals are TOML's for these types."""
    return [arg for key, value in values.items() for arg in ("--set", f"{section}.{key}={json.dumps(value)}")]


@dataclass(frozen=True)
class Smoke:
    """Where one option's cells read and write."""

    data: Path
    work: Path  # this option's own directory

    @property
    def run(self) -> Path:
        return self.work / "run"


def _train(option: OptionSpec, at: Smoke) -> list[str]:
    argv = ["train", "--data", str(at.data), "--out", str(at.run), "--preset", "smoke"]
    argv += _sets("train", {"steps": TRAIN_STEPS, "device": "cpu"})
    argv += _sets("eval", {"every": TRAIN_STEPS}) + _sets("ckpt", {"every": TRAIN_STEPS})
    return argv + _sets("monitor", {"sample_every": TRAIN_STEPS}) + _sets("model", option.model)


# Path name → the `stack` arguments of that path for an option. The first path makes the run
# every later one reads.
PATH_ARGV: dict[str, Callable[[OptionSpec, Smoke], list[str]]] = {
    "train": _train,
    "resume": lambda o, at: ["train", "--resume", str(at.run), *_sets("train", {"steps": TRAIN_STEPS + 1})],
    "sample": lambda o, at: ["sample", str(at.run), "--prompt", PROMPT, "--tokens", str(SAMPLE_TOKENS)],
    "eval": lambda o, at: ["eval", str(at.run), "--split", "val", "--max-bytes", str(EVAL_BYTES)],
    "trace": lambda o, at: ["trace", str(at.run), "--prompt", PROMPT, "--out", str(at.work / "trace")],
    "inspect": lambda o, at: ["inspect", str(at.run)],
    "export": lambda o, at: ["export", str(at.run), "--format", "hf", "--out", str(at.work / "export")],
}
FIRST_PATH = "train"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_cell(command: Command, argv: list[str]) -> Cell:
    """Run `stack ARGV` in this process with its output captured; the exit code decides the cell."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = command(argv)
    except BaseException as exc:  # main lets only SystemExit out; anything here is a crash of the cell
        escaped = f"{type(exc).__name__} escaped stack.cli.main: {exc}"
        return Cell("crashed", escaped, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if TRACEBACK in err.getvalue() or TRACEBACK in out.getvalue():
        return Cell("crashed", f"exit {code} with a traceback: {_last_line(err.getvalue())}", seconds)
    outcome = {0: "ok", 2: "refused", 3: "gate"}.get(code, "crashed")
    message = _last_line(out.getvalue() if code == 0 else err.getvalue())
    return Cell(outcome, message if outcome != "crashed" else f"exit {code}: {message}", seconds)


def unknown_settings(option: OptionSpec) -> list[str]:
    """The option's model settings that ModelConfig does not have (the option is not built yet)."""
    return [f"model.{key}" for key in option.model if key not in ModelConfig.model_fields]


OnCell = Callable[[str, str, Cell], None]  # (option, path, cell), told as each cell ends


def run_option(
    option: OptionSpec, paths: list[PathSpec], data: Path, work: Path, on_cell: OnCell, command: Command
) -> dict[str, Cell]:
    """Every path of one option, in order, under work/<option>; a cell's result goes to on_cell too."""
    at = Smoke(data, work / option.name)
    unknown = unknown_settings(option)
    cells: dict[str, Cell] = {}
    for path in paths:
        if unknown:
            cell = Cell("missing", f"the model has no {', '.join(unknown)} yet")
        elif path.name not in PATH_ARGV:
            cell = Cell("missing", f"no way to run path {path.name!r} is known; add it to PATH_ARGV")
        elif path.name != FIRST_PATH and cells.get(FIRST_PATH, Cell("missing", "")).outcome != "ok":
            cell = Cell("missing", f"no run to use: {FIRST_PATH} did not complete")
        else:
            cell = run_cell(command, PATH_ARGV[path.name](option, at))
        cells[path.name] = cell
        on_cell(option.name, path.name, cell)
    return cells


def measured_matrix(matrix: Matrix, cells: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    """The matrix and its cells as GATE-ARCH-013's measured values: outcomes, and the last line of
    every cell that is not ok (kept short, as a gate's message carries what it measured)."""
    return {
        "options": [o.name for o in matrix.options],
        "paths": [p.model_dump() for p in matrix.paths],
        "cells": {option: {path: c.outcome for path, c in row.items()} for option, row in cells.items()},
        "messages": {
            f"{option}/{path}": c.message
            for option, row in cells.items()
            for path, c in row.items()
            if c.outcome != "ok"
        },
    }


def table(matrix: Matrix, cells: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    """Everything about every cell, for a person (matrix.json): settings, outcome, last line, time."""
    return {
        "settings": {o.name: o.model for o in matrix.options},
        "cells": {option: {path: asdict(c) for path, c in row.items()} for option, row in cells.items()},
    }


def matrix_outcome(measured: dict[str, Any]) -> Outcome:
    """GATE-ARCH-013 over a measured matrix."""
    return measure("GATE-ARCH-013", measured, holds="every option ran every path")


@gate_ensure("GATE-ARCH-013", lambda result: matrix_outcome(result))
def settle(matrix: Matrix, cells: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    """The measured matrix, judged: a failed or missing cell fires the gate."""
    return measured_matrix(matrix, cells)


def run_cells(
    matrix: Matrix, data: Path, work: Path, on_cell: OnCell, command: Command
) -> dict[str, dict[str, Cell]]:
    """Run every cell under `work`; `settle` judges them.

    Run outside any ledger of the caller's: each command records its own gates in its own
    evidence, and the matrix's record judges the matrix alone.
    """
    return {o.name: run_option(o, matrix.paths, data, work, on_cell, command) for o in matrix.options}
