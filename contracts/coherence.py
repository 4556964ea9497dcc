"""How far a text is from degenerate repetition: the coherence score, read by training and by data.

The training monitor (GATE-TRAIN-005, stack.train.coherence) scores the model's samples with it,
`stack synth` drops generated samples that score low, and the mixture policy profiles each data
source's text with it (GATE-DATA-011). One score, so a sample the monitor calls degenerate is the
one synth drops. It lives in contracts because the integrity check scores again every sample text
a training log or a synthesis keeps (contracts/derive), with this same function: a pure one of
the text, importing nothing from the stack.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

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


def sample_score(scores: list[float]) -> float:
    """The score of one sampling round: the mean of its prompts' coherence scores (exactly rounded).

    One home for the rule: the monitor observes it, the sample line logs it, GATE-TRAIN-005's
    `scored` check holds both to it, and the integrity check derives it from the logged texts.
    """
    if not scores:
        raise ValueError("a sampling round needs at least one prompt's score")
    return math.fsum(scores) / len(scores)


def sample_length(tokens: int, ctx: int) -> int:
    """The tokens the monitor samples after each prompt: `monitor.tokens`, or ctx − 1 where the
    context has no room beside them for the prompt's last token (the prompt keeps its last
    ctx − length tokens). One home for the rule: the loop samples by it, and the integrity check
    derives GATE-TRAIN-005's `draws` from it (prompts × this)."""
    return min(tokens, ctx - 1)
