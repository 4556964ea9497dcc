"""The prompt/completion boundary of a preference row, apart from the stack's rows (stack.data.prefs_rows).

A pair of `stack prepare --format prefs` is one window of two rows, its chosen row then its rejected
row. A row is the prompt's ids, the completion's ids, one end-of-text, then end-of-text padding;
its mask is 0 over the prompt, 1 over the completion and its end-of-text, 0 over the padding. So
the mask's scored positions are one run that ends on an end-of-text id, the ids before the run are
the prompt and the run's ids but its last the completion. Read there, the two rows give back the
pair's text: the prompt (the same in both rows), the chosen and the rejected completion, whose
identity (contracts.split.example_identity of the turns under PAIR_ROLES) is the one the pair's
JSONL line was hashed to at prepare (its row of the DATA_DIR's index). A mask that starts one
token late moves the completion's first token into the prompt's text, one that stops before the
end-of-text takes it out of the run: either way the text read at the mask is another pair.
GATE-SFT-001's check boundary holds every pair, at prepare and in every batch a DPO loss reads,
to this reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# The roles a pair's turns are hashed and filtered under: the prompt (the user's turn), then the
# two completions.
PAIR_ROLES = ("user", "chosen", "rejected")


def row_bounds(scored: np.ndarray, ids: np.ndarray, eot: int) -> tuple[int, int] | None:
    """(first scored position, last scored position) of a row whose scored positions are one run
    ending on an end-of-text id after at least one prompt token; None for any other mask."""
    at = np.flatnonzero(np.asarray(scored, dtype=bool))
    if not at.size or at[0] == 0 or at[-1] - at[0] + 1 != at.size or int(ids[at[-1]]) != eot:
        return None
    return int(at[0]), int(at[-1])


def pair_turns_at(
    rows: Sequence[np.ndarray], bounds: Sequence[tuple[int, int]], decode: Callable[[list[int]], str]
) -> list[tuple[str, str]] | None:
    """The (role, text) turns of a pair's two rows cut at `bounds` (each row's first completion
    position and its end-of-text's): the ids before the first the prompt, those from it to the
    end-of-text the completion; None when the two rows' prompts differ."""
    texts = [
        (decode(ids[:first].tolist()), decode(ids[first:last].tolist()))
        for ids, (first, last) in zip(rows, bounds, strict=True)
    ]
    (prompt, chosen), (other, rejected) = texts
    if prompt != other:
        return None
    return list(zip(PAIR_ROLES, (prompt, chosen, rejected), strict=True))


def pair_turns_at_mask(
    rows: Sequence[np.ndarray], scored: Sequence[np.ndarray], eot: int, decode: Callable[[list[int]], str]
) -> list[tuple[str, str]] | None:
    """The turns a pair's two rows give back read at their masks (module docstring): None when a
    row's mask is not one run ending on its end-of-text, or the rows' prompts differ."""
    bounds = [row_bounds(marks, ids, eot) for ids, marks in zip(rows, scored, strict=True)]
    if any(b is None for b in bounds):
        return None
    return pair_turns_at(rows, [b for b in bounds if b is not None], decode)
