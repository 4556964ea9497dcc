"""The language model: embed, a stack of blocks, final_norm, lm_head (optionally tied to embed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import BadInput
from contracts.model_init import LAMBDA_STD
from contracts.model_shape import param_count
from stack.model.attention import PATHS
from stack.model.config import ModelConfig
from stack.model.consumed import Consumed, kept, mode_of, record, taping
from stack.model.depth_router import DepthRoutedBlock
from stack.model.diff_attention import DiffAttention
from stack.model.generate import generate
from stack.model.kv_cache import KVCache
from stack.model.layers import Block, RMSNorm, rope_angles
from stack.model.moe import MoE, feed_forwards, routers
from stack.model.moe_checks import check_expert_weights


def param_count_formula(config: ModelConfig) -> int:
    """The number of parameters, from the config alone (a tied lm_head counts once): the one formula
    of contracts.model_shape, which the integrity check derives a record's `parameters` with."""
    return param_count(config.model_dump())


def build_block(config: ModelConfig, index: int) -> Block:
    """Block `index` of a model: its attention differential with `diff_attn`, routed by `mod_every`."""
    attn = DiffAttention(config, depth=index) if config.diff_attn else None
    return DepthRoutedBlock(config, attn) if config.mod_block(index) else Block(config, attn)


class GPT(nn.Module):
    """A decoder-only transformer over token ids.

    Initialisation: every weight matrix ~ N(0, init_std²), except the two projections that
    write into the residual stream (attn.o and ffn.down), whose std is init_std / sqrt(2 n_layers)
    so the stream's variance does not grow with depth; norm weights (qk_norm's too) start at 1 and
    q/k/v biases (`qkv_bias`) at 0, so a fresh model with biases computes what one without them
    does. With `seed` the initialisation is drawn from its own generator, bitwise reproducible on CPU.
    """

    def __init__(self, config: ModelConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.d_model)
        self.layers = nn.ModuleList(build_block(config, i) for i in range(config.n_layers))
        self.final_norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.init_weights(None if seed is None else torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re)draw every weight as the class docstring says, from `generator` or torch's global RNG."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embed.weight, std=std, generator=generator)
        for layer in self.layers:
            ffns = list(feed_forwards(layer.feed_forward))
            for linear in (layer.attn.q, layer.attn.k, layer.attn.v, *routers(layer.feed_forward)):
                nn.init.normal_(linear.weight, std=std, generator=generator)
            for ffn in ffns:
                nn.init.normal_(ffn.gate.weight, std=std, generator=generator)
                nn.init.normal_(ffn.up.weight, std=std, generator=generator)
            for linear in (layer.attn.o, *(ffn.down for ffn in ffns)):
                nn.init.normal_(linear.weight, std=residual_std, generator=generator)
            if self.config.qkv_bias:
                for linear in (layer.attn.q, layer.attn.k, layer.attn.v):
                    nn.init.zeros_(linear.bias)
            for norm in (layer.attn_norm, layer.ffn_norm, layer.attn.q_norm, layer.attn.k_norm):
                if norm is not None:  # q_norm and k_norm exist with qk_norm only
                    nn.init.ones_(norm.weight)
            # The options' tensors are drawn after everything a plain block draws, so what a model
            # without them draws from the generator does not depend on which options exist.
            if isinstance(layer.attn, DiffAttention):
                self._init_diff_attention(layer.attn, std, generator)
            if isinstance(layer, DepthRoutedBlock):
                nn.init.normal_(layer.router.weight, std=std, generator=generator)
                layer.route_threshold.zero_()
        nn.init.ones_(self.final_norm.weight)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=std, generator=generator)

    def _init_diff_attention(
        self, attn: DiffAttention, std: float, generator: torch.Generator | None
    ) -> None:
        """q2, k2 like q, k (zero biases); λ vectors ~ N(0, LAMBDA_STD²); head_norm at 1."""
        for linear in (attn.q2, attn.k2):
            nn.init.normal_(linear.weight, std=std, generator=generator)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        for vector in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            nn.init.normal_(vector, std=LAMBDA_STD, generator=generator)
        nn.init.ones_(attn.head_norm.weight)

    def num_params(self) -> int:
        """Parameters the model trains (a tied lm_head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def moe_layers(self) -> list[tuple[str, MoE]]:
        """(name, module) of every mixture-of-experts feed-forward, in layer order."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, MoE)]

    def aux_losses(self) -> dict[str, tuple[float, torch.Tensor]]:
        """The last forward's auxiliary losses, each (coefficient, mean over the MoE layers); {} if dense."""
        moes = [module for _, module in self.moe_layers()]
        if not moes:
            return {}
        coefficients = {"load_balance": self.config.moe_balance_coef, "router_z": self.config.moe_z_coef}
        return {
            name: (coef, torch.stack([m.aux[name] for m in moes]).mean())
            for name, coef in coefficients.items()
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """torch's load, then (with experts) GATE-ARCH-004: every expert now holds the given weights.

        A loader that skips or renames expert tensors without strictness would leave experts at
        their initialisation and the model would still run; the per-expert hashes catch it.
        """
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.config.moe:
            check_expert_weights(self, state_dict)
        return result

    def set_attention_path(self, path: str) -> None:
        """Switch every layer to another attention path; the config records the change."""
        if path not in PATHS:
            raise BadInput(f"unknown attention path {path!r}; use one of: {', '.join(PATHS)}")
        # Validated again, so a path the model's options cannot run (triton with diff_attn) is refused.
        self.config = ModelConfig.from_dict({**self.config.model_dump(), "attention": path})
        for layer in self.layers:
            layer.attn.path = path

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        docs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) of token ids idx (B, T), and the mean cross-entropy when targets are given.

        targets[b, t] is the token that should follow idx[b, t] (already shifted by the caller);
        -1 is ignored. With `cache`, idx continues the cached tokens and the cache is extended.
        `docs` (B, T), the document id of each token of a packed window, keeps attention inside
        each document (stack.model.attention); positions keep counting across the window.
        """
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise BadInput(f"idx must be a (batch, time) LongTensor; got {idx.dtype} {tuple(idx.shape)}")
        start = cache.length if cache is not None else 0
        if start + idx.shape[1] > self.config.ctx:
            raise BadInput(
                f"sequence of {start + idx.shape[1]} tokens exceeds ctx {self.config.ctx}; "
                "crop the input or raise ctx"
            )
        x = self.embed(idx)
        cos, sin = rope_angles(self.config, start, idx.shape[1], x.device, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.layers[i] if cache is not None else None, start, docs)
        if cache is not None:
            cache.length += idx.shape[1]
        logits = self.lm_head(self.final_norm(x))
        if targets is None:
            return logits, None
        if targets.shape != idx.shape:
            raise BadInput(f"targets {tuple(targets.shape)} must have the shape of idx {tuple(idx.shape)}")
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        if taping():  # what it read and made, and how it ran (stack.model.consumed)
            record(Consumed(idx, targets, docs, logits.dtype, loss.detach(), mode_of(self), kept(logits)))
        return logits, loss

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens, decoded with a KV cache.

        temperature 0 is greedy. The same generator state gives the same tokens.
        """
        return generate(
            self,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            generator=generator,
        )
