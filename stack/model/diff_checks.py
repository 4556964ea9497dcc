"""The start-up bindings of the differential-attention gates (GATE-ARCH-005 … 007).

The rules are judges in contracts/judges/arch.py; here the stack measures on probes.
`future_leak` is shared with mixture of depths (GATE-ARCH-011): both options must leave the past
untouched by the future, measured the same way.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from contracts.gates import gate_ensure, measure
from stack.model.checks import (
    PROBE_BATCH,
    PROBE_LEN,
    deviation,
    draw_diff_probe,
    reference_head_norm,
    reference_heads,
    reference_output,
)
from stack.model.config import ModelConfig
from stack.model.diff_attention import DiffAttention
from stack.model.gpt import GPT
from stack.model.layers import rope_angles


@gate_ensure(
    "GATE-ARCH-005",
    lambda result: measure("GATE-ARCH-005", result, holds="λ_init follows 0.8 − 0.6·exp(−0.3·l) per block"),
)
def check_lambda_init(model: GPT) -> dict[str, Any]:
    """Every block's λ_init next to the block's index in `model.layers` (the judge recomputes it)."""
    return {
        "layers": [
            {"index": i, "lambda_init": layer.attn.lambda_init}
            for i, layer in enumerate(model.layers)
            if isinstance(layer.attn, DiffAttention)
        ]
    }


@torch.no_grad()
def future_leak(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """How far the first half's logits move when the second half's tokens are redrawn.

    Measured on an fp32 copy in evaluation mode, the mode of generation, so that routing options
    are probed where they must be causal.
    """
    config, device = model.config, model.embed.weight.device
    twin = copy.deepcopy(model).float().eval()
    generator = torch.Generator().manual_seed(seed)
    length = min(config.ctx, PROBE_LEN)
    prefix = length // 2
    tokens = torch.randint(config.vocab, (PROBE_BATCH, length), generator=generator)
    changed = tokens.clone()
    # A non-zero shift modulo vocab: every future token really changes.
    shift = torch.randint(1, config.vocab, (PROBE_BATCH, length - prefix), generator=generator)
    changed[:, prefix:] = (tokens[:, prefix:] + shift) % config.vocab
    before = twin(tokens.to(device))[0][:, :prefix]
    after = twin(changed.to(device))[0][:, :prefix]
    return {**deviation(after, before), "prefix": prefix, "length": length}


@gate_ensure(
    "GATE-ARCH-006",
    lambda result: measure("GATE-ARCH-006", result, holds="differential attention is causal"),
)
def check_diff_causal(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """GATE-ARCH-006: the future does not reach the past through either attention map."""
    return future_leak(model, seed=seed)


def zero_lambda(attn: DiffAttention) -> None:
    """Set the λ vectors so that λ = exp(0) − exp(ln(1 + λ_init)) + λ_init = 0 (up to rounding)."""
    with torch.no_grad():
        for vector in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            vector.zero_()
        root = math.sqrt(math.log1p(attn.lambda_init))
        attn.lambda_q2[0] = root
        attn.lambda_k2[0] = root


@gate_ensure(
    "GATE-ARCH-007",
    lambda result: measure(
        "GATE-ARCH-007", result, holds="with λ = 0 the layer is normalised ordinary attention"
    ),
)
@torch.no_grad()
def check_diff_reduces(config: ModelConfig, *, seed: int = 0) -> dict[str, float]:
    """A differential layer with λ = 0 against (1 − λ_init)·RMSNorm(softmax(Q₁K₁ᵀ/√d + M)V)·W_o in fp64.

    The probe is the last block's layer (its λ_init furthest from the first's), with random
    weights of std 1/sqrt(d_model) and a head_norm weight off 1, so a norm without its weight, a
    missing (1 − λ_init) or a branch scaled twice all show; λ is then set to 0 by `zero_lambda`.
    """
    generator = torch.Generator().manual_seed(seed)
    probe = DiffAttention(config, depth=config.n_layers - 1)
    for linear in (probe.q, probe.k, probe.v, probe.o):
        torch.nn.init.normal_(linear.weight, std=config.d_model**-0.5, generator=generator)
        if linear.bias is not None:
            torch.nn.init.normal_(linear.bias, std=1.0, generator=generator)
    draw_diff_probe(probe, generator)
    zero_lambda(probe)
    probe = probe.float()
    length = min(config.ctx, PROBE_LEN)
    x = torch.randn(PROBE_BATCH, length, config.d_model, generator=generator)
    cos, sin = rope_angles(config, 0, length, x.device, torch.float32)
    first = reference_heads(probe, x, cos, sin, probe.q, probe.k)
    reference = reference_output(probe, reference_head_norm(probe, first))
    return deviation(probe(x, cos, sin), reference)


def check_diff_attention(model: GPT) -> None:
    """The start-up checks of a model with differential attention (GATE-ARCH-005, 006, 007)."""
    check_lambda_init(model)
    check_diff_causal(model)
    check_diff_reduces(model.config)
