"""`qkv_bias`: q, k and v projections with biases (the Qwen2 family), and nothing else changed.

Off by default and left out of a saved configuration while off, so a checkpoint, config hash or
test made without it reads the same; on, the biases are part of the q/k/v modules' outputs, so
the trace sites, the KV cache and GATE-MODEL-001's fp64 reference all see them without a path of
their own.
"""

from __future__ import annotations

import pytest
import torch

from stack.model.checks import check_attention_paths
from stack.model.config import ModelConfig
from stack.model.gpt import GPT, param_count_formula
from stack.model.kv_cache import KVCache
from stack.trace.tracer import trace_forward

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

# head_dim 16: one the Triton kernel takes, so GATE-MODEL-001 compares every path.
SHAPE = {
    "vocab": 61,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "ffn_hidden": 72,
    "ctx": 24,
}


def biased_model(seed: int = 0, **changes: object) -> GPT:
    """A model with qkv_bias whose biases are drawn (a fresh one's are 0, which would hide them)."""
    model = GPT(ModelConfig(**{**SHAPE, **changes, "qkv_bias": True}), seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.layers:
            for linear in (layer.attn.q, layer.attn.k, layer.attn.v):
                linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))
    return model.eval()


def test_off_by_default_and_absent_from_the_saved_config() -> None:
    plain = ModelConfig(**SHAPE)
    assert not plain.qkv_bias and "qkv_bias" not in plain.model_dump(mode="json")
    assert ModelConfig.from_dict({**SHAPE, "qkv_bias": False}) == plain
    assert ModelConfig(**SHAPE, qkv_bias=True).model_dump(mode="json")["qkv_bias"] is True
    assert all(layer.attn.q.bias is None for layer in GPT(plain).layers)


@pytest.mark.parametrize("tie", [True, False])
def test_the_parameter_formula_counts_the_biases(tie: bool) -> None:
    config = ModelConfig(**SHAPE, qkv_bias=True, tie_embeddings=tie)
    plain = config.model_copy(update={"qkv_bias": False})
    kv_width = config.n_kv_heads * config.head_width
    assert param_count_formula(config) == GPT(config).num_params()
    assert param_count_formula(config) - param_count_formula(plain) == config.n_layers * (
        config.d_model + 2 * kv_width
    )


def test_fresh_biases_are_zero_so_a_fresh_model_computes_what_its_bias_free_twin_does() -> None:
    idx = torch.randint(SHAPE["vocab"], (2, 16), generator=torch.Generator().manual_seed(3))
    with_bias = GPT(ModelConfig(**SHAPE, qkv_bias=True), seed=5)
    without = GPT(ModelConfig(**SHAPE), seed=5)
    assert torch.equal(with_bias(idx)[0], without(idx)[0])


def test_the_q_k_v_trace_sites_include_the_biases() -> None:
    model = biased_model()
    idx = torch.randint(SHAPE["vocab"], (1, 12), generator=torch.Generator().manual_seed(4))
    trace, _ = trace_forward(model, idx, keep=True)
    x = model.layers[0].attn_norm(model.embed(idx))
    for name in ("q", "k", "v"):
        linear = getattr(model.layers[0].attn, name)
        expected = x @ linear.weight.T + linear.bias
        torch.testing.assert_close(trace.values[f"layers.0.{name}"], expected, rtol=0, atol=1e-6)


@pytest.mark.holds("GATE-MODEL-001")
def test_every_attention_path_agrees_with_the_fp64_reference_when_biases_are_on() -> None:
    """The reference spells the biases out too; without them it would disagree with every path."""
    assert check_attention_paths(biased_model(n_kv_heads=1)).outcome().ok


def test_the_kv_cache_continues_a_biased_model_exactly() -> None:
    model = biased_model(attention="naive")
    idx = torch.randint(SHAPE["vocab"], (2, 20), generator=torch.Generator().manual_seed(6))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, idx.device, torch.float32)
    first, _ = model(idx[:, :13], cache=cache)
    rest = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(13, 20)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, rtol=1e-5, atol=1e-5)
