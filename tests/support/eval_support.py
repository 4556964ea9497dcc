"""What the evaluation tests share."""

from __future__ import annotations

import torch

from stack.eval.bpb import text_windows


def stride_one_past(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The planted bug: full windows of seq_len + 1 tokens taken with stride seq_len + 1, so
    the first token of every window after the first is never a target."""
    full, rest = text_windows(tokens, seq_len)
    n_full = len(full)
    spaced = tokens[: n_full * seq_len + 1].unfold(0, seq_len + 1, seq_len + 1).transpose(1, 2)
    return spaced, rest
