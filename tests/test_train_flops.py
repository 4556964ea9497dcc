"""Model FLOPs per token (stack.train.flops) against the weight matrices a real model holds.

The count is analytic, from the config; these tests hold it to the `nn.Linear` weights of the
model that config builds, so a new projection that the formula forgets turns them red.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.moe import MoE
from stack.train.flops import flops_per_token, mfu, peak_flops


def _linear_weights(model: torch.nn.Module, routed_share: float = 1.0) -> float:
    """Weights of every matmul a token passes, experts counted at the share of them it visits."""
    total = 0.0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            in_expert = ".expert" in name
            total += module.weight.numel() * (routed_share if in_expert else 1.0)
    return total


def _config(**fields: object) -> ModelConfig:
    base = {"vocab": 97, "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 48}
    return ModelConfig.from_dict(base | {"ctx": 16} | fields)


@settings(max_examples=12, deadline=None)
@given(
    layers=st.integers(1, 3),
    heads=st.sampled_from([(4, 4), (4, 2), (4, 1), (2, 2)]),
    ffn=st.integers(8, 64),
    ctx=st.integers(4, 64),
    tied=st.booleans(),
)
def test_dense_count_is_six_per_weight_plus_attention_scores(layers, heads, ffn, ctx, tied):
    config = _config(
        n_layers=layers, n_heads=heads[0], n_kv_heads=heads[1], ffn_hidden=ffn, ctx=ctx, tie_embeddings=tied
    )
    model = GPT(config, seed=0)
    scores = 12 * layers * config.n_heads * config.head_dim * ctx
    assert flops_per_token(config) == 6 * _linear_weights(model) + scores


def test_experts_count_only_the_routed_ones():
    config = _config(moe_experts=4, moe_top_k=2)
    model = GPT(config, seed=0)
    assert any(isinstance(m, MoE) for m in model.modules())
    scores = 12 * config.n_layers * config.n_heads * config.head_dim * config.ctx
    assert flops_per_token(config) == 6 * _linear_weights(model, routed_share=2 / 4) + scores


def test_mfu_reads_the_peak_of_the_named_gpu():
    config = _config()
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # the more specific name wins
    assert peak_flops("a CPU") is None and mfu(1e6, config, "a CPU") is None
    assert mfu(1e6, config, "NVIDIA A100-SXM4-80GB") == 1e6 * flops_per_token(config) / 312e12
