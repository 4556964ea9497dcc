"""The summed negative log-likelihood of scored targets, from the logits a forward handed its loss.

An evaluation matrix's row states its bits per byte from each completion's summed NLL
(stack.eval.completion); a mean where the sum belongs divides every row by the completion's
length, and a row computed from the code under test shares its bugs. GATE-FT-002's check nll holds
each item's stated NLL to the sum computed here, apart from the stack's loss: float64
log-softmax of the taped logits, read at each taped target, over every position scored.
"""

from __future__ import annotations

import torch


def summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """−Σ log p(target) in nats over every position whose target is not −1 (logits (…, T, vocab),
    targets (…, T)), in float64."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    scored = targets >= 0
    picked = log_p[scored].gather(-1, targets[scored].long()[:, None])
    return float(-picked.sum())
