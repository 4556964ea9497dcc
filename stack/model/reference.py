"""The architecture a dense `ModelConfig` names, written out once in float64: GATE-MODEL-003's yardstick.

`reference_logits` reads a model's weights and nothing else of it: no module's forward, no helper
of stack/model (the RoPE tables, the attention paths, the norms and the projections are spelled
out here again), so a bug in any of them (RoPE left out or turned the wrong way, a residual
dropped, a norm without its gain, SwiGLU without its SiLU, a scaled embedding) makes the model's
logits differ from these. The formulas are Llama's, which the HF import and export already hold
the model to (GATE-EXPORT-001): pre-norm blocks x + attn(rms(x)), x + ffn(rms(x)); RoPE on halves
with angles p · θ^(-2i/head_dim), those frequencies rescaled as Llama 3.1 rescales them when the
config's `rope_type` is llama3, after each head of q and k is RMS-normed with its gain under
`qk_norm` (Qwen3's); query head h reads key/value head h // (n_heads / n_kv_heads);
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

Those two options choose discretely (an expert, a token to compute), and a choice whose float64
router output lies within rounding of its boundary may fall either way in the model's float32: the
fp32 module is not wrong to take the other side, and everything after the choice then differs by
a whole term (a 4-expert top-1 mixture under depth routing, a top-⌊C·T⌋ split within fp32
rounding, drew a false difference of 3.06). So a check that ran the module can hand the
reference what the module's routers output (`Routing`): a choice whose own margin (float64: the
k-th router output less the (k+1)-th, or a score less the threshold) is within `Routing.atol` is
settled as those outputs settle it by the same rule, and every other choice is the reference's own.
Only the choice is borrowed; the weights it gives (the renormalised softmax, sigmoid(score)) are
always the reference's, so a module that chooses, weights or routes wrongly anywhere but within
`atol` of a boundary still differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


@dataclass
class Routing:
    """What a forward's routers output, to settle the reference's near-tie choices as they did.

    `heard` maps a router's module name (`layers.3.router` of a depth-routed block,
    `layers.3.moe.router` of a mixture) to its outputs over the forward, (B, T, n) in the module's
    dtype, NaN at a token the module did not run it on (a mixture inside a depth-routed block runs
    on the routed tokens only); a choice whose float64 margin is below `atol` is taken from them
    (module docstring), and `settled` counts the choices so taken."""

    heard: dict[str, torch.Tensor]
    atol: float
    settled: int = field(default=0)

    def near(self, margin: torch.Tensor) -> torch.Tensor | None:
        """Where a choice's `margin` is within `atol` of its boundary, if anywhere; counted as settled."""
        near = margin.abs() < self.atol
        if not bool(near.any()):
            return None
        self.settled += int(near.sum())
        return near


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


def _frequency(i: int, dim: int, config: ModelConfig) -> float:
    """Head position i's rotation frequency θ^(-2i/D), under llama3 by Meta's three cases: a
    wavelength 2π/f shorter than original_ctx / high_freq_factor kept, one longer than
    original_ctx / low_freq_factor divided by the factor, and between, the two blended by
    s = (original_ctx / wavelength − low) / (high − low)."""
    freq = config.rope_theta ** (-2.0 * i / dim)
    if config.rope_type == "default":
        return freq
    wavelength = 2 * math.pi / freq
    low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
    if wavelength < config.rope_original_ctx / high:
        return freq
    if wavelength > config.rope_original_ctx / low:
        return freq / config.rope_factor
    s = (config.rope_original_ctx / wavelength - low) / (high - low)
    return (1 - s) * freq / config.rope_factor + s * freq


