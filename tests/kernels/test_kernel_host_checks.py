"""The C kernel of GATE-TRACE-002's sampled checks on the CPU (stack.kernels.host_checks) against the
torch ops it stands in for: the deviations to the bit, the product check's projections within
float32's rounding of a product of their width, and both of its builds alike to the bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stack.kernels import host_checks
from stack.trace.site_identity import probes, projected_together, sampled_deviations

SPECIALS = st.sampled_from([0.0, -0.0, 1e-30, 3.0e38, -3.0e38, float("nan"), float("inf"), float("-inf")])
VALUE = st.floats(-1e6, 1e6) | SPECIALS
DTYPE = st.sampled_from([torch.float32, torch.bfloat16])
# Lengths across the kernel's 16 lanes: empty, a tail alone, whole lanes, lanes and a tail.
PAIR = st.integers(0, 40).flatmap(
    lambda n: st.tuples(st.lists(VALUE, min_size=n, max_size=n), st.lists(VALUE, min_size=n, max_size=n))
)


def _torch_deviations(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sampled_deviations by the torch ops, the C kernel set aside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host_checks, "_kernel", lambda: None)
        return sampled_deviations(pairs)


@settings(max_examples=80)
@given(st.lists(st.tuples(PAIR, DTYPE, DTYPE), min_size=1, max_size=6))
def test_the_kernels_deviations_are_the_torch_ops_bit_for_bit(drawn: list[Any]) -> None:
    """Every pair's row, NaN and Inf at the same places or not, a difference that overflows float32,
    each side float32 or bfloat16: the torch ops' row exactly, by either build; `finite` says
    whether every element of both sides was finite."""
    pairs = [(torch.tensor(a).to(da), torch.tensor(b).to(db)) for (a, b), da, db in drawn]
    by_kernel = host_checks.host_deviations(pairs)
    assert by_kernel is not None
    rows, finite = by_kernel
    assert torch.equal(rows, _torch_deviations(pairs))
    assert finite == [bool(a.isfinite().all() and b.isfinite().all()) for a, b in pairs]
    portable = host_checks.host_deviations(pairs, portable=True)
    assert portable is not None and torch.equal(portable[0], rows) and portable[1] == finite


def _products(dtype: torch.dtype, rows: int, seed: int) -> list[tuple[nn.Linear, torch.Tensor, torch.Tensor]]:
    """Linear modules of a block's shapes and a head's (widths not all multiples of 16), each with
    `rows` read rows and its output on them, in `dtype`."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for inputs, outputs, bias in [
        (48, 48, False),
        (48, 20, True),
        (48, 130, False),
        (130, 48, True),
        (48, 300, False),
    ]:
        linear = nn.Linear(inputs, outputs, bias=bias)
        with torch.no_grad():
            for parameter in linear.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        read = torch.randn(rows, inputs, generator=generator).to(dtype)
        with torch.no_grad():
            made.append((linear, linear(read.float()).to(dtype), read))
    return made


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [16, 5])
def test_the_kernels_projections_are_the_torch_products_within_rounding(
    dtype: torch.dtype, rows: int
) -> None:
    """Each product's projections R·Yᵀ and (WᵀR)·Xᵀ + b·R, as projected_together lays them out, within
    float32's rounding of a product of their width; the portable build gives the same bits."""
    count = 8
    products = _products(dtype, rows, seed=rows)
    order, projected, recomputed = projected_together(products, count)
    checks = []
    for linear, traced, read in products:
        made = probes(linear, count)
        checks.append((made.outputs, made.inputs, made.offset, traced, read))
    sides = [torch.empty(len(products), count * rows) for _ in range(4)]
    measured = host_checks.host_product_deviations(checks, sides[0], sides[1])
    assert measured is not None
    in_order = torch.tensor(order).argsort()
    for by_kernel, by_torch in ((sides[0], projected[in_order]), (sides[1], recomputed[in_order])):
        scale = by_torch.abs().amax(1, keepdim=True)
        assert ((by_kernel - by_torch).abs() <= 1e-5 * scale).all()
    rows_measured, finite = measured
    assert finite == [True] * len(products)
    assert torch.equal(
        rows_measured,
        host_checks.host_deviations([(sides[0][p], sides[1][p]) for p in range(len(products))])[0],
    )  # type: ignore[index]
    portable = host_checks.host_product_deviations(checks, sides[2], sides[3], portable=True)
    assert portable is not None and torch.equal(portable[0], rows_measured)
    assert torch.equal(sides[2], sides[0]) and torch.equal(sides[3], sides[1])


