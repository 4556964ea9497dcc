"""The architecture a dense `ModelConfig` names, written out once in float64: GATE-MODEL-003's yardstick.

`reference_logits` reads a model's weights and nothing else of it: no module's forward, no helper
of stack/model (the RoPE tables, the attention paths, the norms and the projections are spelled
out here again), so a bug in any of them (RoPE left out or turned the wrong way, a residual
dropped, a norm without its gain, SwiGLU without its SiLU, a scaled embedding) makes the model's
logits differ from these. The formulas are Llama's, which the HF import and export already hold
the model to (GATE-EXPORT-001): pre-norm blocks x + attn(rms(x)), x + ffn(rms(x)); RoPE on halves
with angles p · θ^(-2i/head_dim); query head h reads key/value head h // (n_heads / n_kv_heads);
softmax(q kᵀ / sqrt(head_dim)) under a causal mask; down(silu(gate) · up); a final RMSNorm and
the head (the embedding matrix when tied).

Options that change a block's function (experts, differential attention, depth routing) are not
written out here: their own gates compare them with their papers (spec/gates/arch.yaml), and
`spelled_out` says whether a config is one this module can judge.
"""

from __future__ import annotations

import math

import torch

from stack.model.config import ModelConfig

# The options whose blocks this reference does not write out, by the config field that turns each on.
NOT_SPELLED_OUT = ("moe", "diff_attn", "mod")


def spelled_out(config: ModelConfig) -> bool:
    """Whether every block of a model of `config` is the dense block written out here."""
    return not any(getattr(config, option) for option in NOT_SPELLED_OUT)


def _rms(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain.double()


def _linear(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    y = x @ linear.weight.double().T
    return y if linear.bias is None else y + linear.bias.double()


def _rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x (B, H, T, D) with the halves (x1, x2) of each head turned by p · θ^(-2i/D) at position p."""
    length, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    freq = torch.tensor([theta ** (-2.0 * i / dim) for i in range(half)], dtype=torch.float64)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freq[None, :]
    cos, sin = angle.cos().to(x.device), angle.sin().to(x.device)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _attention(block: torch.nn.Module, x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    attn, (batch, length, _) = block.attn, x.shape
    heads, heads_kv, dim = config.n_heads, config.n_kv_heads, config.head_dim

    def split(y: torch.Tensor, n: int) -> torch.Tensor:
        return y.reshape(batch, length, n, dim).permute(0, 2, 1, 3)

    q = _rotate(split(_linear(x, attn.q), heads), config.rope_theta)
    k = _rotate(split(_linear(x, attn.k), heads_kv), config.rope_theta)
    v = split(_linear(x, attn.v), heads_kv)
    group = heads // heads_kv
    out = torch.empty(batch, heads, length, dim, dtype=torch.float64, device=x.device)
    future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
    for h in range(heads):
        scores = q[:, h] @ k[:, h // group].transpose(-1, -2) / math.sqrt(dim)
        out[:, h] = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1) @ v[:, h // group]
    return out.permute(0, 2, 1, 3).reshape(batch, length, heads * dim) @ attn.o.weight.double().T


def _feed_forward(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    ffn = block.ffn
    gate, up = _linear(x, ffn.gate), _linear(x, ffn.up)
    return _linear(gate * torch.sigmoid(gate) * up, ffn.down)


@torch.no_grad()
def reference_logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The logits (B, T, vocab) in float64 that `model`'s weights give `tokens` (B, T) under the
    architecture its config names, computed without running any of its modules."""
    config: ModelConfig = model.config
    if not spelled_out(config):
        raise ValueError(f"the reference writes out dense blocks only; {NOT_SPELLED_OUT} must be off")
    x = model.embed.weight.double()[tokens]
    for block in model.layers:
        x = x + _attention(block, _rms(x, block.attn_norm.weight, config.norm_eps), config)
        x = x + _feed_forward(block, _rms(x, block.ffn_norm.weight, config.norm_eps))
    x = _rms(x, model.final_norm.weight, config.norm_eps)
    head = model.embed.weight if config.tie_embeddings else model.lm_head.weight
    return x @ head.double().T
