"""Coherence of generated samples (GATE-TRAIN-005): a model stuck on one token is caught, not trained on.

The loss can keep falling while a model emits the same token forever; only reading samples shows
it. `coherence_score` reads a sample the cheap way (how much of it repeats itself) and
`CoherenceMonitor` halts the run after too many degenerate samples in a row. The monitor also
proves it was fed: `require_ran` fails a run that trained past the sampling cadence without
observing a single sample, so a training path that skips sampling cannot pass quietly.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.spec import load_spec

# Words and single punctuation marks: code and prose both split into meaningful units this way.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Weights of the four diversity measures; they sum to 1 so the score spans 0-100.
_WORD_WEIGHT = 0.25
_BIGRAM_WEIGHT = 0.25
_TRIGRAM_WEIGHT = 0.30
_CHAR_WEIGHT = 0.20
# Distinct characters at which character diversity saturates: a short English sentence has them.
_CHAR_SATURATION = 20


def _distinct_ratio(items: list[Any]) -> float:
    """(distinct − 1) / (total − 1): 0 when every item repeats the first, 1 when none repeats.

    Subtracting one removes the small-sample flattery of distinct/total ("the the" would score
    1/2); fewer than two items give no evidence of diversity and score 0.
    """
    if len(items) < 2:
        return 0.0
    return (len(set(items)) - 1) / (len(items) - 1)


def coherence_score(text: str) -> float:
    """A 0-100 score of how far a sample is from degenerate repetition.

    With tokens = the lower-cased words and punctuation marks of `text`, and
    ratio(xs) = (distinct(xs) − 1) / (len(xs) − 1) (0 for fewer than two items):

        score = 100 · (0.25 · ratio(tokens) + 0.25 · ratio(bigrams) + 0.30 · ratio(trigrams)
                       + 0.20 · min(1, distinct characters / 20))

    Repetition loops ("the the the", "aaaa", a sentence said twenty times) and empty text score
    near 0; ordinary prose and source code score 60-90. It measures degeneracy, not meaning: random
    characters score high, which is fine for a gate whose failure mode is a model stuck in a loop.
    """
    tokens = _TOKEN_RE.findall(text.lower())
    bigrams = list(itertools.pairwise(tokens))
    trigrams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
    chars = min(1.0, len(set(text)) / _CHAR_SATURATION)
    return 100.0 * (
        _WORD_WEIGHT * _distinct_ratio(tokens)
        + _BIGRAM_WEIGHT * _distinct_ratio(bigrams)
        + _TRIGRAM_WEIGHT * _distinct_ratio(trigrams)
        + _CHAR_WEIGHT * chars
    )


def _streak_outcome(monitor: CoherenceMonitor, step: int) -> Outcome:
    return measure("GATE-TRAIN-005", {"recent_scores": monitor.recent_scores()}, step=step)


def _ran_outcome(monitor: CoherenceMonitor, total_steps: int, sample_every: int) -> Outcome:
    measured = {"samples_scored": len(monitor.history), "steps": total_steps, "sample_every": sample_every}
    return measure("GATE-TRAIN-005", measured, step=total_steps)


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
