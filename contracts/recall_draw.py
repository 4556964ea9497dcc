"""Which training examples `stack memorization` measures: the rule its draw follows and GATE-FT-003's
check drawn holds the examples measured to (docs/finetuning.md).

Of a pool of examples (a DATA_DIR's train documents, or a JSONL file's non-blank lines, in order),
those with at least `length` tokens (a prefix and its continuation) are eligible; `n` of them (all,
when fewer) are drawn without replacement by a generator seeded with the seed the record states,
and measured in pool order. The stack draws with `drawn_indices`; the gate draws the ranks again
(`drawn_ranks`) from the seed its record states and the number of eligible examples, and holds
them to the ranks among the eligible of the examples measured, so a seed that slips between the
command line and the draw is seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def eligible_indices(lengths: Sequence[int], length: int) -> list[int]:
    """Indices into the pool of the examples with at least `length` tokens, in pool order."""
    return [i for i, size in enumerate(lengths) if size >= length]


def drawn_ranks(eligible: int, n: int, seed: int) -> list[int]:
    """Which of `eligible` examples the draw takes, as their ranks among the eligible, in order: up to
    `n`, by random.Random(seed).sample, whose choice depends only on how many there are. So a
    record holds the draw in two numbers and the ranks, however large the pool."""
    return sorted(random.Random(seed).sample(range(eligible), min(n, eligible)))


def drawn_indices(lengths: Sequence[int], n: int, length: int, seed: int) -> list[int]:
    """Indices into the pool of `lengths` (tokens per example) of the examples drawn, in pool order:
    up to `n` of those of at least `length` tokens (`drawn_ranks` among `eligible_indices`)."""
    eligible = eligible_indices(lengths, length)
    return [eligible[rank] for rank in drawn_ranks(len(eligible), n, seed)]