def _rotate(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """x (B, H, T, D) with the halves (x1, x2) of each head turned by p · f_i at position p."""
    length, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    freq = torch.tensor([_frequency(i, dim, config) for i in range(half)], dtype=torch.float64)
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
    dim = config.head_width

    def split(y: torch.Tensor, n: int) -> torch.Tensor:
        return y.reshape(batch, length, n, dim).permute(0, 2, 1, 3)

    q = split(_linear(x, getattr(attn, names[0]), adapters), heads)
    k = split(_linear(x, getattr(attn, names[1]), adapters), heads_kv)
    if config.qk_norm:  # Qwen3: each head of q and k normed over its width, then rotated
        q, k = _rms(q, attn.q_norm.weight, config.norm_eps), _rms(k, attn.k_norm.weight, config.norm_eps)
    q, k = _rotate(q, config), _rotate(k, config)
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
    block: torch.nn.Module,
    x: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
    depth: int,
    routing: Routing | None,
) -> torch.Tensor:
    """The dense SwiGLU, or under moe_experts the renormalised top-k mixture of the experts (a
    near-tie of the k-th and (k+1)-th router logits settled by `routing`)."""
    if not config.moe:
        return _swiglu(block.ffn, x, adapters)
    moe, k = block.moe, config.moe_top_k
    logits = _linear(x, moe.router, adapters)
    probs = torch.softmax(logits, dim=-1)
    top_i = probs.topk(k, dim=-1).indices
    heard = routing.heard.get(f"layers.{depth}.moe.router") if routing is not None else None
    if routing is not None and heard is not None and k < config.moe_experts:
        ranked = logits.sort(dim=-1, descending=True).values
        # a token the module's block did not compute was not heard (NaN): nothing to settle there
        margin = torch.where(heard.isfinite().all(-1), ranked[..., k - 1] - ranked[..., k], math.inf)
        if (near := routing.near(margin)) is not None:
            taken = heard.float().softmax(dim=-1).topk(k, dim=-1).indices  # the module's rule, its dtype
            top_i = torch.where(near[..., None], taken, top_i)
    top_p = probs.gather(-1, top_i)
    weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    out = sum(
        weights[..., e, None] * _swiglu(getattr(moe, f"expert{e}"), x, adapters)
        for e in range(config.moe_experts)
    )
    return out + _swiglu(moe.shared, x, adapters) if config.moe_shared_expert else out


def _routed(
    scores: torch.Tensor,
    block: torch.nn.Module,
    config: ModelConfig,
    training: bool,
    name: str,
    routing: Routing | None,
) -> torch.Tensor:
    """(B, T) bool, the tokens a depth-routed block computes: each sequence's top ⌊C·T⌋ `scores` in
    training, else those whose score exceeds the block's route_threshold; a sequence whose k-th and
    (k+1)-th scores, or a token whose score and the threshold, are near-tied settled by `routing`."""
    heard = routing.heard[name].squeeze(-1) if routing is not None and name in routing.heard else None
    if not training:
        threshold = block.route_threshold
        routed = scores > threshold.double()
        margin = scores - threshold.double()
        near = routing.near(margin) if routing is not None and heard is not None else None
        if heard is not None and near is not None:
            routed = torch.where(near, heard > threshold.to(heard.dtype), routed)  # the module's rule
        return routed
    k = math.floor(config.mod_capacity * scores.shape[1])

    def top(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(scores, dtype=torch.bool).scatter(1, values.topk(k, dim=-1).indices, True)

    routed = top(scores)
    if routing is not None and heard is not None and 0 < k < scores.shape[1]:
        ranked = scores.sort(dim=-1, descending=True).values
        if (near := routing.near(ranked[:, k - 1] - ranked[:, k])) is not None:
            routed = torch.where(near[:, None], top(heard), routed)
    return routed


def _block(
    block: torch.nn.Module,
    x: torch.Tensor,
    hidden: torch.Tensor,
    config: ModelConfig,
    adapters: Adapters | None,
    depth: int,
    training: bool,
    routing: Routing | None,
) -> torch.Tensor:
    """x + a + f; a depth-routed block (every mod_every-th) x + sigmoid(score) · (a + f) at the
    routed tokens, attending to routed keys and itself only, and x elsewhere."""
    routes = config.mod_every > 0 and depth % config.mod_every == config.mod_every - 1
    scores = _linear(x, block.router, adapters).squeeze(-1) if routes else None
    name = f"layers.{depth}.router"
    routed = _routed(scores, block, config, training, name, routing) if scores is not None else None
    if routed is not None:
        own = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        hidden = hidden | ~(routed[:, None, :] | own)
    a = _attention(block, _rms(x, block.attn_norm.weight, config.norm_eps), hidden, config, adapters, depth)
    f = _feed_forward(
        block, _rms(x + a, block.ffn_norm.weight, config.norm_eps), config, adapters, depth, routing
    )
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
    routing: Routing | None = None,
) -> torch.Tensor:
    """The logits (B, T, vocab) in float64 that `model`'s weights give `tokens` (B, T) under the
    architecture its config names, computed without running any of its modules: with `docs` (B, T)
    attention keeps to each token's document, with `adapters` each LoRA adapter the model
    carries adds its term at the scale those settings name, `training` routes depth-routed
    blocks as a training forward does (top-k per sequence) rather than by their threshold, and
    `routing` settles the near-tie choices of routers as a forward of the model settled them."""
    config: ModelConfig = model.config
    hidden = _hidden(tokens, docs)
    x = model.embed.weight.double()[tokens]
    for depth, block in enumerate(model.layers):
        x = _block(block, x, hidden, config, adapters, depth, training, routing)
    x = _rms(x, model.final_norm.weight, config.norm_eps)
    if config.tie_embeddings:
        return x @ model.embed.weight.double().T
    return _linear(x, model.lm_head, adapters)
