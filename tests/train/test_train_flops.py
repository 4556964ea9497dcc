"""Model FLOPs per token (stack.train.flops) against the weight matrices a real model holds.

The count is analytic, from the config; these tests hold it to the `nn.Linear` weights of the
model that config builds, so a new projection that the formula forgets turns them red.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.moe import MoE
from stack.train.flops import flops_per_token, mfu, peak_flops


def _linear_weights(model: torch.nn.Module, routed_share: float = 1.0, block_share: float = 1.0) -> float:
    """Weights of every matmul a token passes: experts counted at the share of them it visits, a
    routed (mixture-of-depths) block's at the share of tokens it computes, its router whole."""
    total = 0.0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            share = routed_share if ".expert" in name else 1.0
            if name.startswith("layers.1.") and not name.endswith("router"):
                share *= block_share
            total += module.weight.numel() * share
    return total


def _config(**fields: object) -> ModelConfig:
    base = {"vocab": 97, "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 48}
    return ModelConfig.from_dict(base | {"ctx": 16} | fields)


@settings(max_examples=12)
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
    scores = 12 * layers * config.n_heads * config.head_width * ctx
    assert flops_per_token(config) == 6 * _linear_weights(model) + scores


def test_experts_count_only_the_routed_ones():
    config = _config(moe_experts=4, moe_top_k=2)
    model = GPT(config, seed=0)
    assert any(isinstance(m, MoE) for m in model.modules())
    scores = 12 * config.n_layers * config.n_heads * config.head_width * config.ctx
    assert flops_per_token(config) == 6 * _linear_weights(model, routed_share=2 / 4) + scores


def test_differential_attention_counts_its_second_branch():
    config = _config(diff_attn=True)
    model = GPT(config, seed=0)
    # three score matmuls (two q·kᵀ maps and p·v) instead of two
    scores = 12 * config.n_layers * config.n_heads * config.head_width * config.ctx * 3 / 2
    assert flops_per_token(config) == 6 * _linear_weights(model) + scores


def test_a_routed_block_counts_its_capacity_of_tokens_and_keys():
    config = _config(mod_every=2, mod_capacity=0.25)  # block 1 of 2 routes a quarter of the tokens
    model = GPT(config, seed=0)
    per_block = 12 * config.n_heads * config.head_width * config.ctx
    scores = per_block + 0.25 * 0.25 * per_block
    assert flops_per_token(config) == pytest.approx(6 * _linear_weights(model, block_share=0.25) + scores)


def test_mfu_reads_the_peak_of_the_named_gpu():
    config = _config()
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # the more specific name wins
    assert peak_flops("a CPU") is None and mfu(1e6, config, "a CPU") is None
    assert mfu(1e6, config, "NVIDIA A100-SXM4-80GB") == 1e6 * flops_per_token(config) / 312e12
