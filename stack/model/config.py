"""The model's configuration: one typed, validated record; unknown keys are refused."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.model_shape import head_width
from stack.config import parse_section

AttentionPath = Literal["naive", "sdpa", "triton"]

# The keys that mean something only when moe_experts > 0.
_MOE_KEYS = ("moe_top_k", "moe_shared_expert", "moe_balance_coef", "moe_z_coef")
# The keys that mean something only when rope_type is "llama3" (stack/model/rope_scaling.py).
_LLAMA3_KEYS = ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_ctx")
RopeType = Literal["default", "llama3"]


def _option(default: Any, description: str, **constraints: Any) -> Any:
    """A field of an architecture option, left out of the saved configuration while it holds its
    default, so that every configuration from before the option existed hashes the same."""
    at_default = lambda value: value == default  # noqa: E731  (pydantic takes a callable)
    return Field(default=default, exclude_if=at_default, description=description, **constraints)


class ModelConfig(BaseModel):
    """Shape and initialisation of a decoder-only transformer (RMSNorm, RoPE, GQA, SwiGLU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab: int = Field(ge=2, description="number of token ids")
    d_model: int = Field(ge=1, description="width of the residual stream")
    n_layers: int = Field(ge=1, description="number of transformer blocks")
    n_heads: int = Field(ge=1, description="query heads per block")
    n_kv_heads: int = Field(ge=1, description="key/value heads per block (grouped-query attention)")
    ffn_hidden: int = Field(ge=1, description="hidden width of the SwiGLU feed-forward")
    ctx: int = Field(ge=1, description="longest sequence the model accepts (RoPE table length)")
    rope_theta: float = Field(default=10000.0, gt=0, description="RoPE base frequency")
    norm_eps: float = Field(default=1e-5, gt=0, description="RMSNorm epsilon")
    tie_embeddings: bool = Field(default=True, description="lm_head shares the embedding matrix")
    # Left out of the saved configuration while off, so every configuration (and its sha256) from
    # before the option existed reads back unchanged.
    qkv_bias: bool = _option(False, "q, k and v projections carry biases (the Qwen2 family); o never does")
    # Qwen3's attention: heads of their own width (q is n_heads · head_dim wide, not d_model) and
    # each head of q and k RMS-normed over its width before RoPE.
    head_dim: int | None = _option(
        None, "width of one attention head; unset: d_model / n_heads (Qwen3 sets its own)", ge=2
    )
    qk_norm: bool = _option(
        False, "each head of q and k RMS-normed with a gain before RoPE (the Qwen3 family)"
    )
    init_std: float = Field(
        default=0.02, gt=0, description="std of weight init; o and down use init_std / sqrt(2 n_layers)"
    )
    attention: AttentionPath = Field(default="sdpa", description="attention implementation")
    # The architecture options below are all off by default and, like qkv_bias, left out of the
    # saved configuration while they hold their defaults, so older configurations hash the same.
    moe_experts: int = _option(
        0, "feed-forward experts per block (mixture of experts); 0 is the dense SwiGLU", ge=0
    )
    moe_top_k: int = _option(2, "experts each token is routed to", ge=1)
    moe_shared_expert: bool = _option(
        False, "one more expert that every token passes through, outside the routing"
    )
    moe_balance_coef: float = _option(
        0.01, "weight of the load-balancing loss in the training loss (0: not added)", ge=0
    )
    moe_z_coef: float = _option(
        0.001, "weight of the router z-loss in the training loss (0: not added)", ge=0
    )

    diff_attn: bool = _option(
        False, "differential attention: two softmax maps per head, the second subtracted × λ"
    )
    mod_every: int = _option(
        0, "mixture of depths in every n-th block (2: every other block); 0 is off", ge=0
    )
    mod_capacity: float = _option(
        0.125, "fraction C of each sequence's tokens a mixture-of-depths block computes (⌊C·T⌋)", gt=0, le=1
    )
    # Llama 3.1's RoPE frequencies (the Llama 3.1 and 3.2 checkpoints): the defaults are Meta's.
    rope_type: RopeType = _option(
        "default", "RoPE frequencies: default θ^(-2i/D), or llama3 (long wavelengths stretched, Llama 3.1)"
    )
    rope_factor: float = _option(8.0, "llama3: how much the longest wavelengths are stretched", ge=1)
    rope_low_freq_factor: float = _option(
        1.0, "llama3: wavelengths above rope_original_ctx / this are stretched whole", gt=0
    )
    rope_high_freq_factor: float = _option(
        4.0, "llama3: wavelengths below rope_original_ctx / this are kept; between, blended", gt=0
    )
    rope_original_ctx: int = _option(8192, "llama3: the context the frequencies were first trained at", ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.head_dim is None and self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}; "
                "set head_dim to give the heads a width of their own"
            )
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_width % 2 != 0:
            raise ValueError(f"head_dim {self.head_width} must be even for RoPE")
        return self

    @model_validator(mode="after")
    def _moe_consistent(self) -> ModelConfig:
        if self.moe_experts == 0:
            changed = [k for k in _MOE_KEYS if getattr(self, k) != ModelConfig.model_fields[k].default]
            if changed:
                raise ValueError(f"{', '.join(changed)} only apply with moe_experts > 0")
        elif self.moe_top_k > self.moe_experts:
            raise ValueError(f"moe_top_k {self.moe_top_k} exceeds moe_experts {self.moe_experts}")
        return self

    @model_validator(mode="after")
    def _rope_consistent(self) -> ModelConfig:
        if self.rope_type == "default":
            changed = [k for k in _LLAMA3_KEYS if getattr(self, k) != ModelConfig.model_fields[k].default]
            if changed:
                raise ValueError(f'{", ".join(changed)} only apply with rope_type = "llama3"')
        elif self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ValueError(
                f"rope_high_freq_factor {self.rope_high_freq_factor:g} must exceed rope_low_freq_factor "
                f"{self.rope_low_freq_factor:g}: between them the llama3 frequencies are blended"
            )
        return self

    @model_validator(mode="after")
    def _options_consistent(self) -> ModelConfig:
        if self.mod_every == 0 and self.mod_capacity != ModelConfig.model_fields["mod_capacity"].default:
            raise ValueError("mod_capacity only applies with mod_every > 0")
        if self.mod_every and math.floor(self.mod_capacity * self.ctx) == 0:
            raise ValueError(
                f"mod_capacity {self.mod_capacity:g} routes ⌊C·ctx⌋ = ⌊{self.mod_capacity:g}·{self.ctx}⌋ = 0 "
                f"tokens of a {self.ctx}-token sequence, so no token would pass through a routed block; "
                f"raise mod_capacity to at least 1/ctx = {1 / self.ctx:.4g}"
            )
        if self.mod_every > self.n_layers:
            raise ValueError(
                f"mod_every {self.mod_every} exceeds n_layers {self.n_layers}: no block would route; "
                "lower mod_every (2 routes every other block)"
            )
        if self.qk_norm and self.diff_attn:
            raise ValueError("qk_norm is not built for diff_attn's two branches; turn one of them off")
        if self.attention == "triton" and (self.diff_attn or self.mod_every):
            option = "diff_attn" if self.diff_attn else "mod_every"
            raise ValueError(
                f'{option} has no Triton kernel path; set attention = "sdpa" (or "naive") to use it'
            )
        return self

    @property
    def mod(self) -> bool:
        """Whether some blocks are mixture-of-depths blocks."""
        return self.mod_every > 0

    def mod_block(self, index: int) -> bool:
        """Whether block `index` routes (every mod_every-th block: 1, 3, 5, … for mod_every 2)."""
        return self.mod_every > 0 and index % self.mod_every == self.mod_every - 1

    @property
    def moe(self) -> bool:
        """Whether the feed-forward of every block is a mixture of experts."""
        return self.moe_experts > 0

    @property
    def head_width(self) -> int:
        """Width of one attention head: `head_dim` where the config sets it, else d_model / n_heads
        (contracts.model_shape.head_width, the rule the checker derives shapes by)."""
        return head_width({"head_dim": self.head_dim, "d_model": self.d_model, "n_heads": self.n_heads})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Validate a mapping (from TOML/YAML); problems become one-line BadInput naming the valid keys."""
        return parse_section(cls, "model", data)
