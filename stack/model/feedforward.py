"""The SwiGLU feed-forward, dense (one per block) or as one expert of a mixture (moe.py).

Module names are trace sites: `gate`, `up`, `down` and `swiglu` (silu(gate) * up), so a forward
hook on `layers.3.ffn.swiglu` sees exactly what the code calls that product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stack.model.config import ModelConfig


class SwiGLU(nn.Module):
    """silu(gate) * up, a module of its own so that a forward hook can observe the product."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up


class FeedForward(nn.Module):
    """The SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.up = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down = nn.Linear(config.ffn_hidden, config.d_model, bias=False)
        self.swiglu = SwiGLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.swiglu(self.gate(x), self.up(x)))
