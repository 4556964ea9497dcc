"""The statute of mixture-of-depths capacity (docs/model.md, "Mixture of depths"), apart from
stack/model/depth_router.py so that a bug there cannot move both sides.

Training routes the top ⌊C·T⌋ scores of each sequence of T tokens. Inference routes a token when
its score exceeds the block's saved threshold, which the last training forward set to split that
batch's N scores, all sequences pooled, into the top ⌊C·N⌋ and the rest. So the threshold, applied
as inference applies it to the very scores that set it, admits exactly ⌊C·N⌋ of them, except where
scores tie across the split: a tie group is admitted or left out whole, so fewer may exceed it, by
at most the tied scores beyond the first at the largest score the threshold leaves out.
"""

from __future__ import annotations

import math


def capacity_share(capacity: float, tokens: int) -> int:
    """⌊C·N⌋: the tokens of N that a routed block computes at capacity C."""
    return math.floor(capacity * tokens)


def threshold_admits(capacity: float, tokens: int, admitted: int, tied: int) -> bool:
    """Whether a threshold that `admitted` of the `tokens` scores that set it exceed is the split at
    capacity C: ⌊C·N⌋ − tied ≤ admitted ≤ ⌊C·N⌋, `tied` the scores beyond the first equal to the
    largest score the threshold leaves out (0 without ties)."""
    share = capacity_share(capacity, tokens)
    return share - tied <= admitted <= share
