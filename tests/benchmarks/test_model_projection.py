"""The fused projections (stack.model.projection) and the reference GPT they are measured against.

The stack's GPT runs q|k|v and gate|up as one matrix product each. These tests hold
what that must not change: each projection still computes what its module computes alone, its
forward hooks still see (and may replace) its own output, a module that cannot join runs alone,
and the whole model still computes what a hand-written GPT of the same weights computes
(benchmarks/reference_gpt.py, the yardstick of benchmarks/model_speed.py). Decoding keeps each
group's stacked weight for the call (`stacked_weights`): its outputs are those of a weight stacked
again, bit for bit, a changed weight is stacked again, and nothing is kept past the call.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmarks.reference_gpt import ReferenceGPT
from stack.model import ModelConfig
from stack.model.generate import generate
from stack.model.gpt import GPT
from stack.model.layers import apply_rope, rope_angles
from stack.model.lora import apply_lora
from stack.model.projection import project, stacked_weights

CONFIG = ModelConfig(vocab=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=40, ctx=24)


def linears(widths: list[int], d_in: int = 32, bias: bool = False) -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(d_in, w, bias=bias) for w in widths]


@settings(max_examples=20)
@given(
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    bias=st.booleans(),
    tokens=st.integers(1, 9),
)
def test_each_slice_is_what_its_module_computes_alone(widths: list[int], bias: bool, tokens: int) -> None:
    modules = linears(widths, bias=bias)
    x = torch.randn(2, tokens, 32, dtype=torch.float64)
    modules = [m.double() for m in modules]
    for fused, alone in zip(project(x, modules), (m(x) for m in modules), strict=True):
        assert fused.shape == alone.shape
        torch.testing.assert_close(fused, alone, rtol=1e-12, atol=1e-12)


def test_a_hook_sees_its_own_slice_and_may_replace_it() -> None:
    q, k, v = linears([8, 4, 4])
    x = torch.randn(1, 3, 32)
    seen: dict[str, torch.Tensor] = {}

    def observe(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert args[0] is x
        seen["k"] = out.clone()

    k.register_forward_hook(observe)
    v.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
    out_q, out_k, out_v = project(x, (q, k, v))
    torch.testing.assert_close(seen["k"], torch.nn.functional.linear(x, k.weight))
    torch.testing.assert_close(out_k, seen["k"])
    assert torch.equal(out_v, torch.zeros(1, 3, 4))
    torch.testing.assert_close(out_q, torch.nn.functional.linear(x, q.weight))


def test_a_module_that_cannot_join_makes_the_group_run_alone() -> None:
    class Doubled(nn.Linear):  # any other module type runs as itself
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    (plain,) = linears([6])
    doubled = Doubled(32, 6, bias=False)
    x = torch.randn(1, 2, 32)
    (with_pre_hook,) = linears([6])
    with_pre_hook.register_forward_pre_hook(lambda _m, args: (args[0] * 0,))
    a, b = project(x, (plain, doubled))
    torch.testing.assert_close(b, doubled(x))
    c, d = project(x, (plain, with_pre_hook))
    assert torch.equal(d, torch.zeros(1, 2, 6))  # the pre-hook ran: the module ran alone
    torch.testing.assert_close(a, c)


def test_lora_adapters_join_the_product_and_add_their_term() -> None:
    model = GPT(CONFIG, seed=1)
    ids = torch.randint(CONFIG.vocab, (2, CONFIG.ctx))
    apply_lora(model, "q,v,ffn_gate", 4, 8.0, generator=torch.Generator().manual_seed(0))
    for _, wrapper in [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_B")]:
        nn.init.normal_(wrapper.lora_B, std=0.1)  # a trained adapter: its term is not zero
    fused, _ = model(ids)
    attn = model.layers[0].attn
    x = model.layers[0].attn_norm(model.embed(ids))
    torch.testing.assert_close(project(x, (attn.q, attn.k, attn.v))[0], attn.q(x))
    # Module by module: a global hook makes every group run its modules alone.
    handle = nn.modules.module.register_module_forward_hook(lambda *_: None)
    try:
        alone, _ = model(ids)
    finally:
        handle.remove()
    torch.testing.assert_close(fused, alone, rtol=1e-5, atol=1e-5)


class Stackings(TorchFunctionMode):
    """Records each torch.cat of parameters (a group's weights stacked), with a weak reference to
    what it made."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[weakref.ref[torch.Tensor]] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is torch.cat and args and all(isinstance(t, nn.Parameter) for t in args[0]):
            self.made.append(weakref.ref(out))
        return out


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    bias=st.booleans(),
    tokens=st.integers(1, 9),
)
def test_a_kept_stacked_weight_gives_the_outputs_of_one_stacked_again(
    widths: list[int], bias: bool, tokens: int
) -> None:
    modules = linears(widths, bias=bias)
    inputs = [torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        again = [project(x, modules) for x in inputs]
        with stacked_weights(), Stackings() as made:
            kept = [project(x, modules) for x in inputs]
    assert len(made.made) == (2 if bias else 1)  # the weights (and biases), for the first forward only
    for outputs, expected in zip(kept, again, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))


