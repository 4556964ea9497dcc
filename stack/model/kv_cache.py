"""The key/value cache of generation: each layer's keys and values for the tokens seen so far."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stack.model.config import ModelConfig


@dataclass
class LayerCache:
    """One layer's keys and values, (B, H_kv, ctx, D), filled from position 0 up."""

    k: torch.Tensor
    v: torch.Tensor
    # Mixture-of-depths blocks keep which cached positions they routed, (B, ctx), made on first use.
    routed: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values at `start` and return all of them up to the new end."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        # In the caller's dtype: under autocast the new keys may be bf16 while the cache is fp32.
        return self.k[:, :, :end].to(k.dtype), self.v[:, :, :end].to(v.dtype)


class KVCache:
    """Every layer's cache plus the shared length; preallocated to `length` positions (the most the
    caller will decode; ctx when not said) so a step never copies it. Sized by the caller's need,
    not by ctx: a start-up check that decodes a few tokens of a model with a huge ctx allocates a few."""

    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        length: int | None = None,
    ) -> None:
        length = config.ctx if length is None else length
        if not 1 <= length <= config.ctx:
            raise ValueError(f"a KV cache of {length} positions for a model of ctx {config.ctx}")
        # Differential attention caches the keys of both its branches (stack.model.diff_attention).
        key_heads = config.n_kv_heads * (2 if config.diff_attn else 1)

        def buffer(heads: int) -> torch.Tensor:
            return torch.zeros((batch, heads, length, config.head_width), device=device, dtype=dtype)

        self.layers = [
            LayerCache(buffer(key_heads), buffer(config.n_kv_heads)) for _ in range(config.n_layers)
        ]
        self.length = 0  # tokens cached so far; the position of the next token
