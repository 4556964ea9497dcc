"""The parts of a block: RMSNorm, RoPE, grouped-query attention, the feed-forward (feedforward.py, moe.py).

Module names are the trace sites: `attn_norm`, `attn.{q,k,v,o}` (and Qwen3's `attn.{q,k}_norm`),
`ffn_norm`, `ffn.{gate,up,down}` and `ffn.swiglu` (silu(gate) * up), so a forward hook on
`layers.3.ffn.swiglu` sees exactly what the code calls that product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stack.model.attention import attention
from stack.model.config import ModelConfig
from stack.model.feedforward import FeedForward, SwiGLU
from stack.model.kv_cache import LayerCache
from stack.model.moe import MoE
from stack.model.projection import project
from stack.model.rope_scaling import inverse_frequencies

__all__ = ["Attention", "Block", "FeedForward", "HeadNorm", "RMSNorm", "SwiGLU", "apply_rope", "rope_angles"]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, by torch's rms_norm: one fused kernel on CUDA (five elementwise passes
    over the activation as separate ops, measured in docs/gpu.md), with the mean square
    accumulated in fp32 whatever the activation's dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class HeadNorm(RMSNorm):
    """Each head of a projection's output RMS-normed over its width with one gain the heads share:
    Qwen3's q_norm and k_norm. It takes and returns the projection's (…, heads · head_dim) rows, so
    the `q_norm` and `k_norm` trace sites have the rows of `q` and `k` and are checked row by row as
    they are (stack.trace.site_identity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.weight.shape[0]
        return super().forward(x.unflatten(-1, (-1, width))).flatten(-2)


def rope_angles(
    config: ModelConfig, start: int, length: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation tables of positions start .. start+length-1, each (length, head_dim):
    cos as [cos, cos] and sin as [-sin, sin] over the two halves of a head, the form
    `apply_rope` applies in one multiply-add.

    Computed once per forward (not per block) in at least fp32 rather than kept as a buffer, so
    `model.to(bf16)` cannot round the angles and `model.double()` gets fp64 ones. The frequencies
    are the `rope_type`'s (stack/model/rope_scaling.py).
    """
    dtype = torch.promote_types(dtype, torch.float32)
    inv_freq = inverse_frequencies(config, device, dtype)
    positions = torch.arange(start, start + length, device=device, dtype=dtype)
    angles = torch.outer(positions, inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves (x1, x2) of each head of x (B, H, T, D) by the position's angles:
    (x1 cos - x2 sin, x2 cos + x1 sin), in the tables' dtype (at least fp32), rounded to x's.

    Written as x·cos + (x2, x1)·sin with the tables of `rope_angles`: four ops on the activation
    instead of eight, and bit for bit the same numbers (a - b is a + (-b), and addition commutes).
    """
    swapped = torch.cat(x.chunk(2, dim=-1)[::-1], dim=-1)
    return (x * cos + swapped * sin).to(x.dtype)


class Attention(nn.Module):
    """Causal grouped-query self-attention: n_heads query heads share n_kv_heads key/value heads.

    With `qkv_bias` the q, k and v projections add a bias, as Qwen2's do; the bias is part of what
    the `q`, `k` and `v` trace sites observe, because it is part of those modules' outputs. With
    `qk_norm` each head of q and k is RMS-normed before RoPE (`q_norm`, `k_norm`), as Qwen3's are.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_width
        bias = config.qkv_bias
        self.q = nn.Linear(config.d_model, self.n_heads * self.head_dim, bias=bias)
        self.k = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=False)
        self.q_norm = HeadNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = HeadNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.path = config.attention

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        docs: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = project(x, (self.q, self.k, self.v))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(self.heads(q, self.n_heads), cos, sin)
        k = apply_rope(self.heads(k, self.n_kv_heads), cos, sin)
        v = self.heads(v, self.n_kv_heads)
        if cache is not None:
            k, v = cache.extend(k, v, start)
        y = attention(q, k, v, causal=True, path=self.path, docs=docs, key_mask=key_mask)
        return self.merge_heads(y)

    def heads(self, projected: torch.Tensor, n_heads: int) -> torch.Tensor:
        """(B, T, n_heads · head_dim) → (B, n_heads, T, head_dim)."""
        batch, length, _ = projected.shape
        return projected.view(batch, length, n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, y: torch.Tensor) -> torch.Tensor:
        """o of the heads (B, H, T, head_dim) laid side by side again."""
        batch, _, length, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(attn_norm(x)), then + ffn(ffn_norm(x)).

    With `moe_experts` the feed-forward is a mixture of experts named `moe` rather than `ffn`,
    so that no trace site or tensor name of a dense model ever means something else. `attn`, when
    given, replaces the ordinary attention (gpt.build_block passes a DiffAttention with
    `diff_attn`), so this module need not import the options built on top of it.
    """

    def __init__(self, config: ModelConfig, attn: Attention | None = None) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = attn if attn is not None else Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        if config.moe:
            self.moe = MoE(config)
        else:
            self.ffn = FeedForward(config)

    @property
    def feed_forward(self) -> nn.Module:
        """The block's feed-forward, dense or mixture of experts."""
        return self.moe if hasattr(self, "moe") else self.ffn

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        docs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, start, docs)
        return x + self.feed_forward(self.ffn_norm(x))
