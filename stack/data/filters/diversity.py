"""Low diversity: a document that repeats itself, the way a model stuck in a loop writes.

A loop ("region region region", one sentence said a thousand times, boilerplate pasted over
and over) compresses to a few per cent of its size; text with a small alphabet or vocabulary
does not, because it does not repeat itself, it only has low entropy. So the score is the zlib
compression ratio (contracts.filter_rules) of the first `window_chars` characters, and a window
below `min_compression_ratio` is dropped. It replaced the coherence score of model samples,
which reads word and n-gram variety and so dropped DNA, music notation, tables and generated
grammars along with the loops (docs/data.md gives the numbers measured on each).

A window shorter than `min_chars` is kept unscored: a few dozen characters say little. A
window is compressed only when it repeats one of three probes, its 16-byte stretches at half,
three quarters and the end: a loop repeats every stretch of itself, while ordinary text seldom
repeats a given 16-byte stretch, so most documents are kept after three substring searches.
"""

from __future__ import annotations

from contracts import filter_rules
from stack.data.filters.settings import DiversitySettings


def diversity_score(text: str, settings: DiversitySettings) -> float:
    """The compression ratio of the document's first window (lower: more repetitive)."""
    return filter_rules.compression_ratio(text[: settings.window_chars].encode("utf-8"))


def low_diversity(text: str, settings: DiversitySettings) -> bool:
    """Whether the first window repeats itself and compresses below `min_compression_ratio`
    (a window under `min_chars` never does): contracts.filter_rules.low_diversity."""
    window = text[: settings.window_chars]
    return filter_rules.low_diversity(window, settings.min_chars, settings.min_compression_ratio)
