"""The statistics of one site, computed on the tensor's device without a host sync.

`site_stats` turns a tensor into one float64 vector (the STATS after `count`), built from a few
reductions and never read back: the tracer stacks the vectors of a whole forward and moves
them to the host once. `count` comes from the shape, so it needs no reduction at all.

Conventions (documented in docs/trace.md): std is the population std, computed so that a large
mean does not cancel it away (two passes here; blocks summed around one of their own elements
in the C kernel); mean, std, min, max, absmax and l1_fp64 are over all elements,
so a NaN anywhere makes them NaN (IEEE, on purpose: a NaN must not hide behind a finite mean);
nan and inf count the non-finite elements; zero counts exact zeros. l1_fp64 is the sum of |x|
accumulated in float64 (the CPU kernel adds runs of 16 elements in float32 first): a
fingerprint that two traces of bit-identical activations share.

Counting NaN and Inf costs two of the most expensive passes, and almost always finds none.
min and max already tell: a NaN makes both NaN, an Inf makes one of them infinite. For a tensor
on the host (CPU) reading that answer is free, so the counts are skipped when it says finite.
On an accelerator, reading it would synchronise the device, so there they are always counted.

The torch ops below are the reference path; two fused kernels stand in for them where the ops'
overhead, not their arithmetic, is the cost, and compute the same statistics under the same
conventions. On a CUDA device a site that is not float64 goes to a Triton launch
(stack/kernels/site_stats.py) instead of about fifteen small ones, which reads it in its own
layout and copies the rows GATE-TRACE-002's checks read; the traced forward's sites are merged
into their rows of its matrix by one more launch after it (`finish`).
On the CPU a float32 (or bf16/fp16) site goes to a C kernel that reads each element once
(stack/kernels/host_stats.py) instead of a dozen passes with their temporaries; it hands back to
the torch ops a site with a NaN or an Inf, which they count, and every site when no C compiler
was found.

A site may be empty: an expert that no token was routed to sees zero rows. Its statistics are
all zero (count 0), not NaN, since nothing was computed and nothing went wrong.
"""

from __future__ import annotations

import torch

from contracts.site_statistics import on_host
from stack.kernels.host_stats import copy_rows, host_site_stats
from stack.trace.sites import STATS

DEVICE_STATS = STATS[1:]  # what the vector holds, in order


def site_stats(
    tensor: torch.Tensor,
    out: torch.Tensor | None = None,
    rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    pending: list | None = None,
) -> torch.Tensor:
    """(len(DEVICE_STATS),) float64 on tensor's device: mean, std, min, max, absmax, nan, inf, zero,
    l1; written into `out` (a contiguous float64 row on that device) and returned when it is given.
    `rows`, (at, into): rows `at` of the tensor seen as (-1, width) rows are copied into `into` as
    well, in the C kernel's visit of the site where it runs (host_site_stats says why). `pending`,
    a list a traced forward keeps: where the CUDA kernels queue the site's merge, so that `out` is
    written when `finish(pending)` merges the forward's sites together."""
    if fused(tensor):
        from stack.kernels.site_stats import site_stats_fused  # triton: imported only where it runs

        return _written(site_stats_fused(tensor, out=out, rows=rows, pending=pending), out)  # copies rows
    if on_host(tensor) and tensor.numel():
        row = host_site_stats(tensor, out=out, rows=rows)  # copies the rows in every case
        if row is not None:  # the C kernel's: written into `out` when it is given
            return row
    elif rows is not None:
        copy_rows(tensor, *rows)
    return _written(_by_ops(tensor), out)


def _written(row: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """`row`, or `out` with `row` written into it when it is given."""
    return row if out is None or row is out else out.copy_(row)


def finish(pending: list) -> None:
    """The merges `site_stats` queued in `pending`, launched together; `pending` is emptied."""
    if pending:
        from stack.kernels.site_stats import merge_all  # triton: imported only where it runs

        merge_all(pending)
        pending.clear()


def fused(tensor: torch.Tensor) -> bool:
    """Whether the Triton kernels compute `tensor`'s statistics: a CUDA site that is not float64
    (whose precision is the torch ops' to keep). A test routes a CPU site here too, where Triton's
    interpreter runs the same kernels."""
    return tensor.is_cuda and tensor.dtype != torch.float64


def _by_ops(tensor: torch.Tensor) -> torch.Tensor:
    """The row by torch's ops: the reference path, and where neither fused kernel reads the site."""
    x = tensor.detach().reshape(-1)
    # bf16/fp16 would lose the sums; fp32 keeps them, and its reductions are the fast ones on CPU.
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    n = x.numel()
    if n == 0:
        return torch.zeros(len(DEVICE_STATS), dtype=torch.float64, device=x.device)
    mean, std = _moments(x)
    low, high = torch.aminmax(x)
    # On the host one read says whether there is anything to count: min and max finite prove no
    # NaN and no Inf. A finite std with them is the common case; an infinite one over finite
    # elements is float32 squares overflowing (elements beyond ~1e19), taken again in float64.
    nothing_to_count = torch.zeros(2, dtype=torch.int64, device=x.device)
    if on_host(x) and bool(low.isfinite() & high.isfinite() & std.isfinite()):
        nonfinite = nothing_to_count
    elif on_host(x) and x.dtype != torch.float64 and bool(low.isfinite() & high.isfinite()):
        mean, std = _moments(x.double())
        nonfinite = nothing_to_count
    else:
        nonfinite = torch.stack([torch.count_nonzero(x.isnan()), torch.count_nonzero(x.isinf())])
    # A copy, never x itself: for an fp64 site .double() would return x, and abs_ would edit the model.
    l1 = x.to(torch.float64, copy=True).abs_().sum()
    moments = torch.stack([mean, std, low, high, torch.maximum(-low, high)]).double()
    counts = torch.cat([nonfinite, (n - torch.count_nonzero(x)).view(1)]).double()
    return torch.cat([moments, counts, l1.view(1)])


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the population std of the flat `x`, in its dtype, the std two-pass."""
    mean = x.sum() / x.numel()
    centered = x - mean
    return mean, (torch.dot(centered, centered) / x.numel()).sqrt()


def as_dict(count: int, row: list[float]) -> dict[str, float]:
    """One host-side row of the statistics matrix as {statistic: value}, count included."""
    return {"count": float(count), **dict(zip(DEVICE_STATS, row, strict=True))}
