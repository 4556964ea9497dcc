"""Exact match of a greedy continuation: the statute of an evaluation matrix's exact-match column.

`stack evalmatrix --exact-match` decodes greedily after each item's context as many tokens as its
completion has, and counts the item matched when that continuation's text is the completion, both
stripped of surrounding whitespace. The stack compares them in its own scorer
(stack.eval.completion); a scorer that compared only the first character would pass every gate
if nothing kept the continuation to compare again. GATE-FT-002's check
exact holds every stated exact match to the one found here from the continuation the run decoded,
and the checker finds it again from the continuations evalmatrix.json keeps.
"""

from __future__ import annotations


def exact_match(continuation: str, completion: str) -> bool:
    """Whether the greedy continuation's text is the completion, ignoring surrounding whitespace."""
    return continuation.strip() == completion.strip()
