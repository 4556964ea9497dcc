"""Whether an evolution-strategies run ends with the loss it descends higher than it began
(GATE-ES-007), measured from the run's own step lines.

ES ascends the smoothed fitness E[F(θ + σε)]: each step's population mean fitness, on that step's
batch, samples it at the step's θ. So the run's first `window` steps and its last `window` say
where the smoothed loss began and where it ended, each as the mean of its steps' population mean
losses. Their difference is held to its standard error under the batch-to-batch spread, estimated
from the successive differences of every step's loss (half their mean square, von Neumann's
estimator): a loss that drifts moves each difference by one step's drift only, so a rise is not
taken for spread, as the variance within a window of a steadily rising loss would be. A step size
too large for the model moves θ away from lower loss: `stack es` from a trained 2-block
model at --sigma 0.01 --lr 0.01 (Adam moving every weight by about 0.01 a step) ended 100
steps later with the population's loss risen from 4.91 (its first ten steps) to 6.89 (its last
ten) and the held-out loss from 4.46 to 6.77, exit 0, every gate passed.

One function measures for the run (stack.es.rundir) and for the checker (contracts.derive.es), so
the record's values are what its metrics log gives.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any


def loss_trend(fitness_means: Sequence[float], window_steps: int) -> dict[str, Any]:
    """GATE-ES-007's measure of a run whose steps' population mean fitnesses (−loss) are
    `fitness_means`, in step order: the steps, the window (window_steps, or half the steps when
    fewer), and with a window of two steps or more the mean loss of the first and of the last
    window and the standard error of their difference, √(2s²/window) with s² half the mean square
    of the successive differences of every step's loss; a shorter run is too short to tell a rise
    from its batches."""
    steps = len(fitness_means)
    window = min(window_steps, steps // 2)
    measured: dict[str, Any] = {"steps": steps, "window": window}
    if window < 2:
        return measured
    losses = [-value for value in fitness_means]
    differences = [after - before for before, after in itertools.pairwise(losses)]
    spread = statistics.fmean([d * d for d in differences]) / 2
    return measured | {
        "first_loss": statistics.fmean(losses[:window]),
        "last_loss": statistics.fmean(losses[steps - window :]),
        "rise_se": math.sqrt(2 * spread / window),
    }
