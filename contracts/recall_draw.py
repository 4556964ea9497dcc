"""Which training examples `stack memorization` measures: the rule its draw follows and GATE-FT-003's
check drawn holds the examples measured to (docs/finetuning.md).

Of a pool of examples (a DATA_DIR's train documents, or a JSONL file's non-blank lines, in order),
those with at least `length` tokens (a prefix and its continuation) are eligible; `n` of them (all,
when fewer) are drawn without replacement by a generator seeded with the seed the record states,
and measured in pool order. The stack draws with `drawn_indices`, and the gate draws again from the
seed its record states and the pool's lengths as read, so a seed that slips between the command
line and the draw is seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def drawn_indices(lengths: Sequence[int], n: int, length: int, seed: int) -> list[int]:
    """Indices into the pool of `lengths` (tokens per example) of the examples drawn, in pool order:
    up to `n` of those of at least `length` tokens, by random.Random(seed).sample."""
    eligible = [i for i, size in enumerate(lengths) if size >= length]
    return sorted(random.Random(seed).sample(eligible, min(n, len(eligible))))
