"""GATE-ES-007 when an invocation's steps end: has the run's loss risen since its start?

Judged on the run's metrics log as written (every step line, a resume's earlier ones included),
the artifact the checker derives the same values from (contracts.es_trend): the population mean
losses of the run's first steps against its last. A warning: the run is written either way, and
`stack es` says the finding at its end.
"""

from __future__ import annotations

from pathlib import Path

from contracts.es_trend import loss_trend
from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec
from stack.train.metrics import read_lines


def trend_outcome(log: Path) -> Outcome:
    """GATE-ES-007 on the step lines of the metrics log at `log`, in step order."""
    window = int(load_spec().threshold("GATE-ES-007", "window_steps"))
    means = [line["fitness_mean"] for line in read_lines(log) if line.get("type") == "step"]
    return measure("GATE-ES-007", loss_trend(means, window), holds="the run's loss has not risen")


@gate_require("GATE-ES-007", lambda log: trend_outcome(log))
def check_trend(log: Path) -> None:
    """Bound to GATE-ES-007: the run's population loss has not risen since its first steps."""