def test_a_call_made_again_on_the_same_tensors_reads_their_values_now() -> None:
    """The kernel's call is prepared once per set of tensors and made again on them: a second call
    after the rows changed in place measures the new rows, the same bits as a first call on copies
    of them, and the call on other tensors is its own."""
    products = _products(torch.float32, 16, seed=4)
    made = [probes(linear, 8) for linear, _, _ in products]
    checks = [(p.outputs, p.inputs, p.offset, y, x) for p, (_, y, x) in zip(made, products, strict=True)]
    sides = [torch.empty(len(products), 8 * 16) for _ in range(2)]
    first = host_checks.host_product_deviations(checks, *sides)
    assert first is not None and first[0][:, 0].max() < 1e-3 * first[0][:, 1].min()  # the identities hold
    products[1][1].mul_(3.0)  # a site's rows, changed where they lie
    again = host_checks.host_product_deviations(checks, *sides)
    assert again is not None and again[0][1, 0] > 0.5 * again[0][1, 1]  # now off by twice its size
    copies = [tuple(t.clone() for t in check) for check in checks]
    fresh = host_checks.host_product_deviations(copies, *(side.clone() for side in sides))
    assert fresh is not None and torch.equal(fresh[0], again[0]) and fresh[1] == again[1]


def test_a_call_on_rows_not_laid_out_in_a_row_reads_their_values_now() -> None:
    """Rows the kernel reads from a contiguous copy (a column-major view, say): a second call on the
    same view, after its values changed in place, measures the new values, not the first call's copy."""
    products = _products(torch.float32, 16, seed=5)
    made = [probes(linear, 8) for linear, _, _ in products]
    strided = [y.t().contiguous().t() for _, y, _ in products]  # the same values, column-major
    checks = [
        (p.outputs, p.inputs, p.offset, y, x) for p, y, (_, _, x) in zip(made, strided, products, strict=True)
    ]
    sides = [torch.empty(len(products), 8 * 16) for _ in range(2)]
    first = host_checks.host_product_deviations(checks, *sides)
    assert first is not None and first[0][:, 0].max() < 1e-3 * first[0][:, 1].min()
    strided[1].mul_(3.0)
    again = host_checks.host_product_deviations(checks, *sides)
    assert again is not None and again[0][1, 0] > 0.5 * again[0][1, 1]


def test_a_product_with_a_nan_in_its_rows_is_not_finite() -> None:
    """A NaN in one traced row makes that product's projections not finite, and says so; the
    others stand."""
    products = _products(torch.float32, 16, seed=3)
    products[2][1][7, 5] = float("nan")
    made = [probes(linear, 8) for linear, _, _ in products]
    checks = [(p.outputs, p.inputs, p.offset, y, x) for p, (_, y, x) in zip(made, products, strict=True)]
    sides = [torch.empty(len(products), 8 * 16) for _ in range(2)]
    measured = host_checks.host_product_deviations(checks, *sides)
    assert measured is not None
    assert measured[1] == [True, True, False, True, True]


def test_what_the_kernel_cannot_read_goes_to_the_torch_ops() -> None:
    """A float64 side or a pair of two sizes: None, and the torch ops measure them; products whose
    shapes do not fit their probes are refused, never read out of bounds."""
    a = torch.randn(20)
    assert host_checks.host_deviations([(a.double(), a.double())]) is None
    assert host_checks.host_deviations([(a, a[:10])]) is None
    products = _products(torch.float32, 16, seed=4)
    made = probes(products[0][0], 8)
    sides = [torch.empty(1, 8 * 16) for _ in range(2)]
    misfit = (made.outputs, made.inputs, made.offset, products[1][1], products[0][2])  # q's probes, k's rows
    with pytest.raises(ValueError, match="do not fit"):
        host_checks.host_product_deviations([misfit], *sides)


def test_without_a_compiler_the_torch_ops_measure_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(20)
    with monkeypatch.context() as patch:
        patch.setenv("CC", "no-such-compiler")
        host_checks._library.cache_clear()
        assert host_checks.engine() == "torch (no C compiler (no-such-compiler) on PATH)"
        assert host_checks.host_deviations([(a, a)]) is None
        measured = sampled_deviations([(a, a + 1)])[0].tolist()
    host_checks._library.cache_clear()
    assert measured == pytest.approx([1.0, float((a + 1).abs().max()), 0.0])
    assert host_checks.engine().startswith("c (")
