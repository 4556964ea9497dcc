"""The longest verbatim run two token sequences share: the statute of a memorization count.

`stack memorization` counts an example as recited when the continuation a model generated shares
a run of at least min_verbatim_tokens consecutive tokens, in order, with the true continuation.
The stack finds that run by dynamic programming (stack.eval.memorization); a recurrence that
reads the wrong cell of the previous row makes every continuation of both models a run of its
whole length, 8 of 8 examples recited, and every gate would pass if nothing kept the
continuations to count again. GATE-FT-003's check runs holds every stated run to the one found
here, and the checker finds it again from the continuations memorization.json keeps.

This is the rule written the plain way, sharing nothing with the stack's: a common run of L
tokens holds one of every shorter length, so the longest is the first length L at which no
L-token window of one sequence is also a window of the other, less one.
"""

from __future__ import annotations

from collections.abc import Sequence


def windows(tokens: Sequence[int], length: int) -> set[tuple[int, ...]]:
    """Every run of `length` consecutive tokens of `tokens`."""
    return {tuple(tokens[start : start + length]) for start in range(len(tokens) - length + 1)}


def longest_common_run(generated: Sequence[int], true: Sequence[int]) -> int:
    """The length of the longest run of consecutive tokens found, in order, in both sequences."""
    longest = 0
    for length in range(1, min(len(generated), len(true)) + 1):
        if not windows(generated, length) & windows(true, length):
            break
        longest = length
    return longest
