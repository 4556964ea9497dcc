"""Preference pairs: a JSONL line's pair, and a batch of pair rows with the mask DPO scores by.

A line is `{"prompt": str, "chosen": str, "rejected": str}`, or the chat form, where `prompt` is
a list of `{"role", "content"}` messages and `chosen`/`rejected` each one assistant message (a
list of one, or the message itself). Chat messages are rendered with the SFT chat template
(stack/data/templates/, `--template` of `stack prepare --format prefs`), the assistant's prefix
ending the prompt, so the completion is only what the assistant said. stack.data.prefs_rows
tokenizes prompt and completion apart into a DATA_DIR's rows, so the boundary between what is
scored and what is not is a token index, never a guess made after the fact.

A `PairBatch` is the rows of a batch of pairs with each row's bounds; its mask is built from
those bounds by `completion_mask` alone, which is what GATE-DPO-005 checks it against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contracts.errors import BadInput
from stack.data.sft_template import ChatTemplate

ASSISTANT = "assistant"


@dataclass(frozen=True)
class Pair:
    """One preference: a prompt and two completions, the first preferred."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PairBatch:
    """Chosen sequences (rows 0..B-1) then rejected ones (B..2B-1), padded on the right.

    `mask[b, t]` is True where tokens[b, t] is a completion token to score; `prompt_lens` and
    `lengths` say where each row's prompt ends and its sequence ends, independently of the mask,
    which is how GATE-DPO-005 checks the mask.
    """

    tokens: torch.Tensor  # (2B, T) int64
    mask: torch.Tensor  # (2B, T) bool
    prompt_lens: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def pairs(self) -> int:
        """B: how many preference pairs the batch holds."""
        return self.tokens.shape[0] // 2


def render_prompt(messages: list[dict[str, Any]], template: ChatTemplate) -> str:
    """Messages as the template writes them, then the assistant's prefix: what the completion follows."""
    roles = template.spec.roles
    for message in messages:
        if message["role"] not in roles or message["role"] == ASSISTANT:
            raise BadInput(
                f"a prompt message has role {message['role']!r}; give "
                f"{', '.join(r for r in roles if r != ASSISTANT)} turns before the completion"
            )
    text = "".join(roles[m["role"]].prefix + m["content"] + roles[m["role"]].suffix for m in messages)
    return text + roles[ASSISTANT].prefix


def _message(value: Any, where: str) -> dict[str, Any]:
    """One message, checked: a dict with string role and content."""
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    if not isinstance(value.get("content"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    return value


def _completion(value: Any, where: str) -> str:
    """A completion: a string, an assistant message, or a list of exactly one."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    message = _message(value, where)
    if message["role"] != ASSISTANT:
        raise BadInput(f"{where}: a completion must be the assistant's message, not {message['role']!r}")
    return str(message["content"])


def parse_pair(record: Any, where: str, template: ChatTemplate) -> Pair:
    """A pair from one decoded JSONL line, in plain or chat form."""
    if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= record.keys():
        raise BadInput(f"{where}: a preference line needs 'prompt', 'chosen' and 'rejected'")
    prompt = record["prompt"]
    if isinstance(prompt, list):
        prompt = render_prompt([_message(m, where) for m in prompt], template)
    if not isinstance(prompt, str) or not prompt:
        raise BadInput(f"{where}: 'prompt' must be non-empty text or a list of chat messages")
    chosen, rejected = _completion(record["chosen"], where), _completion(record["rejected"], where)
    if chosen == rejected:
        raise BadInput(f"{where}: 'chosen' and 'rejected' are the same text; there is nothing to prefer")
    return Pair(prompt, chosen, rejected)


def completion_mask(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """True at the completion's positions [prompt_len, length) of a row `width` wide."""
    positions = torch.arange(width)
    return (positions >= prompt_len) & (positions < length)


def collate_width(batch: PairBatch, pad_id: int, width: int) -> PairBatch:
    """`batch` re-padded to `width` columns, its rows and their bounds unchanged."""
    tokens = torch.full((batch.tokens.shape[0], width), pad_id, dtype=torch.long)
    keep = min(width, batch.tokens.shape[1])
    tokens[:, :keep] = batch.tokens[:, :keep]
    mask = torch.stack(
        [completion_mask(p, n, width) for p, n in zip(batch.prompt_lens, batch.lengths, strict=True)]
    )
    return PairBatch(tokens, mask, batch.prompt_lens, batch.lengths)


def rows_batch(tokens: torch.Tensor, prompt_lens: tuple[int, ...], lengths: tuple[int, ...]) -> PairBatch:
    """Rows laid out already (a prepared DATA_DIR's pairs, stack.data.prefs_rows), cut to the
    longest row and masked by `completion_mask` from each row's bounds."""
    width = max(lengths)
    mask = torch.stack([completion_mask(p, n, width) for p, n in zip(prompt_lens, lengths, strict=True)])
    return PairBatch(tokens[:, :width], mask.to(tokens.device), prompt_lens, lengths)
