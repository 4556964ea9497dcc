"""GATE-DIST-001's comparison: a data-parallel run against the single-process run of the same batches.

Both runs log every step's loss and the hash of its global batch (GATE-TRAIN-001); the gate's
judge decides from the largest loss difference and the steps whose batches differ, so the
tolerance rule lives in contracts/judges/dist.py alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.gates import Outcome, measure


def loss_parity(single: Sequence[dict[str, Any]], parallel: Sequence[dict[str, Any]]) -> Outcome:
    """The outcome for two runs' step lines (step, loss, batch_sha256), compared step by step."""
    pairs = list(zip(single, parallel, strict=False))
    measured = {
        "steps": len(pairs),
        "steps_missing": abs(len(single) - len(parallel)),
        "max_loss_diff": max((abs(a["loss"] - b["loss"]) for a, b in pairs), default=0.0),
        "batches_differ_at": [a["step"] for a, b in pairs if a["batch_sha256"] != b["batch_sha256"]],
    }
    return measure("GATE-DIST-001", measured, holds="the data-parallel run matches the single process")
