"""Attention by path: `naive` (the fp32 reference), `sdpa` (torch), `triton` (stack.kernels).

Every path takes q (B, H, N_q, D) and k, v (B, H_kv, N_kv, D) with H a multiple of H_kv (query
head h reads key/value head h // (H // H_kv)), and every path gets its scale from
`softmax_scale`, the one place 1/sqrt(D) is computed; no caller scales q or k itself.

Causal masking is aligned bottom-right, query i seeing keys j <= i + (N_kv - N_q): plain causal
masking when N_q == N_kv (training, prefill), and "see the whole cache" for a one-token decode
step. A query row that sees no key (only when N_q > N_kv) gives zeros on naive and triton.

Packed windows (supervised fine-tuning) pass `docs`, the (B, N) document id of every token:
the mask is then block-diagonal causal, query i seeing key j only when j <= i and both belong
to the same document, so no example of a window attends to another (GATE-SFT-003). The naive
and sdpa paths build that mask; the Triton kernel has none and refuses `docs`.

Mixture-of-depths inference passes `key_mask`, (B, N_q, N_kv) bool, the keys each query may see
on top of the causal (or document) rule: the routed tokens and the query itself (see
stack.model.depth_router). Again naive and sdpa only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from contracts.errors import BadInput

PATHS = ("naive", "sdpa", "triton")
# The paths that take a document mask (`docs`) and a key mask; the Triton kernel refuses both.
DOCUMENT_PATHS = ("naive", "sdpa")


def softmax_scale(head_dim: int) -> float:
    """1/sqrt(head_dim): the attention scale, computed here and nowhere else."""
    return 1.0 / math.sqrt(head_dim)


def causal_mask(n_q: int, n_kv: int, device: torch.device) -> torch.Tensor:
    """(n_q, n_kv) bool, True where query i may see key j, aligned bottom-right."""
    rows = torch.arange(n_q, device=device)[:, None]
    cols = torch.arange(n_kv, device=device)[None, :]
    return cols <= rows + (n_kv - n_q)


def document_mask(docs: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, N) bool, True where query i may see key j: j <= i within the same document."""
    n = docs.shape[1]
    same = docs[:, :, None] == docs[:, None, :]
    return (same & causal_mask(n, n, docs.device)).unsqueeze(1)


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    docs: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v written out in fp32 (fp64 for fp64 inputs): the reference."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    batch, heads, n_q, dim = q.shape
    heads_kv, n_kv = k.shape[1], k.shape[2]
    # Group the query heads by the key/value head they read; broadcasting does the sharing.
    q_grouped = q.to(dtype).reshape(batch, heads_kv, heads // heads_kv, n_q, dim)
    scores = q_grouped @ k.to(dtype).unsqueeze(2).transpose(-1, -2) * scale
    if causal:
        # Document masks are (B, 1, N, N): one more axis for the query heads grouped under a kv head.
        visible = causal_mask(n_q, n_kv, q.device) if docs is None else document_mask(docs).unsqueeze(2)
        if key_mask is not None:
            visible = visible & key_mask[:, None, None]
        sees_any = visible.any(-1, keepdim=True)
        # Rows that see nothing get finite dummy scores, then zero weights: no NaN forward or back.
        scores = scores.masked_fill(~visible, float("-inf")).masked_fill(~sees_any, 0.0)
        probs = torch.softmax(scores, dim=-1).masked_fill(~sees_any, 0.0)
    else:
        probs = torch.softmax(scores, dim=-1)
    out = probs @ v.to(dtype).unsqueeze(2)
    return out.reshape(batch, heads, n_q, dim).to(q.dtype)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    docs: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """torch's scaled_dot_product_attention with native GQA; an explicit mask only when N_q != N_kv
    or when documents are packed or keys masked. GQA is asked for only when heads are shared:
    a backend that cannot share heads is then still eligible for plain multi-head attention."""
    n_q, n_kv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if causal and (docs is not None or key_mask is not None):
        mask = document_mask(docs) if docs is not None else causal_mask(n_q, n_kv, q.device)
        if key_mask is not None:
            mask = mask & key_mask[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    if not causal or n_q == n_kv:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    # is_causal aligns top-left; a cache step needs bottom-right, so spell the mask out.
    mask = causal_mask(n_q, n_kv, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    docs: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Triton flash-attention kernel (imported on first use: triton is an optional dependency)."""
    if key_mask is not None:
        raise BadInput(
            "the triton attention path has no key mask for mixture-of-depths inference; "
            "use --set model.attention=sdpa (or naive)"
        )
    if docs is not None:
        raise BadInput(
            "the triton attention path has no document mask for packed windows; "
            "use --set model.attention=sdpa (or naive)"
        )
    from stack.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal=causal, scale=scale)


_IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": naive_attention,
    "sdpa": sdpa_attention,
    "triton": triton_attention,
}


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    path: str,
    docs: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of q over k, v by the named path, scaled once by softmax_scale(head_dim);
    `docs` (B, N), when given, confines each token to its own document, and `key_mask`
    (B, N_q, N_kv) hides further keys (see the module docstring)."""
    try:
        implementation = _IMPLEMENTATIONS[path]
    except KeyError:
        raise BadInput(f"unknown attention path {path!r}; use one of: {', '.join(PATHS)}") from None
    # Masks are passed only when given: the paths' own signatures, unchanged for everything else.
    masks = {name: m for name, m in (("docs", docs), ("key_mask", key_mask)) if m is not None}
    return implementation(q, k, v, causal=causal, scale=softmax_scale(q.shape[-1]), **masks)
