"""The record of `stack options-matrix` from the `matrix.json` it cites: GATE-ARCH-013 judged again
over every cell.
"""

from __future__ import annotations

from collections import Counter

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.benchmarks import Identity, total
from contracts.derive.reports import report_of

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


@derives("options-matrix")
def options_matrix_record(inputs: Inputs) -> Derivation:
    """Each cell's outcome and last line, and the count of cells by outcome, from matrix.json."""
    derived = Derivation()
    report = report_of(inputs, derived, "matrix.json", "1.6.0")
    if report is None or not isinstance(report.get("cells"), dict):
        return derived
    if isinstance(report.get("model"), dict):  # the matrix's model, as its config states the matrix
        derived.put(("config", "matrix", "model"), report["model"])
    cells, outcomes, messages = report["cells"], {}, {}
    for option, paths in cells.items():
        if not isinstance(paths, dict):
            continue
        outcomes[option] = {
            path: cell.get("outcome") for path, cell in paths.items() if isinstance(cell, dict)
        }
        for path, cell in paths.items():
            if isinstance(cell, dict) and cell.get("outcome") != "ok":
                messages[f"{option}/{path}"] = cell.get("message")
    counted = Counter(outcome for row in outcomes.values() for outcome in row.values())
    derived.put(("metrics", "cells"), dict(counted))
    derived.gate("GATE-ARCH-013", {"cells": outcomes, "messages": messages})
    listed = [cell for paths in cells.values() if isinstance(paths, dict) for cell in paths.values()]
    listed = [cell for cell in listed if isinstance(cell, dict)]
    if listed and all("verdict" in cell for cell in listed):
        derived.put(("metrics", "verdicts"), dict(Counter(cell["verdict"] for cell in listed)), optional=True)
    seconds = [cell.get("seconds") for cell in listed]
    metrics = inputs.record.metrics
    if listed and "seconds" in metrics and all(isinstance(x, int | float) for x in seconds):
        found = Identity("metrics.seconds", metrics["seconds"], total, tuple(seconds)).problem()
        derived.problems += [f"{found} (the sum of its cells' seconds)"] if found else []
    return derived
