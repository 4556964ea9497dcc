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

The options that change a block are written out as their papers define them, from their weights:
experts (Mixtral: softmax of the router's logits, the top moe_top_k renormalised to sum to one,
Σ w_k · expert_k(x), plus the shared expert where the config has one); differential attention
(Diff Transformer: (1 − λ_init) · RMSNorm((A₁ − λ A₂) V) per head, λ = exp(λ_q1·λ_k1) −
exp(λ_q2·λ_k2) + λ_init, λ_init = 0.8 − 0.6 · exp(−0.3 · depth)); depth routing (Raposo et al.:
every mod_every-th block routes; a routed token leaves as x + w · (a + f), w = sigmoid(score),
attending to routed keys and itself only, every other token leaves as x; `training` routes each
sequence's top ⌊C·T⌋ scores, inference the tokens whose score exceeds the block's saved
`route_threshold`, a learned weight the reference reads like any other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stack.model.config import ModelConfig


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


def _heads_out(
    attn: torch.nn.Module,
    x: torch.Tensor,
    hidden: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
    names: tuple[str, str],
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(head_dim)) v per query head (B, H, T, D), q and k the projections `names`."""
    (batch, length, _), heads, heads_kv = x.shape, config.n_heads, config.n_kv_heads
    dim = config.head_dim

    def split(y: torch.Tensor, n: int) -> torch.Tensor:
        return y.reshape(batch, length, n, dim).permute(0, 2, 1, 3)

    q = _rotate(split(_linear(x, getattr(attn, names[0]), adapters), heads), config.rope_theta)
    k = _rotate(split(_linear(x, getattr(attn, names[1]), adapters), heads_kv), config.rope_theta)
    v = split(_linear(x, attn.v, adapters), heads_kv)
    group = heads // heads_kv
    out = torch.empty(batch, heads, length, dim, dtype=torch.float64, device=x.device)
    for h in range(heads):
        scores = q[:, h] @ k[:, h // group].transpose(-1, -2) / math.sqrt(dim)
        out[:, h] = torch.softmax(scores.masked_fill(hidden, -math.inf), dim=-1) @ v[:, h // group]
    return out


def _attention(
    block: torch.nn.Module,
    x: torch.Tensor,
    hidden: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
    depth: int,
) -> torch.Tensor:
    """The block's attention; under diff_attn the two maps' difference, normed per head."""
    attn = block.attn
    out = _heads_out(attn, x, hidden, config, adapters, ("q", "k"))
    if config.diff_attn:
        lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
        lam = (
            torch.exp((attn.lambda_q1.double() * attn.lambda_k1.double()).sum())
            - torch.exp((attn.lambda_q2.double() * attn.lambda_k2.double()).sum())
            + lambda_init
        )
        second = _heads_out(attn, x, hidden, config, adapters, ("q2", "k2"))
        out = _rms(out - lam * second, attn.head_norm.weight, config.norm_eps) * (1.0 - lambda_init)
    batch, heads, length, dim = out.shape
    return _linear(out.permute(0, 2, 1, 3).reshape(batch, length, heads * dim), attn.o, adapters)


def _swiglu(ffn: torch.nn.Module, x: torch.Tensor, adapters: Adapters | None) -> torch.Tensor:
    gate, up = _linear(x, ffn.gate, adapters), _linear(x, ffn.up, adapters)
    return _linear(gate * torch.sigmoid(gate) * up, ffn.down, adapters)


def _feed_forward(
    block: torch.nn.Module, x: torch.Tensor, config: ModelConfig, adapters: Adapters | None
) -> torch.Tensor:
    """The dense SwiGLU, or under moe_experts the renormalised top-k mixture of the experts."""
    if not config.moe:
        return _swiglu(block.ffn, x, adapters)
    moe = block.moe
    probs = torch.softmax(_linear(x, moe.router, adapters), dim=-1)
    top_p, top_i = probs.topk(config.moe_top_k, dim=-1)
    weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    out = sum(
        weights[..., e, None] * _swiglu(getattr(moe, f"expert{e}"), x, adapters)
        for e in range(config.moe_experts)
    )
    return out + _swiglu(moe.shared, x, adapters) if config.moe_shared_expert else out


def _routed(
    scores: torch.Tensor, block: torch.nn.Module, config: ModelConfig, training: bool
) -> torch.Tensor:
    """(B, T) bool, the tokens a depth-routed block computes: each sequence's top ⌊C·T⌋ `scores` in
    training, else those whose score exceeds the block's route_threshold."""
    if not training:
        return scores > block.route_threshold.double()
    k = math.floor(config.mod_capacity * scores.shape[1])
    return torch.zeros_like(scores, dtype=torch.bool).scatter(1, scores.topk(k, dim=-1).indices, True)


def _block(
    block: torch.nn.Module,
    x: torch.Tensor,
    hidden: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
    depth: int,
    training: bool,
) -> torch.Tensor:
    """x + a + f; a depth-routed block (every mod_every-th) x + sigmoid(score) · (a + f) at the
    routed tokens, attending to routed keys and itself only, and x elsewhere."""
    routes = config.mod_every > 0 and depth % config.mod_every == config.mod_every - 1
    scores = _linear(x, block.router, adapters).squeeze(-1) if routes else None
    routed = _routed(scores, block, config, training) if scores is not None else None
    if routed is not None:
        own = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        hidden = hidden | ~(routed[:, None, :] | own)
    a = _attention(block, _rms(x, block.attn_norm.weight, config.norm_eps), hidden, config, adapters, depth)
    f = _feed_forward(block, _rms(x + a, block.ffn_norm.weight, config.norm_eps), config, adapters)
    if routed is None:
        return x + a + f
    return torch.where(routed[..., None], x + torch.sigmoid(scores)[..., None] * (a + f), x)


@torch.no_grad()
def reference_logits(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    docs: torch.Tensor | None = None,
    adapters: Adapters | None = None,
    training: bool = False,
) -> torch.Tensor:
    """The logits (B, T, vocab) in float64 that `model`'s weights give `tokens` (B, T) under the
    architecture its config names, computed without running any of its modules: with `docs` (B, T)
    attention keeps to each token's document, with `adapters` each LoRA adapter the model
    carries adds its term at the scale those settings name, and `training` routes depth-routed
    blocks as a training forward does (top-k per sequence) rather than by their threshold."""
    config: ModelConfig = model.config
    hidden = _hidden(tokens, docs)
    x = model.embed.weight.double()[tokens]
    for depth, block in enumerate(model.layers):
        x = _block(block, x, hidden, config, adapters, depth, training)
    x = _rms(x, model.final_norm.weight, config.norm_eps)
    if config.tie_embeddings:
        return x @ model.embed.weight.double().T
    return _linear(x, model.lm_head, adapters)
