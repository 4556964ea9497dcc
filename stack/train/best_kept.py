"""The best checkpoint kept through every prune (GATE-CKPT-002, check best).

A run keeps its newest `ckpt.keep_last` checkpoints and, beside them, its best: the one written
right after the evaluation with the lowest held-out loss so far, which early stopping and every
reader of "the best model" rely on. The loop tracks that name in its state; a slip there (every
save called the best, or none) prunes the real best and leaves a record that names a directory
deleted. So after each save this check names the best again from the run's metrics log, by the
rule in contracts.checkpoints, and holds it to the checkpoints on disk.
"""

from __future__ import annotations

from pathlib import Path

from contracts.checkpoints import best_checkpoint_of
from contracts.gates import Outcome, gate_require, measure
from stack.train import checkpoint as ckpt
from stack.train.metrics import read_lines


def best_kept_outcome(run_dir: Path, log_path: Path, step: int) -> Outcome:
    """The best checkpoint by the log's lines beside the checkpoints on disk, after a save's prune."""
    measured = {
        "best_checkpoint": best_checkpoint_of(read_lines(log_path)),
        "kept_checkpoints": [path.name for path in ckpt.saved_checkpoints(run_dir)],
    }
    return measure("GATE-CKPT-002", measured, step=step, holds="the best checkpoint is kept")


@gate_require("GATE-CKPT-002", best_kept_outcome)
def check_best_kept(run_dir: Path, log_path: Path, step: int) -> None:
    """Refuse to go on once a prune deleted the checkpoint the run's log names its best."""
