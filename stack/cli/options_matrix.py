"""`stack options-matrix`: every option, alone, in pairs and all together, on every command (GATE-ARCH-013).

    stack options-matrix --data DATA_DIR --out DIR [--evidence-dir LEDGER]

Runs each cell of spec/options_matrix.yaml (stack.options_matrix) under DIR/cells/, prints one
line per cell, and writes DIR/matrix.json (every cell's outcome, verdict and last line) and the
evidence record DIR/metadata.json of run kind options-matrix, filed into LEDGER when given. On two
CPU cores the whole matrix takes some minutes (the ONNX exports most of them): it is run like a
benchmark, and `make test` runs its `fast` subset (tests/cli/test_options_matrix.py). Exit 0: every
cell passed or refused as declared; 3: GATE-ARCH-013 fired, the record in DIR says which cells;
2: bad input. DIR must not exist yet, or be empty: nothing of the user's is overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from stack.cli import values

if TYPE_CHECKING:
    from stack.eval.evidence import CommandEvidence
    from stack.options_matrix import Cell, Matrix

MATRIX_JSON = "matrix.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack options-matrix` and its options."""
    parser = sub.add_parser(
        "options-matrix",
        help="run every option, alone, in pairs and together, on every command (GATE-ARCH-013)",
        description="Train a two-block model of each option combination in spec/options_matrix.yaml and "
        "run every command that reads or writes a model on it, through the command line; judge the matrix.",
    )
    parser.add_argument(
        "--data", type=values.utf8_path, required=True, metavar="DATA_DIR", help="a prepared DATA_DIR"
    )
    parser.add_argument(
        "--out", type=values.utf8_path, required=True, metavar="DIR", help="a new (or empty) directory"
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run)


@contextlib.contextmanager
def _crash_files_in(directory: Path) -> Iterator[None]:
    """The cells' crash files go with the matrix's output, not to the user's state directory."""
    from stack.cli import CRASH_DIR_ENV

    before = os.environ.get(CRASH_DIR_ENV)
    os.environ[CRASH_DIR_ENV] = str(directory)
    try:
        yield
    finally:
        if before is None:
            del os.environ[CRASH_DIR_ENV]
        else:
            os.environ[CRASH_DIR_ENV] = before


def print_cell(model: str, command: str, cell: Cell) -> None:
    """One line per cell as it ends: model, command, outcome, seconds, the command's last line."""
    print(f"{model:<18} {command:<16} {cell.outcome:<8} {cell.seconds:6.2f} s  {cell.message}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the matrix, print each cell, write matrix.json and the evidence record."""
    from contracts.evidence import RunStatus, canonical_sha256
    from stack.cli import main
    from stack.cli.inputs import check_inputs
    from stack.data.manifest import load_manifest
    from stack.eval.evidence import CommandEvidence
    from stack.options_matrix import load_matrix, run_cells, settle, trained_layers
    from stack.outputs import rundir

    check_inputs("options-matrix", args)
    # OUT holds the cells' runs, each written by its own command under the rules of all outputs:
    # OUT itself has to pass them and be new or empty, and is written in place as the cells run.
    rundir.check(args.out, rundir.Writer("stack options-matrix"))
    load_manifest(args.data)  # a DATA_DIR that is not one would fail every cell for the wrong reason
    matrix = load_matrix()
    evidence = CommandEvidence("options-matrix", args.argv, "cpu", args.evidence_dir)
    evidence.record.config = {"data": str(args.data), "matrix": matrix.model_dump()}
    evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "cells"
    with _crash_files_in(work / "crashes"):
        cells = run_cells(matrix, args.data, work, print_cell, main)
    layers = trained_layers(work, cells)
    try:
        with evidence.judging():
            settle(matrix, cells, layers)
        evidence.settle(RunStatus.COMPLETED)
    finally:  # a fired gate leaves the record saying which cells failed, then exits 3
        _write(args.out, evidence, matrix, cells, layers)
    return 0


def _write(
    out: Path,
    evidence: CommandEvidence,
    matrix: Matrix,
    cells: dict[str, dict[str, Cell]],
    layers: dict[str, int],
) -> None:
    """matrix.json and the evidence record (the cells' outcomes and verdicts counted as its metrics),
    filed if asked; one line of the verdicts' counts."""
    import json
    from collections import Counter

    from contracts.evidence import atomic_write_bytes
    from stack.options_matrix import measured_matrix, table

    path = out / MATRIX_JSON
    shown = table(matrix, cells, measured_matrix(matrix, cells, layers))
    atomic_write_bytes(path, (json.dumps(shown, indent=1) + "\n").encode())
    outcomes = Counter(c.outcome for row in cells.values() for c in row.values())
    verdicts = Counter(c["verdict"] for row in shown["cells"].values() for c in row.values())
    seconds = sum(c.seconds for row in cells.values() for c in row.values())
    evidence.record.metrics = {
        "cells": dict(outcomes),
        "verdicts": dict(verdicts),
        "seconds": round(seconds, 1),
    }
    record = evidence.write(out, [path])
    evidence.file((path,))
    counted = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    print(f"{sum(verdicts.values())} cells: {counted}; wrote {path} (evidence {record})")
