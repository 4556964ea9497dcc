"""Coherence of generated samples (GATE-TRAIN-005): a model stuck on one token is caught, not trained on.

The loss can keep falling while a model emits the same token forever; only reading samples shows
it. contracts.coherence scores a sample the cheap way (how much of it repeats itself) and
`CoherenceMonitor` halts the run after too many degenerate samples in a row. The monitor also
proves it was fed: `require_ran` fails a run that trained past the sampling cadence without
observing a single sample, so a training path that skips sampling cannot pass quietly.
"""

from __future__ import annotations

from typing import Any

from contracts.coherence import coherence_score, sample_score
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.spec import load_spec


def _streak_outcome(monitor: CoherenceMonitor, step: int) -> Outcome:
    return measure("GATE-TRAIN-005", {"recent_scores": monitor.recent_scores()}, step=step)


def _ran_outcome(monitor: CoherenceMonitor, total_steps: int, sample_every: int) -> Outcome:
    measured = {"samples_scored": len(monitor.history), "steps": total_steps, "sample_every": sample_every}
    return measure("GATE-TRAIN-005", measured, step=total_steps)


def _scored_outcome(texts: list[str], observed: float, logged: float, step: int, drawn: list[str]) -> Outcome:
    not_drawn = sum(text != own for text, own in zip(texts, drawn, strict=False)) + abs(
        len(texts) - len(drawn)
    )
    measured = {
        "texts_score": sample_score([coherence_score(text) for text in texts]),
        "observed_score": observed,
        "logged_score": logged,
        "texts_scored": len(texts),
        "texts_not_drawn": not_drawn,
    }
    return measure("GATE-TRAIN-005", measured, step=step, holds="the monitor judged the samples' score")


@gate_require("GATE-TRAIN-005", _scored_outcome)
def check_scored(texts: list[str], observed: float, logged: float, step: int, drawn: list[str]) -> None:
    """After each sampling round: the texts scored are the text of the tokens each generation drew
    (`drawn`, decoded from the ids the draws were replayed from, never from the prompt), and the
    score the monitor observed (`observed`, its history's last) and the one the sample line logs
    are the round's score, the mean of each sampled text's coherence, scored again here from the
    texts. A monitor fed the best prompt's score, a line that says another score than the one
    judged, or texts that carry their prompt's words into the score, would let a collapse run on."""


class CoherenceMonitor:
    """Halts a run whose samples stay degenerate; prevents training on for days past a collapse.

    Feed it one score per sampling step with `observe`. A score below `min_coherence_score`
    extends the streak of low samples, a score at or above it ends the streak; when the streak
    reaches `max_consecutive_low`, GATE-TRAIN-005 fires.
    """

    def __init__(self) -> None:
        spec = load_spec()
        self.min_score = spec.threshold("GATE-TRAIN-005", "min_coherence_score")
        self.max_consecutive_low = spec.threshold("GATE-TRAIN-005", "max_consecutive_low")
        self.consecutive_low = 0
        self.history: list[tuple[int, float]] = []

    @property
    def observed_any(self) -> bool:
        """Whether any sample was scored: the proof that the loop's sampling path ran."""
        return bool(self.history)

    def recent_scores(self) -> list[float]:
        """The scores of the current streak's window: what GATE-TRAIN-005's judge reads."""
        return [score for _, score in self.history[-int(self.max_consecutive_low) :]]

    @gate_ensure("GATE-TRAIN-005", lambda self, step: _streak_outcome(self, step))
    def observe(self, score: float, step: int) -> None:
        """Record the coherence score of the sample taken at `step`; fires on too long a low streak."""
        self.history.append((step, float(score)))
        self.consecutive_low = self.consecutive_low + 1 if score < self.min_score else 0

    @gate_require(
        "GATE-TRAIN-005",
        lambda self, total_steps, sample_every: _ran_outcome(self, total_steps, sample_every),
    )
    def require_ran(self, total_steps: int, sample_every: int) -> None:
        """Called at the end of training: refuses a run that was due a sample but observed none.

        A non-positive `sample_every` means sampling was switched off, which is itself refused.
        """

    def state_dict(self) -> dict[str, Any]:
        """The streak and history, JSON-serialisable, for the checkpoint's state.json."""
        return {
            "consecutive_low": self.consecutive_low,
            "history": [[step, score] for step, score in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so a resumed run keeps its streak."""
        self.consecutive_low = int(state["consecutive_low"])
        self.history = [(int(step), float(score)) for step, score in state["history"]]
