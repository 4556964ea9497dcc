"""Preference pairs as labelled rows (`stack prepare --format prefs`): the layout DPO reads.

A pair becomes ONE example of 2·L tokens, L the row length (`--pack-len`): its chosen
sequence (prompt, chosen completion, end-of-text) right-padded with end-of-text to L, then its
rejected sequence padded the same way. The mask (the label file's supervised bit) marks the
completion tokens, end-of-text included, and nothing else: a row's prompt ends at its first
supervised token and the row itself at its last, which is how the DPO objective rebuilds each
row's bounds (stack.train.dpo_objective) and GATE-DPO-005 checks the scored mask against them.
Packed with windows of 2·L, every window of the DATA_DIR is exactly one pair, so the training
reader's shuffled windows are shuffled pairs, and its resume is the reader's own.

The text of a pair is rendered as `stack dpo` always rendered it (stack.tune.pairs: plain or
chat form, the chat template's assistant prefix ending the prompt). The prompt is chat-format
text, so the tokenizer's special tokens written in it become their ids, as a Hugging Face
tokenizer reads a prompt rendered by its chat template (stack.data.sft_template.encode_turn);
the completions are text, so a special token's string in one stays text. A row longer than L
is refused, never cut: a cut completion changes what is preferred.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contracts.errors import BadInput
from stack.data.sft_template import ChatTemplate, Rendered, encode_turn
from stack.data.tokenizer import Tokenizer

PREFS_FORMAT = "prefs"
# The roles a pair's turns are hashed and filtered under (the prompt is the user's turn).
PAIR_ROLES = ("user", "chosen", "rejected")


def pair_turns(record: Any, where: str, template: ChatTemplate) -> list[tuple[str, str]]:
    """(role, text) of one JSONL pair: the rendered prompt, the chosen and the rejected completion."""
    from stack.tune.pairs import parse_pair

    pair = parse_pair(record, where, template)
    return list(zip(PAIR_ROLES, (pair.prompt, pair.chosen, pair.rejected), strict=True))


def _row(
    prompt: list[int], completion: list[int], width: int, eot: int, where: str
) -> tuple[list[int], list[int], list[bool]]:
    """One sequence's ids, mask and padding positions, right-padded with end-of-text to `width`."""
    ids = prompt + completion
    if len(ids) > width:
        raise BadInput(
            f"{where}: a sequence of {len(ids)} tokens does not fit --pack-len {width}; raise --pack-len "
            "(at most the model's ctx + 1) or shorten the pair"
        )
    pad = width - len(ids)
    return (
        ids + [eot] * pad,
        [0] * len(prompt) + [1] * len(completion) + [0] * pad,
        [False] * len(ids) + [True] * pad,
    )


def render_pair(tokenizer: Tokenizer, turns: list[tuple[str, str]], width: int, where: str) -> Rendered:
    """The pair's 2·`width` ids and mask: its chosen row, then its rejected row (module docstring)."""
    (_, prompt), (_, chosen), (_, rejected) = turns
    eot = tokenizer.eot_id
    prompt_ids = encode_turn(tokenizer, [(prompt, True)])
    if not prompt_ids:
        raise BadInput(f"{where}: the prompt has no tokens; a completion must follow a prompt")
    rows = [
        _row(prompt_ids, [*tokenizer.encode(text), eot], width, eot, where) for text in (chosen, rejected)
    ]
    ids = np.asarray(rows[0][0] + rows[1][0], dtype=np.int64)
    mask = np.asarray(rows[0][1] + rows[1][1], dtype=np.uint8)
    padding = np.asarray(rows[0][2] + rows[1][2], dtype=bool)
    return Rendered(ids=ids, mask=mask, assistant_turns=2, markers_missing=0, padding=padding)
