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
the completions are text, so a special token's string in one stays text. A pair whose longer
row does not fit L is left out (and counted, stack.data.sft_prepare), never cut: a cut
completion changes what is preferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    prompt: list[int], completion: list[int], width: int, eot: int
) -> tuple[list[int], list[int], list[bool]]:
    """One sequence's ids, mask and padding positions, right-padded with end-of-text to `width`."""
    ids = prompt + completion
    pad = width - len(ids)
    return (
        ids + [eot] * pad,
        [0] * len(prompt) + [1] * len(completion) + [0] * pad,
        [False] * len(ids) + [True] * pad,
    )


@dataclass(frozen=True)
class PairIds:
    """A pair's token ids: the rendered prompt, and each completion with its end-of-text."""

    prompt: list[int]
    completions: tuple[list[int], list[int]]

    @property
    def length(self) -> int:
        """The tokens of its longer sequence: what a row (--pack-len) must hold."""
        return len(self.prompt) + max(len(c) for c in self.completions)


def pair_ids(tokenizer: Tokenizer, turns: list[tuple[str, str]]) -> PairIds:
    """The ids of one pair's prompt (chat-format text: special tokens become their ids) and of its
    completions (text)."""
    (_, prompt), (_, chosen), (_, rejected) = turns
    eot = tokenizer.eot_id
    completions = ([*tokenizer.encode(chosen), eot], [*tokenizer.encode(rejected), eot])
    return PairIds(encode_turn(tokenizer, [(prompt, True)]), completions)


def render_pair(pair: PairIds, width: int, eot: int) -> Rendered:
    """The pair's 2·`width` ids and mask: its chosen row, then its rejected row (module docstring);
    the caller has left out a pair longer than `width` or with an empty prompt."""
    assert pair.prompt and pair.length <= width, "a pair that does not fit its rows is dropped, never cut"
    rows = [_row(pair.prompt, completion, width, eot) for completion in pair.completions]
    ids = np.asarray(rows[0][0] + rows[1][0], dtype=np.int64)
    mask = np.asarray(rows[0][1] + rows[1][1], dtype=np.uint8)
    padding = np.asarray(rows[0][2] + rows[1][2], dtype=bool)
    return Rendered(ids=ids, mask=mask, assistant_turns=2, markers_missing=0, padding=padding)
