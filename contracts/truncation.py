"""How much of something a truncation keeps, by the documented rule the gates hold it to.

LASER: how many singular values it keeps of a matrix (stack.surgery.laser plays it).
The rule lives in the contracts because GATE-LASER-002 holds every truncation to it: a record
states each matrix's rank and the values kept, and ρ, and the judge (and the integrity check,
re-judging the record) apply the rule again. A truncation that keeps ⌊ρ·r⌋ instead of ⌈ρ·r⌉ has
an error that is exactly the norm of what it dropped, so only the count shows it.

An evaluation matrix's completion (stack.eval.completion): the context the model reads before it,
cut from the left when the completion does not fit beside it (`completion_window`). GATE-FT-002
holds each scoring forward's ids, as taped, to the rule applied to the context the row states, so
a cut from the wrong end, a room off by one, a cut completion or a missing end-of-text id shows.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import NamedTuple


class Window(NamedTuple):
    """A completion's scoring forward: the ids it reads, its targets (−1: none), the context ids cut."""

    inputs: list[int]
    targets: list[int]
    dropped: int


def rank_kept(rank: int, rho: float) -> int:
    """⌈ρ·rank⌉ singular values, at least one."""
    return max(1, math.ceil(rho * rank))


def completion_window(eot: int, context: list[int], completion: list[int], ctx: int) -> Window:
    """What the forward scoring a completion after a context reads and scores (stack.eval.completion,
    GATE-FT-002's check windows): [eot] + the context's ids, cut to its last ctx − len(completion)
    tokens (the newest: those nearest the completion), then every id of the completion. The inputs
    are that sequence but its last id; the targets are −1 where nothing is scored and the
    completion's ids from the last context position on; `dropped` is how many context ids were cut."""
    stated = [eot, *context]
    room = max(ctx - len(completion), 0)
    kept = stated[max(len(stated) - room, 0) :]
    sequence = kept + completion
    return Window(sequence[:-1], [-1] * (len(kept) - 1) + completion, len(stated) - len(kept))


def window_sha256(inputs: list[int], targets: list[int]) -> str:
    """The digest a scoring's inputs and targets are compared by (GATE-FT-002's check windows)."""
    return hashlib.sha256(json.dumps([inputs, targets]).encode("ascii")).hexdigest()
