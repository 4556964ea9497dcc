"""Preference pairs in a batch: the rows of chosen and rejected sequences, and the mask DPO scores by.

A JSONL line's pair is read and tokenized into a DATA_DIR's rows by stack.data.prefs_rows, prompt
and completion apart, so the boundary between what is scored and what is not is a token index,
never a guess made after the fact.

A `PairBatch` is the rows of a batch of pairs with each row's bounds; its mask is built from
those bounds by `completion_mask` alone, which is what GATE-DPO-005 checks it against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
