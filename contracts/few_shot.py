"""Which few-shot examples an evaluation-matrix item is shown: the rule the matrix draws by and
GATE-FT-002's check draws holds each draw to (docs/finetuning.md).

An item's examples come from the training pool less the item itself (its id, or its content under
another id), `shots` of them drawn without replacement by a generator seeded with the matrix's seed
and the item's id: each item its own draw, the same on every run. A generator seeded with the seed
alone hands every item the same examples; a pool that keeps the item shows the model its answer.
The stack's matrix (stack.eval.matrix) draws with `seeded_sample`, and the gate and the checker draw
again from the seed, the item and the pool the record keeps (`expected_draw`), so neither the seed
nor the pool can slip between the draw and its check.

An item's examples are shown whole only when its few-shot context fits the model: the matrix cuts a
context longer than the room before the completion (contracts.truncation), and an example cut is an
example not shown. `shown` counts such items, what GATE-FT-001 compares the adapter against.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

Example = TypeVar("Example")


def seeded_sample(seed: int, item_id: str, eligible: Sequence[Example], shots: int) -> list[Example]:
    """`shots` of `eligible`, in draw order, by a generator seeded with "<seed>:<item id>"."""
    return random.Random(f"{seed}:{item_id}").sample(list(eligible), shots)


def expected_draw(
    seed: int, item: str, item_sha256: Any, pool: Sequence[Mapping[str, Any]], shots: int
) -> list[str]:
    """The ids of the examples item `item` (of content digest `item_sha256`) is shown, from `pool`
    ({id, sha256} in the pool's order): those eligible (not the item by id or by digest), sampled."""
    eligible = [str(p.get("id")) for p in pool if p.get("id") != item and p.get("sha256") != item_sha256]
    return seeded_sample(seed, item, eligible, shots) if len(eligible) >= shots else []


def shown(dropped: Sequence[int]) -> dict[str, int]:
    """GATE-FT-001's check shown, from the context tokens each item of the few-shot row had cut
    (its per-item `dropped`, in item order): how many items it scored, on how many the cut took
    tokens (some of the examples, or all, were not shown), and how many tokens in all."""
    return {
        "few_shot_items": len(dropped),
        "few_shot_cut_items": sum(1 for tokens in dropped if tokens > 0),
        "few_shot_cut_tokens": sum(dropped),
    }
