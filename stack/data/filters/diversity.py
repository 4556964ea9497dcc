"""Low n-gram diversity: boilerplate repeated, a line said a thousand times, a generated table.

The score is the one that judges a model's samples (stack.train.coherence.coherence_score: word,
bigram and trigram distinct ratios and character variety, 0-100), on the document's first
`window_chars` characters: the same yardstick for data and for samples, at a bounded cost per
document whatever its length. A document shorter than `min_chars` is kept unscored: the ratios
of a few dozen words say little (and "x = 1" thirty times is a test fixture, not a loop).
"""

from __future__ import annotations

from stack.data.filters.settings import DiversitySettings
from stack.train.coherence import coherence_score


def diversity_score(text: str, settings: DiversitySettings) -> float:
    """The coherence score of the document's first window."""
    return coherence_score(text[: settings.window_chars])


def low_diversity(text: str, settings: DiversitySettings) -> bool:
    """Whether the first window scores below `min_score` (a window under `min_chars` never does)."""
    if len(text) < settings.min_chars:
        return False
    return diversity_score(text, settings) < settings.min_score
