"""KL divergence between two runs' next-token distributions, by torch's `kl_div`.

It lives in the contracts, apart from the code that reports a divergence (stack.trace.ablation),
because a KL computed by the code under test shares its bugs: an ablation's KL with its two sides
swapped is still printed and stored as KL(intact ‖ ablated), and a lens's KL(layer ‖ final) as
KL(final ‖ layer), unless something holds each to its direction. GATE-TRACE-003's check `ablation` and
GATE-LENS-006 hold the reported KLs to these. The ablation's other numbers are formulas over the
same two forwards, and their rule lives here too: a per-layer output change divided by the ablated
norm (18.5 where it is 1.0) or an argmax taken over the positions ("243 of 13 positions") is
reported as it stands unless something recomputes it. So is a lens reading's entropy averaged
over the vocabulary instead of summed (0.0214 nats for 5.49): GATE-LENS-006 holds it to `entropy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kl_per_position(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) in nats at each position, from log-probabilities whose last dimension is the
    vocabulary: `kl_div` takes log q as its input and log p as its target."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)


def mean_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(p ‖ q) in nats per position, from logits, averaged over every position, in float64."""
    log_p = torch.log_softmax(p_logits.double(), dim=-1)
    log_q = torch.log_softmax(q_logits.double(), dim=-1)
    return float(kl_per_position(log_p, log_q).mean())


def mean_kl_per_layer(final: torch.Tensor, layers: Sequence[torch.Tensor]) -> list[float]:
    """Per layer, KL(final ‖ layer) averaged over every position, from log-probabilities: what a
    lens's held-out means and its training objective are recomputed as (GATE-LENS-006), by this
    module's KL and mean rather than the lens's own."""
    return [float(kl_per_position(final, reading).mean()) for reading in layers]


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """The entropy −Σ p log p in nats at each position, from log-probabilities whose last dimension
    is the vocabulary, summed over it in float64 (a term with p = 0 adds 0)."""
    log_p = log_p.double()
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=-1)


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """‖after − before‖ / ‖before‖ over every element, in float64: how far a tensor moved, measured
    against its size before the change."""
    x, y = before.double(), after.double()
    return float(torch.linalg.vector_norm(y - x) / torch.linalg.vector_norm(x))


def argmax_changes(p_logits: torch.Tensor, q_logits: torch.Tensor) -> int:
    """The positions whose most likely next token (the argmax over the last dimension, the
    vocabulary) differs between the two logits."""
    return int((p_logits.argmax(dim=-1) != q_logits.argmax(dim=-1)).sum())
