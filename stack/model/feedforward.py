"""The SwiGLU feed-forward, dense (one per block) or as one expert of a mixture (moe.py).

Module names are trace sites: `gate`, `up`, `down`, `swiglu` (silu(gate) * up) and its `act`
(silu(gate)), so a forward hook on `layers.3.ffn.swiglu` sees exactly what the code calls that
product, and one on `layers.3.ffn.swiglu.act` what it calls the gate's SiLU.
"""

from __future__ import annotations

import torch
from torch import nn

from stack.model.config import ModelConfig
from stack.model.projection import project


class SwiGLU(nn.Module):
    """silu(gate) * up, a module of its own so that a forward hook can observe the product, with
    its SiLU a module too (`act`, no weights) so that one can observe silu(gate): a trace hooks
    both as any other site, at the cost of a hook, where catching a bare F.silu call would need a
    torch-function mode that every torch call inside the product goes through.

    The gate arrives as a slice of the fused gate|up product (stack.model.projection). On the CPU,
    silu's vectorised loop rounds the last elements of a strided row otherwise than those of a
    contiguous one, so there the slice is made contiguous first: silu(gate) is then the same
    bits whoever computes it from the gate (a trace reader, a test, an exported graph). CUDA's
    silu rounds every element alike, and the copy is not paid there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.SiLU()

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if gate.device.type == "cpu":
            gate = gate.contiguous()
        return self.act(gate) * up


class FeedForward(nn.Module):
    """The SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.up = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down = nn.Linear(config.ffn_hidden, config.d_model, bias=False)
        self.swiglu = SwiGLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = project(x, (self.gate, self.up))
        return self.down(self.swiglu(gate, up))
