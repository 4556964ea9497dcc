"""How many singular values LASER keeps of a matrix (stack.surgery.laser plays it).

The rule lives in the contracts because GATE-LASER-002 holds every truncation to it: a record
states each matrix's rank and the values kept, and ρ, and the judge (and the integrity check,
re-judging the record) apply the rule again. A truncation that keeps ⌊ρ·r⌋ instead of ⌈ρ·r⌉ has
an error that is exactly the norm of what it dropped, so only the count shows it.
"""

from __future__ import annotations

import math


def rank_kept(rank: int, rho: float) -> int:
    """⌈ρ·rank⌉ singular values, at least one."""
    return max(1, math.ceil(rho * rank))