@pytest.mark.parametrize("change", ["in place", "data replaced", "bias in place"])
def test_a_changed_weight_is_stacked_again(change: str) -> None:
    modules = linears([8, 4, 4], bias=True)
    x = torch.randn(1, 3, 32)
    with torch.no_grad(), stacked_weights():
        project(x, modules)
        if change == "in place":
            modules[1].weight.mul_(2)
        elif change == "data replaced":
            modules[1].weight.data = torch.randn(4, 32)
        else:
            modules[2].bias.add_(1)
        after = project(x, modules)
    for out, module in zip(after, modules, strict=True):
        torch.testing.assert_close(out, module(x), rtol=0, atol=1e-6)


def test_with_a_graph_the_weights_are_stacked_every_forward_and_each_gets_its_gradient() -> None:
    modules = linears([8, 4])
    x = torch.randn(1, 3, 32)
    with stacked_weights(), Stackings() as made:
        for _ in range(2):
            sum(out.sum() for out in project(x, modules)).backward()
    assert len(made.made) == 2
    for module in modules:
        torch.testing.assert_close(module.weight.grad, 2 * x.sum((0, 1)).expand_as(module.weight))


def test_generation_stacks_each_group_once_and_keeps_nothing_after_it() -> None:
    model = GPT(CONFIG, seed=2).eval()
    idx = torch.randint(CONFIG.vocab, (1, 3), generator=torch.Generator().manual_seed(0))
    with Stackings() as made:
        out = generate(model, idx, 6, temperature=0)
    assert len(made.made) == 2 * CONFIG.n_layers  # q|k|v and gate|up of each block, once
    gc.collect()
    assert all(ref() is None for ref in made.made)  # freed when the call ended
    with torch.no_grad():  # greedy decoding without the cache, each forward stacking its weights
        expected = idx
        for _ in range(6):
            expected = torch.cat((expected, model(expected)[0][:, -1:].argmax(-1)), dim=1)
    assert torch.equal(out, expected)


@settings(max_examples=25)
@given(st.integers(0, 2**16))
def test_rope_in_four_ops_is_the_half_rotation_bit_for_bit(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, CONFIG.head_width, generator=generator).to(torch.bfloat16)
    cos, sin = rope_angles(CONFIG, 5, 7, x.device, torch.float32)
    half = CONFIG.head_width // 2
    c, s = cos[:, :half], sin[:, half:]  # the tables hold [cos, cos] and [-sin, sin]
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).to(x.dtype)
    assert torch.equal(apply_rope(x, cos, sin), rotated)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_the_stack_gpt_computes_what_the_reference_gpt_computes(n_kv_heads: int) -> None:
    config = CONFIG.model_copy(update={"n_kv_heads": n_kv_heads})
    model = GPT(config, seed=3)
    reference = ReferenceGPT(config).load_stack(model)
    ids = torch.randint(config.vocab, (2, config.ctx + 1), generator=torch.Generator().manual_seed(0))
    logits, loss = model(ids[:, :-1], ids[:, 1:])
    ref_logits, ref_loss = reference(ids[:, :-1], ids[:, 1:])
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(
        model.layers[0].attn.k.weight.grad,
        reference.blocks[0].qkv.weight.grad[config.d_model : config.d_model + n_kv_heads * config.head_width],
        rtol=1e-4,
        atol=1e-6,
    )


def test_the_reference_refuses_what_it_does_not_build() -> None:
    with pytest.raises(ValueError, match="dense"):
        ReferenceGPT(CONFIG.model_copy(update={"moe_experts": 2}))
