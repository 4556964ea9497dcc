"""A trace site's statistics on the CPU in one pass, by a small C kernel built on first use.

    row = host_site_stats(x)   # float64 (9,) like stats.site_stats, or None: use the torch ops

Why C: on a CPU the torch-op statistics (stack/trace/stats.py) cost the traced forward of a
small model about as much as the forward itself (bench-trace said 1.65× and more): each site
takes a dozen ops, every one a pass over the activation with its own temporaries, thread fork
and dispatch, and a forward has about a hundred sites. host_stats.c reads each element once,
sums short runs in float32 lanes and everything longer in float64, with a std as exact as a
two-pass one (its header says how and how close), and gives the same bits for the same values
whatever the layout or the number of threads.

Built on first use by the system C compiler and cached (stack.kernels.host_build says how and
why), with OpenMP where torch runs on it: the kernel's `omp parallel` then runs on torch's own
thread pool, with torch.get_num_threads() threads. One build serves every x86-64 CPU: the AVX-512
path, else the AVX2 one, is chosen at load time (`SPANS`).

Where it cannot help, `host_site_stats` says so with None and the torch ops compute the same
statistics: a float64 site (its precision is the torch path's to keep, as on CUDA), a site
with a NaN or an Inf (the kernel sees them in its sums, as it sees elements beyond about 1e19,
whose float32 squares overflow; the torch path counts them), or no working compiler.
`engine()` names what runs, for the benchmark's record.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

import torch

from stack.kernels.host_build import loaded

SOURCE = Path(__file__).with_name("host_stats.c")
STATS_LEN = 9  # mean, std, min, max, absmax, nan, inf, zero, l1 (stack.trace.stats.DEVICE_STATS)
# The kernel's paths by the instruction sets they use, best first: the names gs_site_stats_* take.
SPANS = ("avx512", "avx2", "portable")
# gs_site_stats_*(span, x, rows, cols, stride, threads, out, at, count, width, dst): the statistics by
# the named path (None: the best this CPU runs), and the `count` token rows `at` of `width` elements
# copied into dst (count 0: none)
_ARGS = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
_ARGS += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
_NO_ROWS = (None, 0, 0, None)


def declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """`library` with its functions' signatures declared."""
    for function in (library.gs_site_stats_f32, library.gs_site_stats_bf16):
        function.argtypes, function.restype = _ARGS, ctypes.c_int
    library.gs_site_stats_runs.argtypes, library.gs_site_stats_runs.restype = [ctypes.c_char_p], ctypes.c_int
    library.gs_site_stats_build.argtypes, library.gs_site_stats_build.restype = [], ctypes.c_char_p
    return library


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The loaded kernel, or why there is none (the torch ops then compute every site)."""
    return loaded(SOURCE, declare, openmp=True)


def engine() -> str:
    """What computes a float32 site's statistics on this CPU, e.g. `c (avx512 openmp)`, or
    `torch (<why not C>)`."""
    library = _library()
    if isinstance(library, str):
        return f"torch ({library})"
    return f"c ({library.gs_site_stats_build().decode()})"


def spans() -> list[str]:
    """The kernel's paths this CPU runs (of SPANS), best first; none without the kernel."""
    library = _library()
    if isinstance(library, str):
        return []
    return [span for span in SPANS if library.gs_site_stats_runs(span.encode())]


def rows_of(x: torch.Tensor) -> tuple[int, int, int] | None:
    """(rows, cols, row stride) when x is rows of contiguous elements at a fixed stride, as a
    contiguous tensor or a slice of a fused projection's last dimension is; None otherwise."""
    if x.is_contiguous():
        return 1, x.numel(), x.numel()
    if x.dim() < 2 or x.stride(-1) != 1:
        return None
    for outer in range(x.dim() - 2):  # the leading dimensions must flatten to one
        if x.stride(outer) != x.stride(outer + 1) * x.size(outer + 1):
            return None
    return x.numel() // x.size(-1), x.size(-1), x.stride(-2)


@functools.cache
def _entry_points(library: ctypes.CDLL) -> dict[torch.dtype, Callable[..., int]]:
    """The library's statistics function per site dtype: looked up once per library, not once per
    site (a traced forward calls `host_site_stats` for every site)."""
    return {torch.float32: library.gs_site_stats_f32, torch.bfloat16: library.gs_site_stats_bf16}


def host_site_stats(
    tensor: torch.Tensor,
    *,
    threads: int | None = None,
    span: str | None = None,
    out: torch.Tensor | None = None,
    rows: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """float64 (9,) statistics of a non-empty CPU float32/bf16/fp16 tensor, or None where the
    torch ops must compute them (see the module docstring). `threads` defaults to torch's;
    `span`, one of `spans()`, runs that path of the kernel instead of the best (the tests hold
    each to the others and to the same reference).
    `out`, a contiguous float64 (9,) CPU tensor, receives the row (and is returned) instead of a
    new one: a traced forward hands each site a row of one matrix made before the forward (see
    stack.trace.scratch on why a forward keeps no allocation of its own past a site).
    A float32 or bfloat16 site is read where it lies, in its own dtype; an fp16 one (rare on a
    CPU) is widened to a float32 copy first.

    `rows`, (at, into): rows `at` (int64, contiguous) of the tensor seen as (-1, width) rows are
    copied into the contiguous (len(at), width) `into` of its dtype, whatever is returned: a traced
    forward copies a few rows of most sites for GATE-TRACE-002's identities, and one visit of the
    library that reads the site costs a fraction of a torch.index_select, whose dispatch runs cold
    between the forward's products (the interpreter's and the dispatcher's data evicted by them)."""
    library = _library() if tensor.is_cpu else "not on the host"
    if isinstance(library, str) or tensor.dtype == torch.float64:
        if rows is not None:
            copy_rows(tensor, *rows)
        return None
    if span is not None and span not in spans():
        raise ValueError(f"this CPU runs the statistics kernel's paths {spans()}, not {span!r}")
    functions = _entry_points(library)
    x, function = tensor, functions.get(tensor.dtype)
    if function is None:  # fp16: read from a float32 copy
        x, function = tensor.detach().float(), functions[torch.float32]
    layout = rows_of(x)
    if layout is None:
        x = x.contiguous()
        layout = 1, x.numel(), x.numel()
    if out is None:
        out = torch.empty(STATS_LEN, dtype=torch.float64)
    gather = _NO_ROWS
    if rows is not None and x.dtype == tensor.dtype:  # the kernel copies them as it reads the site
        at, into = rows
        gather = at.data_ptr(), at.numel(), x.shape[-1], into.data_ptr()
    elif rows is not None:
        copy_rows(tensor, *rows)
    count = torch.get_num_threads() if threads is None else threads
    found = function(span and span.encode(), x.data_ptr(), *layout, count, out.data_ptr(), *gather)
    return None if found != 0 else out  # non-zero: a non-finite sum, which the torch path counts


def copy_rows(tensor: torch.Tensor, at: torch.Tensor, into: torch.Tensor) -> None:
    """Rows `at` of `tensor` seen as (-1, width) rows, copied into `into` by torch (any device)."""
    torch.index_select(tensor.reshape(-1, tensor.shape[-1]), 0, at, out=into)
