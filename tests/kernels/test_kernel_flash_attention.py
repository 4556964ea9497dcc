"""GATE-KERNEL-001: the Triton attention matches the naive reference, forward and backward.

Without a GPU these run in Triton's interpreter on CPU tensors (conftest sets TRITON_INTERPRET);
with CUDA the same tests run the compiled kernels. Shapes stay small so the interpreter is quick.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from stack.kernels import flash_attention as fa
from stack.kernels.parity import kernel_parity
from stack.model.attention import naive_attention, softmax_scale

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Around the tile size: one short tile, a full one, a full one plus one, and several with tails.
LENGTHS = (1, 63, 64, 65, 100, 257)
OUTPUTS = ("out", "dq", "dk", "dv")

Attn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _forward_backward(
    fn: Attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d_out: torch.Tensor
) -> list[torch.Tensor]:
    """[out, dq, dk, dv] of fn on fresh leaves."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(d_out)
    return [out.detach()] + [t.grad for t in leaves]


def mismatches(
    batch: int,
    heads: int,
    heads_kv: int,
    n_q: int,
    n_kv: int,
    dim: int,
    causal: bool,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[str]:
    """Which of out, dq, dk, dv of the kernel differ from the fp32 naive reference (GATE-KERNEL-001's judge).

    The reference runs in fp32 on the very same (possibly bf16-rounded) inputs.
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=DEVICE, dtype=dtype)

    q, k, v = draw(batch, heads, n_q, dim), draw(batch, heads_kv, n_kv, dim), draw(batch, heads_kv, n_kv, dim)
    d_out = draw(batch, heads, n_q, dim)
    ours = _forward_backward(lambda q, k, v: fa.flash_attention(q, k, v, causal=causal), q, k, v, d_out)
    scale = softmax_scale(dim)
    ref = _forward_backward(
        lambda q, k, v: naive_attention(q, k, v, causal=causal, scale=scale),
        *(t.float() for t in (q, k, v, d_out)),
    )
    low_precision = dtype != torch.float32
    return [
        name
        for name, a, b in zip(OUTPUTS, ours, ref, strict=True)
        if not kernel_parity({name: a.float()}, {name: b}, low_precision).ok
    ]


@pytest.mark.holds("GATE-KERNEL-001")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", LENGTHS)
def test_matches_reference_around_the_tile_size(n: int, causal: bool) -> None:
    assert mismatches(2, 4, 2, n, n, 16, causal) == []


@pytest.mark.holds("GATE-KERNEL-001")
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 2),
    heads_kv=st.integers(1, 2),
    group=st.integers(1, 3),
    n=st.integers(1, 140),
    dim=st.sampled_from([16, 32, 64]),
    causal=st.booleans(),
)
def test_matches_reference_on_drawn_shapes(
    batch: int, heads_kv: int, group: int, n: int, dim: int, causal: bool
) -> None:
    assert mismatches(batch, heads_kv * group, heads_kv, n, n, dim, causal) == []


@pytest.mark.holds("GATE-KERNEL-001")
@pytest.mark.parametrize("dim", fa.HEAD_DIMS)
def test_every_head_dim(dim: int) -> None:
    assert mismatches(1, 2, 1, 65, 65, dim, causal=True) == []


@pytest.mark.holds("GATE-KERNEL-001")
@pytest.mark.parametrize(("n_q", "n_kv"), [(1, 70), (5, 70), (70, 5)])
def test_cache_shaped_causal_is_aligned_bottom_right(n_q: int, n_kv: int) -> None:
    assert mismatches(1, 2, 1, n_q, n_kv, 32, causal=True) == []


@pytest.mark.holds("GATE-KERNEL-001")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_fp32(dtype: torch.dtype) -> None:
    assert mismatches(1, 2, 1, 65, 65, 32, causal=True, dtype=dtype) == []


def test_rows_that_see_no_key_are_zero_with_zero_gradient() -> None:
    # Causal with more queries than keys: the first n_q - n_kv rows see nothing.
    q = torch.randn(1, 2, 70, 16, device=DEVICE, requires_grad=True)
    k = torch.randn(1, 1, 5, 16, device=DEVICE, requires_grad=True)
    v = torch.randn(1, 1, 5, 16, device=DEVICE, requires_grad=True)
    out = fa.flash_attention(q, k, v, causal=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert (out[:, :, :65] == 0).all() and (q.grad[:, :, :65] == 0).all()
    assert (out[:, :, 65:] != 0).any()


@pytest.mark.gate("GATE-KERNEL-001")
def test_falsifier_kernel_without_tail_mask_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the origin's bug: keys past N in the last tile are not masked out of the softmax."""
    monkeypatch.setattr(fa, "MASK_KV_TAIL", False)
    for n in (1, 63, 65, 100, 257):
        assert "out" in mismatches(1, 2, 1, n, n, 16, causal=False), f"broken kernel passed at N={n}"
    # The bug hides when N is a multiple of the tile size, which is how it shipped.
    assert mismatches(1, 2, 1, 64, 64, 16, causal=False) == []


@pytest.mark.gate("GATE-KERNEL-001")
@pytest.mark.parametrize("low_precision", [False, True])
def test_tolerance_is_pinned(low_precision: bool) -> None:
    """1.5 x the absolute tolerance fires, 0.7 x holds (a reference of zeros: rtol adds nothing).

    fp32_atol is 2e-4 and lowp_atol 2e-2: a tolerance widened or narrowed twofold turns this red.
    """
    atol = 2e-2 if low_precision else 2e-4
    reference = {"out": torch.zeros(8)}
    assert not kernel_parity({"out": torch.full((8,), 1.5 * atol)}, reference, low_precision).ok
    assert kernel_parity({"out": torch.full((8,), 0.7 * atol)}, reference, low_precision).ok


def test_refuses_what_it_cannot_compute() -> None:
    q = torch.randn(1, 2, 8, 16, device=DEVICE)
    kv = torch.randn(1, 1, 8, 16, device=DEVICE)
    with pytest.raises(BadInput, match="head_dim"):
        odd = torch.randn(1, 1, 8, 24, device=DEVICE)
        fa.flash_attention(torch.randn(1, 2, 8, 24, device=DEVICE), odd, odd)
    with pytest.raises(BadInput, match="multiple of H_kv"):
        kv2 = torch.randn(1, 2, 8, 16, device=DEVICE)
        fa.flash_attention(torch.randn(1, 3, 8, 16, device=DEVICE), kv2, kv2)
    with pytest.raises(BadInput, match="dtype"):
        fa.flash_attention(q.double(), kv.double(), kv.double())
    with pytest.raises(BadInput, match="wants q"):
        fa.flash_attention(q[0], kv, kv)


def test_the_kernels_are_operators_torch_compile_keeps_whole() -> None:
    """Under torch.compile (one graph) the kernels run as opaque operators and give the eager results
    bit for bit; a compiler that traces into Triton's launcher fails. The aot_eager backend is
    dynamo and AOT autograd over fake tensors, where such a failure shows, without
    Inductor's C++ build of the rest (tens of seconds here); Inductor runs them as the same
    fallback calls."""
    generator = torch.Generator().manual_seed(0)
    q, k, v, d_out = (
        torch.randn(*shape, generator=generator).to(DEVICE)
        for shape in ((1, 4, 70, 16), (1, 2, 70, 16), (1, 2, 70, 16), (1, 4, 70, 16))
    )

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return fa.flash_attention(q, k, v, causal=True)

    eager = _forward_backward(attention, q, k, v, d_out)
    compiled = _forward_backward(
        torch.compile(attention, fullgraph=True, backend="aot_eager"), q, k, v, d_out
    )
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled, strict=True))
    # The registration itself: schema, autograd and the fake (shape-only) implementation agree.
    args = (q, k, v, True, softmax_scale(16))
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.stack.flash_attention_fwd.default, args, test_utils=checks)
