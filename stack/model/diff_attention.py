"""Differential attention (Diff Transformer, Ye et al. 2024): two softmax maps per head, subtracted.

Each head computes two maps over the same values,

    A₁ = softmax(Q₁K₁ᵀ/√d + M),  A₂ = softmax(Q₂K₂ᵀ/√d + M),
    head = (1 − λ_init) · RMSNorm((A₁ − λ A₂) V),
    λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init,  λ_init = 0.8 − 0.6 · exp(−0.3 · depth),

with depth the block's index counted from 0 (the paper's code). The first branch is the ordinary
attention's `q` and `k`; the second has its own projections `q2` and `k2`, of the same shapes,
so grouped-query attention, RoPE and the KV cache treat both branches like ordinary keys. Each
branch runs through `stack.model.attention` on its own (A₁V − λ A₂V = (A₁ − λA₂)V), which is
why every path that can mask (naive, sdpa) computes it; the Triton kernel path is refused by the
configuration. The norm (`head_norm`, one RMSNorm over head_dim shared by the heads) and λ's four
vectors are ordinary parameters, so they are saved, loaded and shown by `stack inspect`.

Unlike the paper, which halves the head count to keep the parameter count, the heads keep
head_dim and n_heads: the option adds q2 and k2 rather than reshaping the model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stack.model.attention import attention
from stack.model.config import ModelConfig
from stack.model.kv_cache import LayerCache
from stack.model.layers import Attention, RMSNorm, apply_rope
from stack.model.projection import project


def lambda_init(depth: int) -> float:
    """The paper's λ_init of the block at `depth` (0-based): 0.8 − 0.6 · exp(−0.3 · depth)."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DiffAttention(Attention):
    """Causal grouped-query differential attention; `q`, `k`, `v`, `o` as in Attention, plus `q2`, `k2`."""

    def __init__(self, config: ModelConfig, depth: int) -> None:
        super().__init__(config)
        bias = config.qkv_bias
        self.q2 = nn.Linear(config.d_model, self.n_heads * self.head_dim, bias=bias)
        self.k2 = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.lambda_q1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.zeros(self.head_dim))
        self.head_norm = RMSNorm(self.head_dim, config.norm_eps)
        # A function of the block's place, not a parameter: recomputed, never saved.
        self.lambda_init = lambda_init(depth)

    def lambda_full(self) -> torch.Tensor:
        """λ, a scalar computed in at least fp32 from the four λ vectors and λ_init."""
        dtype = torch.promote_types(self.lambda_q1.dtype, torch.float32)
        first = torch.exp((self.lambda_q1.to(dtype) * self.lambda_k1.to(dtype)).sum())
        second = torch.exp((self.lambda_q2.to(dtype) * self.lambda_k2.to(dtype)).sum())
        return first - second + self.lambda_init

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
        q1, q2, k1, k2, v = project(x, (self.q, self.q2, self.k, self.k2, self.v))
        q1 = apply_rope(self.heads(q1, self.n_heads), cos, sin)
        q2 = apply_rope(self.heads(q2, self.n_heads), cos, sin)
        k1 = apply_rope(self.heads(k1, self.n_kv_heads), cos, sin)
        k2 = apply_rope(self.heads(k2, self.n_kv_heads), cos, sin)
        v = self.heads(v, self.n_kv_heads)
        if cache is not None:  # the cache's keys hold both branches, side by side on the head axis
            keys, v = cache.extend(torch.cat((k1, k2), dim=1), v, start)
            k1, k2 = keys.chunk(2, dim=1)
        masks = {"docs": docs, "key_mask": key_mask}
        a1 = attention(q1, k1, v, causal=True, path=self.path, **masks)
        a2 = attention(q2, k2, v, causal=True, path=self.path, **masks)
        y = a1 - self.lambda_full().to(a1.dtype) * a2
        return self.merge_heads(self.head_norm(y) * (1.0 - self.lambda_init))
