"""Attention by path: `naive` (the fp32 reference), `sdpa` (torch), `triton` (stack.kernels).

Every path takes q (B, H, N_q, D) and k, v (B, H_kv, N_kv, D) with H a multiple of H_kv (query
head h reads key/value head h // (H // H_kv)), and every path gets its scale from
`softmax_scale`, the one place 1/sqrt(D) is computed; no caller scales q or k itself.

Causal masking is aligned bottom-right, query i seeing keys j <= i + (N_kv - N_q): plain causal
masking when N_q == N_kv (training, prefill), and "see the whole cache" for a one-token decode
step. A query row that sees no key (only when N_q > N_kv) gives zeros on naive and triton.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from contracts.errors import BadInput

PATHS = ("naive", "sdpa", "triton")


def softmax_scale(head_dim: int) -> float:
    """1/sqrt(head_dim): the attention scale, computed here and nowhere else."""
    return 1.0 / math.sqrt(head_dim)


def causal_mask(n_q: int, n_kv: int, device: torch.device) -> torch.Tensor:
    """(n_q, n_kv) bool, True where query i may see key j, aligned bottom-right."""
    rows = torch.arange(n_q, device=device)[:, None]
    cols = torch.arange(n_kv, device=device)[None, :]
    return cols <= rows + (n_kv - n_q)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v written out in fp32 (fp64 for fp64 inputs): the reference."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    batch, heads, n_q, dim = q.shape
    heads_kv, n_kv = k.shape[1], k.shape[2]
    # Group the query heads by the key/value head they read; broadcasting does the sharing.
    q_grouped = q.to(dtype).reshape(batch, heads_kv, heads // heads_kv, n_q, dim)
    scores = q_grouped @ k.to(dtype).unsqueeze(2).transpose(-1, -2) * scale
    if causal:
        visible = causal_mask(n_q, n_kv, q.device)
        sees_any = visible.any(-1, keepdim=True)
        # Rows that see nothing get finite dummy scores, then zero weights: no NaN forward or back.
        scores = scores.masked_fill(~visible, float("-inf")).masked_fill(~sees_any, 0.0)
        probs = torch.softmax(scores, dim=-1).masked_fill(~sees_any, 0.0)
    else:
        probs = torch.softmax(scores, dim=-1)
    out = probs @ v.to(dtype).unsqueeze(2)
    return out.reshape(batch, heads, n_q, dim).to(q.dtype)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float
) -> torch.Tensor:
    """torch's scaled_dot_product_attention with native GQA; an explicit mask only when N_q != N_kv."""
    n_q, n_kv = q.shape[2], k.shape[2]
    if not causal or n_q == n_kv:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    # is_causal aligns top-left; a cache step needs bottom-right, so spell the mask out.
    mask = causal_mask(n_q, n_kv, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float
) -> torch.Tensor:
    """The Triton flash-attention kernel (imported on first use: triton is an optional dependency)."""
    from stack.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal=causal, scale=scale)


_IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": naive_attention,
    "sdpa": sdpa_attention,
    "triton": triton_attention,
}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, path: str) -> torch.Tensor:
    """Attention of q over k, v by the named path, scaled once by softmax_scale(head_dim)."""
    try:
        implementation = _IMPLEMENTATIONS[path]
    except KeyError:
        raise BadInput(f"unknown attention path {path!r}; use one of: {', '.join(PATHS)}") from None
    return implementation(q, k, v, causal=causal, scale=softmax_scale(q.shape[-1]))
