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

Two things a run adds to that architecture are written out too. Packed windows (`docs`, the
document id of each token) confine attention to each document: query i sees key j only when
j <= i and both belong to the same document, positions counting on across the window. A LoRA
adapter on a projection adds s·B·A·x to W·x + b, s = alpha / r (alpha / √r under rsLoRA), with
s taken from the run's settings (`Adapters`), never from the adapter module.

Options that change a block's function (experts, differential attention, depth routing) are not
written out here: their own gates compare them with their papers (spec/gates/arch.yaml), and
`not_spelled_out` names those a config turns on (none: one this module can judge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from contracts.model_shape import options_on
from stack.model.config import ModelConfig


def not_spelled_out(config: ModelConfig) -> list[str]:
    """The options of a model of `config` whose blocks this reference does not write out
    (contracts.model_shape.OPTIONS, the integrity check's list too), in that order."""
    return options_on(config.model_dump())


@dataclass(frozen=True)
class Adapters:
    """The LoRA settings a run names (its [lora] section): each adapted projection computes
    W·x + b + s·B·A·x, with s = alpha / r, or alpha / √r under rsLoRA (Kalajdzievski, 2023)."""

    r: int
    alpha: float
    rslora: bool

    @property
    def scale(self) -> float:
        """s, from the settings alone."""
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r


def _rms(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain.double()


def _linear(x: torch.Tensor, linear: torch.nn.Module, adapters: Adapters | None) -> torch.Tensor:
    """W·x + b, and s·B·A·x when the projection carries an adapter (A and B not folded into W)."""
    y = x @ linear.weight.double().T
    if linear.bias is not None:
        y = y + linear.bias.double()
    a, b = getattr(linear, "lora_A", None), getattr(linear, "lora_B", None)
    if a is None or b is None or getattr(linear, "merged", False):
        return y
    if adapters is None:
        raise ValueError(
            "the model carries LoRA adapters: give the run's settings (Adapters) to write them out"
        )
    return y + adapters.scale * (x @ a.double().T @ b.double().T)


def _rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x (B, H, T, D) with the halves (x1, x2) of each head turned by p · θ^(-2i/D) at position p."""
    length, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    freq = torch.tensor([theta ** (-2.0 * i / dim) for i in range(half)], dtype=torch.float64)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freq[None, :]
    cos, sin = angle.cos().to(x.device), angle.sin().to(x.device)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _hidden(tokens: torch.Tensor, docs: torch.Tensor | None) -> torch.Tensor:
    """(B, T, T) bool, True where query i may not see key j: a later key, or another document's."""
    length = tokens.shape[1]
    hidden = (
        torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1).expand(len(tokens), -1, -1)
    )
    if docs is None:
        return hidden
    return hidden | (docs[:, :, None] != docs[:, None, :])


def _attention(
    block: torch.nn.Module,
    x: torch.Tensor,
    hidden: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
) -> torch.Tensor:
    attn, (batch, length, _) = block.attn, x.shape
    heads, heads_kv, dim = config.n_heads, config.n_kv_heads, config.head_dim

    def split(y: torch.Tensor, n: int) -> torch.Tensor:
        return y.reshape(batch, length, n, dim).permute(0, 2, 1, 3)

    q = _rotate(split(_linear(x, attn.q, adapters), heads), config.rope_theta)
    k = _rotate(split(_linear(x, attn.k, adapters), heads_kv), config.rope_theta)
    v = split(_linear(x, attn.v, adapters), heads_kv)
    group = heads // heads_kv
    out = torch.empty(batch, heads, length, dim, dtype=torch.float64, device=x.device)
    for h in range(heads):
        scores = q[:, h] @ k[:, h // group].transpose(-1, -2) / math.sqrt(dim)
        out[:, h] = torch.softmax(scores.masked_fill(hidden, -math.inf), dim=-1) @ v[:, h // group]
    return _linear(out.permute(0, 2, 1, 3).reshape(batch, length, heads * dim), attn.o, adapters)


def _feed_forward(block: torch.nn.Module, x: torch.Tensor, adapters: Adapters | None) -> torch.Tensor:
    ffn = block.ffn
    gate, up = _linear(x, ffn.gate, adapters), _linear(x, ffn.up, adapters)
    return _linear(gate * torch.sigmoid(gate) * up, ffn.down, adapters)


@torch.no_grad()
def reference_logits(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    docs: torch.Tensor | None = None,
    adapters: Adapters | None = None,
) -> torch.Tensor:
    """The logits (B, T, vocab) in float64 that `model`'s weights give `tokens` (B, T) under the
    architecture its config names, computed without running any of its modules: with `docs` (B, T)
    attention keeps to each token's document, and with `adapters` each LoRA adapter the model
    carries adds its term at the scale those settings name."""
    config: ModelConfig = model.config
    if skipped := not_spelled_out(config):
        raise ValueError(f"the reference writes out dense blocks only; {', '.join(skipped)} must be off")
    hidden = _hidden(tokens, docs)
    x = model.embed.weight.double()[tokens]
    for block in model.layers:
        x = x + _attention(block, _rms(x, block.attn_norm.weight, config.norm_eps), hidden, config, adapters)
        x = x + _feed_forward(block, _rms(x, block.ffn_norm.weight, config.norm_eps), adapters)
    x = _rms(x, model.final_norm.weight, config.norm_eps)
    if config.tie_embeddings:
        return x @ model.embed.weight.double().T
    return _linear(x, model.lm_head, adapters)
