"""GATE-TRACE-002's sampled identity checks on the CPU, by a small C kernel built on first use.

    rows, finite = host_deviations(pairs)                       # or None: use the torch ops
    rows, finite = host_product_deviations(products, projected, recomputed)

Why C: after a traced forward the checks measure a few rows of every site that is a module's
output (stack.trace.site_identity). Their arithmetic is small (16 rows a site, some 5 M
multiply-adds for the product checks of a `small` model), and done by torch ops it was some
250 small operations after the forward, each run cold (the forward's products had evicted what
the dispatcher uses): about a fifth of what tracing costs a `small` forward on one core
(docs/trace.md, Cost). host_checks.c does the same arithmetic in two calls for the whole
forward, with the same results: the deviations to the bit, the projections within float32's
rounding of a product of their width (its header says how).

Built like host_stats.c (stack.kernels.host_build), with OpenMP where torch runs on it: the
projections are shared among torch's threads product by product (each product summed by one
thread, so the bits do not depend on how many ran), which took a `small` forward's from 0.14 to
0.09 ms on two cores; the deviations, a few thousand elements, run on one. Where it cannot help,
each function says so with None and the torch ops of stack.trace.site_identity measure the same
thing: a side that is neither float32 nor bfloat16 (a float64 model), a pair of two sizes, or no
working compiler. Every tensor is read where it lies if contiguous, else from a contiguous copy.
"""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stack.kernels.host_build import loaded

SOURCE = Path(__file__).with_name("host_checks.c")
DEVIATION_WIDTH = 3  # max_abs_diff, ref_absmax, unmatched (stack.trace.site_identity.DEVIATION)
_BF16_FLAG = {torch.float32: 0, torch.bfloat16: 1}  # the dtypes the kernel reads, and how it is told

_Pointers = ctypes.POINTER(ctypes.c_void_p)
_Flags = ctypes.POINTER(ctypes.c_int)
_Sizes = ctypes.POINTER(ctypes.c_int64)


def declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """`library` with its functions' signatures declared."""
    projections = [
        ctypes.c_int64,  # products
        ctypes.c_int64,  # rows of each
        ctypes.c_int64,  # probes
        _Pointers,  # traced rows
        _Flags,  # ...bfloat16
        _Sizes,  # ...width
        _Pointers,  # probes' output rows
        _Pointers,  # read rows
        _Flags,  # ...bfloat16
        _Sizes,  # ...width
        _Pointers,  # probes' input rows
        _Pointers,  # probes' offsets
        ctypes.c_void_p,  # projected
        ctypes.c_void_p,  # recomputed
    ]
    deviations = [ctypes.c_int64, _Pointers, _Flags, _Pointers, _Flags, _Sizes]
    deviations += [ctypes.c_void_p, ctypes.c_void_p]  # the rows, the finite flags
    for name, argtypes in (("gs_projections", projections), ("gs_deviations", deviations)):
        for build in (name, f"{name}_portable"):
            function = getattr(library, build)
            function.argtypes, function.restype = argtypes, None
    library.gs_checks_build.argtypes, library.gs_checks_build.restype = [], ctypes.c_char_p
    return library


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The loaded kernel, or why there is none (the torch ops then measure every check)."""
    return loaded(SOURCE, declare, openmp=True)


def engine() -> str:
    """What measures the checks on this CPU, e.g. `c (avx512)`, or `torch (<why not C>)`."""
    library = _library()
    if isinstance(library, str):
        return f"torch ({library})"
    return f"c ({library.gs_checks_build().decode()})"


def _kernel() -> ctypes.CDLL | None:
    """The loaded kernel, or None where there is none."""
    library = _library()
    return None if isinstance(library, str) else library


def _readable(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
    """The tensors as the kernel reads them (contiguous CPU float32 or bfloat16), or None when one
    is not of those dtypes or not on the host."""
    if not all(t.dtype in _BF16_FLAG and t.is_cpu for t in tensors):
        return None
    return [t if t.is_contiguous() else t.contiguous() for t in tensors]


@functools.lru_cache(maxsize=64)
def _array_type(kind: type, length: int) -> type:
    """ctypes' type of an array of `length` `kind`s, made once: `kind * length` makes a new type
    each time it is written, a reference cycle that only the garbage collector frees (eight a
    traced forward, otherwise)."""
    return kind * length


def _array(kind: type, values: Sequence[int]) -> ctypes.Array:
    return _array_type(kind, len(values))(*values)


# gs_deviations' pairs as it reads them: the addresses of the a sides, their bfloat16 flags, the b
# sides', theirs, and the pairs' lengths.
Pairs = tuple[ctypes.Array, ctypes.Array, ctypes.Array, ctypes.Array, ctypes.Array]


def _pairs(
    a: Sequence[int], a_bf16: Sequence[int], b: Sequence[int], b_bf16: Sequence[int], sizes: Sequence[int]
) -> Pairs:
    """Pairs given by their addresses, flags and lengths, as gs_deviations reads them."""
    return (
        _array(ctypes.c_void_p, a),
        _array(ctypes.c_int, a_bf16),
        _array(ctypes.c_void_p, b),
        _array(ctypes.c_int, b_bf16),
        _array(ctypes.c_int64, sizes),
    )


def _measure(library: ctypes.CDLL, portable: bool, pairs: Pairs) -> tuple[torch.Tensor, list[bool]]:
    """gs_deviations over `pairs`: (rows, finite)."""
    count = len(pairs[-1])
    out = torch.zeros(count, DEVIATION_WIDTH, dtype=torch.float64)
    finite = _array_type(ctypes.c_int8, count)()
    deviations = library.gs_deviations_portable if portable else library.gs_deviations
    deviations(count, *pairs, out.data_ptr(), ctypes.addressof(finite))
    return out, [bool(flag) for flag in finite]


def host_deviations(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], *, portable: bool = False
) -> tuple[torch.Tensor, list[bool]] | None:
    """(len(pairs), 3) float64: each (traced, recomputed) pair's DEVIATION as
    stack.trace.site_identity.site_deviation defines it, its difference taken in float32 (as
    sampled_deviations' torch ops take it); and per pair whether every element of both was finite.
    None where the torch ops must measure them (see the module docstring). `portable` runs the
    kernel's portable build, which the tests hold to the same bits."""
    library = _kernel()
    if library is None or any(t.numel() != r.numel() for t, r in pairs):
        return None
    sides = _readable([side for pair in pairs for side in pair])
    if sides is None:
        return None
    traced, recomputed = sides[0::2], sides[1::2]
    pairs = _pairs(
        [t.data_ptr() for t in traced],
        [_BF16_FLAG[t.dtype] for t in traced],
        [r.data_ptr() for r in recomputed],
        [_BF16_FLAG[r.dtype] for r in recomputed],
        [t.numel() for t in traced],
    )
    return _measure(library, portable, pairs)


# One product check: the probes' output rows R (k, out), input rows WᵀR (k, in) and offsets b·R
# (k, 1), all float32; the traced rows Y (rows, out) and the read rows X (rows, in).
Product = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def host_product_deviations(
    products: Sequence[Product], projected: torch.Tensor, recomputed: torch.Tensor, *, portable: bool = False
) -> tuple[torch.Tensor, list[bool]] | None:
    """Each product's traced rows projected on its probes, R·Yᵀ, into `projected[p]`, its read rows
    (WᵀR)·Xᵀ + b·R into `recomputed[p]` (both (len(products), k × rows) float32, row j·rows + i the
    projection of row i on probe j, as stack.trace.site_identity.projected_together lays them out),
    and the DEVIATION of each product's two rows with whether both were all finite. Every product
    has the same rows and probes. None where the torch ops must measure them; `portable` as for
    `host_deviations`."""
    library = _kernel()
    if library is None or not products or projected.dtype != torch.float32:
        return None
    tensors = (*(t for product in products for t in product), projected, recomputed)
    key = (portable, *map(id, tensors))
    call = _PREPARED.get(key)
    if call is None:
        call = _prepared(library, products, projected, recomputed, portable)
        if call is None:
            return None
        # Kept only where it reads every tensor where it lies: a contiguous copy made for it would
        # not hold the values a later call's tensors hold.
        if all(map(operator.is_, call.tensors, tensors)):
            if len(_PREPARED) >= _PREPARED_KEPT:
                del _PREPARED[next(iter(_PREPARED))]
            _PREPARED[key] = call
    call.projections(*call.arguments)
    return _measure(library, portable, call.deviations)


@dataclass(frozen=True)
class _Prepared:
    """One set of product checks as the kernel is called on it: the tensors it reads (held, so that
    none is freed and another takes its address), the projections' arguments and the deviations'."""

    tensors: tuple[torch.Tensor, ...]
    projections: Callable[..., None]
    arguments: tuple[object, ...]
    deviations: Pairs


# The calls prepared for the last few sets of product checks, by the identities of the tensors they
# read. A traced forward checks the same tensors as the one before it (its rows are the views of a
# scratch kept between forwards, its probes kept per version of each weight), and preparing the
# call (checking and gathering some two hundred tensors' addresses and shapes) cost more than the
# kernel's arithmetic on a `small` model.
_PREPARED: dict[tuple[object, ...], _Prepared] = {}
_PREPARED_KEPT = 8


def _prepared(
    library: ctypes.CDLL,
    products: Sequence[Product],
    projected: torch.Tensor,
    recomputed: torch.Tensor,
    portable: bool,
) -> _Prepared | None:
    """The call of the kernel on `products`, checked against the shapes it reads them by; None where
    a side is not one it reads."""
    flat = _readable([t for product in products for t in product])
    if flat is None or not (projected.is_contiguous() and recomputed.is_contiguous()):
        return None
    outputs, inputs, offsets, traced, read = (flat[i::5] for i in range(5))
    count, rows = len(products), traced[0].shape[0]
    probes = outputs[0].shape[0]
    for r, w, b, y, x in zip(outputs, inputs, offsets, traced, read, strict=True):
        # the kernel reads every side by these shapes: one out of line would be read out of bounds
        if (r.shape, w.shape, b.numel(), y.shape[0], x.shape[0]) != (
            (probes, y.shape[-1]),
            (probes, x.shape[-1]),
            probes,
            rows,
            rows,
        ):
            raise ValueError("a product's probes, traced rows and read rows do not fit together")
    if projected.shape != (count, probes * rows) or recomputed.shape != projected.shape:
        raise ValueError(f"the projections need two ({count}, {probes * rows}) matrices")
    arguments = (
        count,
        rows,
        probes,
        _array(ctypes.c_void_p, [t.data_ptr() for t in traced]),
        _array(ctypes.c_int, [_BF16_FLAG[t.dtype] for t in traced]),
        _array(ctypes.c_int64, [t.shape[-1] for t in traced]),
        _array(ctypes.c_void_p, [r.data_ptr() for r in outputs]),
        _array(ctypes.c_void_p, [x.data_ptr() for x in read]),
        _array(ctypes.c_int, [_BF16_FLAG[x.dtype] for x in read]),
        _array(ctypes.c_int64, [x.shape[-1] for x in read]),
        _array(ctypes.c_void_p, [w.data_ptr() for w in inputs]),
        _array(ctypes.c_void_p, [b.data_ptr() for b in offsets]),
        projected.data_ptr(),
        recomputed.data_ptr(),
    )
    width = probes * rows
    step = width * projected.element_size()
    sides = [projected.data_ptr() + p * step for p in range(count)]
    again = [recomputed.data_ptr() + p * step for p in range(count)]
    return _Prepared(
        (*flat, projected, recomputed),
        library.gs_projections_portable if portable else library.gs_projections,
        arguments,
        _pairs(sides, [0] * count, again, [0] * count, [width] * count),
    )
