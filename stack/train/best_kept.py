"""The best checkpoint kept through every prune (GATE-CKPT-002, checks best and pruned).

A run keeps its newest `ckpt.keep_last` checkpoints and, beside them, its best: the one written
right after the evaluation with the lowest held-out loss so far, which early stopping and every
reader of "the best model" rely on, and the one its invocation resumed from. The loop tracks those
names in its state; a slip there (every save called the best, or none) prunes the real best and
leaves a record that names a directory deleted. So after each save this check names the best, and
what a prune keeps, again from the run's metrics log, by the rule in contracts.checkpoints, and
holds them to the checkpoints on disk that verify against their manifests: a checkpoint that does
not verify is not one the run keeps, whatever its name. It follows the log as it grows (each save
reads only the lines since the last): at 100 000 steps a whole re-read took half a second per
save, and the re-reads add up quadratically over a long run.
"""

from __future__ import annotations

from pathlib import Path

from contracts.checkpoints import BestSoFar
from contracts.gates import Outcome, gate_require, measure
from stack.train import checkpoint as ckpt
from stack.train.metrics import LogTail


class BestWatch:
    """The best checkpoint by a run's metrics log, followed as the run writes it (each check reads
    only the lines written since the last one) and folded by contracts.checkpoints' rule."""

    def __init__(self, log_path: Path) -> None:
        self.tail = LogTail(log_path)
        self.fold = BestSoFar()

    def read(self) -> BestSoFar:
        """The fold of the log up to its last whole line."""
        for line in self.tail.new_lines():
            self.fold.take(line)
        return self.fold


def best_kept_outcome(run_dir: Path, watch: BestWatch, keep_last: int, step: int) -> Outcome:
    """The best checkpoint by the log's lines, and the checkpoints a prune leaves by them (the
    newest `keep_last` written and not set aside, the best and the one resumed from), beside the
    checkpoints on disk that verify after a save's prune."""
    fold = watch.read()
    measured = {
        "best_checkpoint": fold.best,
        "kept_checkpoints": ckpt.verified_checkpoints(run_dir),
        "expected_checkpoints": fold.kept(keep_last),
    }
    return measure("GATE-CKPT-002", measured, step=step, holds="the best and the newest checkpoints are kept")


@gate_require("GATE-CKPT-002", best_kept_outcome)
def check_best_kept(run_dir: Path, watch: BestWatch, keep_last: int, step: int) -> None:
    """Refuse to go on once a prune deleted the checkpoint the run's log names its best, or left
    other checkpoints (that verify) than the newest `keep_last`, the best and the one resumed from."""
