"""Shapes of every layer, the properties of RMSNorm and RoPE, and an fp64 gradcheck of a block."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from stack.model import ModelConfig
from stack.model.layers import Attention, Block, FeedForward, RMSNorm, apply_rope, rope_angles

CONFIG = ModelConfig(vocab=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, ctx=16)


def test_every_layer_keeps_the_residual_shape() -> None:
    x = torch.randn(3, 7, CONFIG.d_model)
    cos, sin = rope_angles(CONFIG, 0, 7, x.device, x.dtype)
    assert RMSNorm(CONFIG.d_model, CONFIG.norm_eps)(x).shape == x.shape
    assert Attention(CONFIG)(x, cos, sin).shape == x.shape
    assert FeedForward(CONFIG)(x).shape == x.shape
    assert Block(CONFIG)(x, cos, sin).shape == x.shape


def test_projection_shapes_follow_grouped_query_heads() -> None:
    attn, ffn = Attention(CONFIG), FeedForward(CONFIG)
    kv_width = CONFIG.n_kv_heads * CONFIG.head_width
    assert attn.q.weight.shape == (CONFIG.d_model, CONFIG.d_model)
    assert attn.k.weight.shape == attn.v.weight.shape == (kv_width, CONFIG.d_model)
    assert attn.o.weight.shape == (CONFIG.d_model, CONFIG.d_model)
    assert ffn.gate.weight.shape == ffn.up.weight.shape == (CONFIG.ffn_hidden, CONFIG.d_model)
    assert ffn.down.weight.shape == (CONFIG.d_model, CONFIG.ffn_hidden)


def test_block_submodules_are_named_for_their_trace_sites() -> None:
    names = {name for name, _ in Block(CONFIG).named_modules() if name}
    assert names == {
        "attn_norm", "attn", "attn.q", "attn.k", "attn.v", "attn.o",
        "ffn_norm", "ffn", "ffn.gate", "ffn.up", "ffn.down", "ffn.swiglu", "ffn.swiglu.act",
    }  # fmt: skip


def test_swiglu_product_is_observable_by_a_forward_hook() -> None:
    ffn = FeedForward(CONFIG)
    seen: list[torch.Tensor] = []
    ffn.swiglu.register_forward_hook(lambda _m, _args, out: seen.append(out))
    x = torch.randn(2, 5, CONFIG.d_model)
    ffn(x)
    torch.testing.assert_close(seen[0], torch.nn.functional.silu(ffn.gate(x)) * ffn.up(x))


@settings(max_examples=20)
@given(scale=st.floats(1e-3, 1e3), width=st.sampled_from([8, 32, 64]))
def test_rmsnorm_output_has_unit_rms_whatever_the_input_scale(scale: float, width: int) -> None:
    x = torch.randn(4, width, dtype=torch.float64) * scale
    out = RMSNorm(width, eps=1e-30)(x)
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(4, dtype=torch.float64))


@settings(max_examples=20)
@given(start=st.integers(0, 8), shift=st.integers(0, 7))
def test_rope_scores_depend_only_on_relative_position(start: int, shift: int) -> None:
    """<rope(q, m), rope(k, n)> is a function of m - n: shifting both positions changes nothing."""
    generator = torch.Generator().manual_seed(start * 10 + shift)
    q = torch.randn(1, 1, 8, CONFIG.head_width, generator=generator, dtype=torch.float64)
    k = torch.randn(1, 1, 8, CONFIG.head_width, generator=generator, dtype=torch.float64)

    def scores(offset: int) -> torch.Tensor:
        cos, sin = rope_angles(CONFIG, offset, 8, q.device, q.dtype)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores(start), scores(start + shift))
    cos, sin = rope_angles(CONFIG, start, 8, q.device, q.dtype)
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


@pytest.mark.parametrize("path", ["naive", "sdpa"])
def test_fp64_gradcheck_of_a_tiny_block(path: str) -> None:
    """Autograd through norm, RoPE, GQA attention and SwiGLU matches finite differences, weights included."""
    config = ModelConfig(vocab=8, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=12, ctx=8)
    block = Block(config.model_copy(update={"attention": path})).double()
    names = [name for name, _ in block.named_parameters()]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, config.d_model, dtype=torch.float64, generator=generator, requires_grad=True)
    cos, sin = rope_angles(config, 0, 5, x.device, x.dtype)
    params = [p.detach().clone().requires_grad_() for p in block.parameters()]

    def run(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(block, dict(zip(names, params, strict=True)), (x, cos, sin))

    assert torch.autograd.gradcheck(run, (x, *params))
