"""A trace site's statistics in two Triton launches: block partials, then one merge.

    row = site_stats_fused(x)   # float64 (9,): mean, std, min, max, absmax, nan, inf, zero, l1

On a GPU the tracer's cost is not arithmetic but launches: the torch-op statistics
(stack/trace/stats.py) take about fifteen small kernels per site, and a traced forward has
hundreds of sites. Here the first kernel reads every element once and writes, per block of
BLOCK elements, the partial statistics (count of finite-or-not elements, sum, the block's sum of
squared deviations from its own mean, min, max, NaN, Inf and zero counts, and the sum of |x| in
float64); the second, one program, merges the blocks with Chan's pairwise update for the
variance, so the std is as stable as a two-pass one, and writes the row.

Conventions are the tracer's (docs/trace.md): population std; a NaN anywhere makes mean, std,
min, max and absmax NaN; an Inf makes the mean infinite (or NaN for +Inf and -Inf) and the std
NaN. Every sum runs in float64 (l1 included, so one ulp in one element still moves it). A float64
site is left to the torch path, which keeps its precision. The float64 reference test holds both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048  # elements per program of the partials kernel
MERGE_BLOCK = 1024  # partial rows the merge program reads per step
PARTIALS = 9  # count, sum, m2, min, max, nan, inf, zero, l1 per block


@triton.jit
def _partials(X, P, n, BLOCK: tl.constexpr):
    """One block's partial statistics into row program_id of P (float64)."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    valid = offsets < n
    # Upcast right after the load: bf16/fp16 sites (and Triton's interpreter, which computes
    # them wrongly otherwise) are summed as float64, memory-bound either way.
    x = tl.load(X + offsets, mask=valid, other=0.0).to(tl.float64)
    count = tl.sum(valid.to(tl.float64))
    is_nan = (x != x) & valid
    is_inf = (tl.abs(x) == float("inf")) & valid
    total = tl.sum(tl.where(valid, x, 0.0))
    deviation = tl.where(valid, x - total / count, 0.0)
    low = tl.min(tl.where(valid & ~is_nan, x, float("inf")))
    high = tl.max(tl.where(valid & ~is_nan, x, float("-inf")))
    row = P + tl.program_id(0).to(tl.int64) * 9
    tl.store(row + 0, count)
    tl.store(row + 1, total)
    tl.store(row + 2, tl.sum(deviation * deviation))
    tl.store(row + 3, low)
    tl.store(row + 4, high)
    tl.store(row + 5, tl.sum(is_nan.to(tl.float64)))
    tl.store(row + 6, tl.sum(is_inf.to(tl.float64)))
    tl.store(row + 7, tl.sum(((x == 0.0) & valid).to(tl.float64)))
    tl.store(row + 8, tl.sum(tl.where(valid, tl.abs(x), 0.0)))


@triton.jit
def _merge(P, OUT, blocks, n, MERGE_BLOCK: tl.constexpr):
    """Every block's partials into the site's row: sums add, m2 merges by Chan's update."""
    total = tl.zeros([MERGE_BLOCK], tl.float64)
    count = tl.zeros([MERGE_BLOCK], tl.float64)
    low = tl.full([MERGE_BLOCK], float("inf"), tl.float64)
    high = tl.full([MERGE_BLOCK], float("-inf"), tl.float64)
    nans = tl.zeros([MERGE_BLOCK], tl.float64)
    infs = tl.zeros([MERGE_BLOCK], tl.float64)
    zeros = tl.zeros([MERGE_BLOCK], tl.float64)
    l1 = tl.zeros([MERGE_BLOCK], tl.float64)
    for start in range(0, blocks, MERGE_BLOCK):
        rows = start + tl.arange(0, MERGE_BLOCK)
        valid = rows < blocks
        count += tl.load(P + rows * 9 + 0, mask=valid, other=0.0)
        total += tl.load(P + rows * 9 + 1, mask=valid, other=0.0)
        low = tl.minimum(low, tl.load(P + rows * 9 + 3, mask=valid, other=float("inf")))
        high = tl.maximum(high, tl.load(P + rows * 9 + 4, mask=valid, other=float("-inf")))
        nans += tl.load(P + rows * 9 + 5, mask=valid, other=0.0)
        infs += tl.load(P + rows * 9 + 6, mask=valid, other=0.0)
        zeros += tl.load(P + rows * 9 + 7, mask=valid, other=0.0)
        l1 += tl.load(P + rows * 9 + 8, mask=valid, other=0.0)
    n_all = tl.sum(count)
    mean = tl.sum(total) / n_all
    # Chan: M2 = sum of the blocks' M2 + sum of count_b * (mean_b - mean)^2.
    m2 = tl.zeros([MERGE_BLOCK], tl.float64)
    for start in range(0, blocks, MERGE_BLOCK):
        rows = start + tl.arange(0, MERGE_BLOCK)
        valid = rows < blocks
        c = tl.load(P + rows * 9 + 0, mask=valid, other=1.0)
        block_mean = tl.load(P + rows * 9 + 1, mask=valid, other=0.0) / c
        shift = tl.where(valid, block_mean - mean, 0.0)
        m2 += tl.load(P + rows * 9 + 2, mask=valid, other=0.0) + tl.where(valid, c * shift * shift, 0.0)
    std = tl.sqrt(tl.sum(m2) / n_all)
    lo, hi = tl.min(low), tl.max(high)
    n_nan, n_inf = tl.sum(nans), tl.sum(infs)
    nan = float("nan")
    tl.store(OUT + 0, tl.where(n_nan > 0, nan, mean))
    tl.store(OUT + 1, tl.where(n_nan + n_inf > 0, nan, std))
    tl.store(OUT + 2, tl.where(n_nan > 0, nan, lo))
    tl.store(OUT + 3, tl.where(n_nan > 0, nan, hi))
    tl.store(OUT + 4, tl.where(n_nan > 0, nan, tl.maximum(-lo, hi)))
    tl.store(OUT + 5, n_nan)
    tl.store(OUT + 6, n_inf)
    tl.store(OUT + 7, tl.sum(zeros))
    tl.store(OUT + 8, tl.sum(l1))


def site_stats_fused(tensor: torch.Tensor) -> torch.Tensor:
    """The site's statistics as float64 (9,) on its device, in two launches, with no host read."""
    x = tensor.detach().reshape(-1)
    if not x.is_contiguous():
        x = x.contiguous()
    n = x.numel()
    if n == 0:
        return torch.zeros(PARTIALS, dtype=torch.float64, device=x.device)
    blocks = triton.cdiv(n, BLOCK)
    partials = torch.empty(blocks, PARTIALS, dtype=torch.float64, device=x.device)
    out = torch.empty(PARTIALS, dtype=torch.float64, device=x.device)
    _partials[(blocks,)](x, partials, n, BLOCK=BLOCK)
    _merge[(1,)](partials, out, blocks, n, MERGE_BLOCK=MERGE_BLOCK)
    return out
