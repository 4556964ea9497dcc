"""Loss spikes are caught per step and kept (GATE-TRAIN-006), not smoothed away by a plot.

A warning gate: a spike is recorded as WARN in the run's evidence and in `SpikeDetector.spikes`,
and training goes on. The investigation is for a person; the detector makes sure one is possible.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from contracts.derive.training import window_stats
from contracts.gates import Outcome, gate_ensure, measure
from contracts.judges import judge
from contracts.spec import load_spec


def _spike_outcome(detector: SpikeDetector, loss: float, step: int) -> Outcome:
    return measure("GATE-TRAIN-006", detector.last_measured, step=step)


class SpikeDetector:
    """Flags a loss far above its trailing window; prevents spikes vanishing between log lines.

    A loss is a spike when it exceeds mean + `spike_sigma` · std of the trailing
    `spike_window_steps` losses (population std), judged only once the window is full. Every loss,
    spike or not, then joins the window: a lasting shift of the loss level stops counting as a
    spike once the window has seen it.
    """

    def __init__(self) -> None:
        spec = load_spec()
        self.sigma = spec.threshold("GATE-TRAIN-006", "spike_sigma")
        self.window_steps = int(spec.threshold("GATE-TRAIN-006", "spike_window_steps"))
        self.window: deque[float] = deque(maxlen=self.window_steps)
        self.spikes: list[dict[str, float | int]] = []
        self.last_measured: dict[str, float | int] = {}

    @gate_ensure("GATE-TRAIN-006", lambda self, loss, step: _spike_outcome(self, loss, step))
    def observe(self, loss: float, step: int) -> bool:
        """Take the loss of one step; True when it is a spike (recorded in `spikes`)."""
        if not math.isfinite(loss):
            # A NaN in the window would hide every spike for a window's length; TRAIN-003 halts first.
            raise ValueError(f"loss {loss} at step {step} is not finite; GATE-TRAIN-003 must halt before")
        mean, std = window_stats(self.window)  # the rule contracts.derive replays over the metrics log
        self.last_measured = {
            "loss": float(loss),
            "window_mean": mean,
            "window_std": std,
            "window_len": len(self.window),
        }
        spiked = bool(judge("GATE-TRAIN-006", self.last_measured))
        if spiked:
            bound = mean + self.sigma * std
            self.spikes.append({"step": step, "loss": float(loss), "mean": mean, "std": std, "bound": bound})
        self.window.append(float(loss))
        return spiked

    def state_dict(self) -> dict[str, Any]:
        """The trailing window and the spikes found, JSON-serialisable."""
        return {"window": list(self.window), "spikes": [dict(s) for s in self.spikes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; a resumed run judges its next step as if never stopped."""
        self.window = deque((float(x) for x in state["window"]), maxlen=self.window_steps)
        self.spikes = [dict(s) for s in state["spikes"]]
