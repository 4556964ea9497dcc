"""`stack options-matrix`: every advertised option on every path, at smoke size (GATE-ARCH-013).

    stack options-matrix --data DATA_DIR --out DIR [--evidence-dir LEDGER]

Runs each cell of spec/options_matrix.yaml (stack.options_matrix) under DIR/cells/, prints one
line per cell, and writes DIR/matrix.json (every cell's outcome and last line) and the evidence
record DIR/metadata.json of run kind options-matrix. Exit 0: every cell ran (or was refused in
one line where its path may refuse); 3: GATE-ARCH-013 fired, the record in DIR says which cells;
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
        help="run every architecture option on every path at smoke size (GATE-ARCH-013)",
        description="Train, resume, sample, eval, trace, inspect and export a smoke-size model of every "
        "option in spec/options_matrix.yaml, through the command line, and judge the matrix.",
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


def _print_cell(option: str, path: str, cell: Cell) -> None:
    print(f"{option:<16} {path:<8} {cell.outcome:<8} {cell.seconds:6.2f} s  {cell.message}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the matrix, print each cell, write matrix.json and the evidence record."""
    from contracts.evidence import RunStatus, canonical_sha256
    from stack.cli import main
    from stack.cli.inputs import check_inputs
    from stack.data.manifest import load_manifest
    from stack.eval.evidence import CommandEvidence
    from stack.options_matrix import load_matrix, run_cells, settle
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
    with _crash_files_in(args.out / "cells" / "crashes"):
        cells = run_cells(matrix, args.data, args.out / "cells", _print_cell, main)
    try:
        with evidence.judging():
            settle(matrix, cells)
        evidence.settle(RunStatus.COMPLETED)
    finally:  # a fired gate leaves the record saying which cells failed, then exits 3
        _write(args.out, evidence, matrix, cells)
    return 0


def _write(out: Path, evidence: CommandEvidence, matrix: Matrix, cells: dict[str, dict[str, Cell]]) -> None:
    """matrix.json and the evidence record (with the cell counts as its metrics), filed if asked."""
    import json
    from collections import Counter

    from contracts.evidence import atomic_write_bytes
    from stack.options_matrix import table

    path = out / MATRIX_JSON
    atomic_write_bytes(path, (json.dumps(table(matrix, cells), indent=1) + "\n").encode())
    outcomes = Counter(c.outcome for row in cells.values() for c in row.values())
    evidence.record.metrics = {"cells": dict(outcomes)}
    record = evidence.write(out, [path])
    evidence.file((path,))
    print(f"wrote {path} (evidence {record})")
