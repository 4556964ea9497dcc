"""The smallest correct GPT of a dense `ModelConfig`: what a person would write by hand.

It is the yardstick of benchmarks/model_speed.py: the stack's `GPT` carries trace
sites, options, LoRA and checks, and must cost nothing against this. Never used by `stack`.
Written the way nanoGPT and Meta's Llama reference are: one fused q|k|v projection, one fused
gate|up projection, RoPE from a table of angles computed once and applied in fp32, torch's
rms_norm, SDPA, a tied head. `load_stack` copies a stack model's weights in, so the test can
show both compute the same function before anyone compares their speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stack.model.config import ModelConfig
from stack.model.gpt import GPT


class ReferenceBlock(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.c, kv = c, c.n_kv_heads * c.head_width
        self.norm1, self.norm2 = nn.RMSNorm(c.d_model, c.norm_eps), nn.RMSNorm(c.d_model, c.norm_eps)
        self.qkv = nn.Linear(c.d_model, c.d_model + 2 * kv, bias=False)
        self.o = nn.Linear(c.d_model, c.d_model, bias=False)
        self.gate_up = nn.Linear(c.d_model, 2 * c.ffn_hidden, bias=False)
        self.down = nn.Linear(c.ffn_hidden, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        c, (b, t, _) = self.c, x.shape
        q, k, v = self.qkv(self.norm1(x)).split([c.d_model, *[c.n_kv_heads * c.head_width] * 2], dim=-1)
        q, k = (rotate(z.view(b, t, -1, c.head_width), rope).transpose(1, 2) for z in (q, k))
        v = v.view(b, t, -1, c.head_width).transpose(1, 2)
        gqa = c.n_heads != c.n_kv_heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, c.d_model))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


def rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D) rotated by the angles `rope` (T, D/2, 2: cos, sin), in fp32, halves as pairs."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = rope[: x.shape[1], None, :, 0], rope[: x.shape[1], None, :, 1]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class ReferenceGPT(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        options = c.moe or c.diff_attn or c.mod or c.qkv_bias or c.qk_norm or c.head_dim is not None
        if options or not c.tie_embeddings or c.rope_type != "default":
            raise ValueError(
                "the reference GPT is the dense, bias-free, tied, plain-RoPE model only, "
                "its heads d_model / n_heads wide"
            )
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.blocks = nn.ModuleList(ReferenceBlock(c) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.d_model, c.norm_eps)
        half = c.head_width // 2
        inv_freq = c.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
        angles = torch.outer(torch.arange(c.ctx, dtype=torch.float32), inv_freq)
        self.register_buffer("rope", torch.stack((angles.cos(), angles.sin()), dim=-1), persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.rope)
        logits = F.linear(self.norm(x), self.embed.weight)
        return logits, F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def load_stack(self, model: GPT) -> ReferenceGPT:
        """Copy a stack GPT's weights in (fusing its projections as this model holds them)."""
        self.embed.weight.copy_(model.embed.weight)
        self.norm.weight.copy_(model.final_norm.weight)
        for mine, theirs in zip(self.blocks, model.layers, strict=True):
            a, f = theirs.attn, theirs.ffn
            mine.norm1.weight.copy_(theirs.attn_norm.weight)
            mine.norm2.weight.copy_(theirs.ffn_norm.weight)
            mine.qkv.weight.copy_(torch.cat((a.q.weight, a.k.weight, a.v.weight)))
            mine.o.weight.copy_(a.o.weight)
            mine.gate_up.weight.copy_(torch.cat((f.gate.weight, f.up.weight)))
            mine.down.weight.copy_(f.down.weight)
        return self
