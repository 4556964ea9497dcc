"""Which training examples `stack memorization` measures: the rule its draw follows and GATE-FT-003's
check drawn holds the examples measured to (docs/finetuning.md).

Of a pool of examples (a DATA_DIR's train documents, or a JSONL file's non-blank lines, in order),
those with at least `length` tokens (a prefix and its continuation) are eligible; `n` of them (all,
when fewer) are drawn without replacement by a generator seeded with the seed the record states,
and measured in pool order. The stack draws with `drawn_indices`; the gate draws the ranks again
(`drawn_ranks`) from the seed its record states and the number of eligible examples, and holds
them to the ranks among the eligible of the examples measured, so a seed that slips between the
command line and the draw is seen.

What an example of a JSONL pool is, as text, is this module's too (`pool_records`, `example_text`):
a {"text"} record its text, a {"prompt", "completion"} record the prompt then the completion, a chat
record {"messages"} its messages as the chat template writes them (the caller's rendering, the one
GATE-SFT-001 reads packed chat examples back against). GATE-FT-003's check tokens holds the text of
the ids each example was measured on (its prefix and true continuation) to the start of that text:
an example encoded without its prompt is cut from its completion alone, which every other gate
lets pass.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

# A chat record as text: (record, where) → its messages as the chat template writes them.
ChatText = Callable[[dict[str, Any], str], str]
# What a byte cut inside a character decodes to (U+FFFD): the end of a cut example's text.
REPLACEMENT = "\ufffd"


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


def pool_records(data: bytes) -> list[Any]:
    """A JSONL pool's records in pool order: every line that is not blank (split at LF, a leading
    byte-order mark and each line's CR dropped), parsed as JSON; None for a line that is not JSON."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    records: list[Any] = []
    for line in (line.removesuffix("\r") for line in text.split("\n")):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append(None)
    return records


def example_text(record: Any, where: str, chat: ChatText) -> str | None:
    """One pool record as text (module docstring): None for a record of none of the three shapes."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("text"), str):
        return record["text"]
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return record["prompt"] + record["completion"]
    return chat(record, where) if "messages" in record else None


def starts_text(decoded: str, text: str | None) -> bool:
    """Whether `decoded`, the text of an example's first ids, is where `text` starts: a character
    the cut split (decoded as U+FFFD at the end) is left out."""
    return text is not None and text.startswith(decoded.rstrip(REPLACEMENT))
