"""A trace site's statistics by their definitions, and the relations any site's statistics obey.

The trace computes a site's statistics in one fused pass (a C kernel on the CPU, Triton on CUDA,
torch ops elsewhere: stack.trace.stats), and a bug in that pass moves every site it computes
while each number still looks plausible: an absmax taken as the max reported 0.2658 for a block
output whose most negative element was −0.3240, and nothing held it. GATE-TRACE-002's check
`statistics` holds a sample of the trace's sites to the statistics recomputed here from the
tensor the site observed, in float64 by plain torch reductions, and every site's statistics
(and the checker every site of trace.json) to `inconsistencies`. The names are the trace's
(stack.trace.sites.STATS), which trace.json and every record keep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the judges read this module's rules; only the recomputation needs torch
    import torch

# The statistics of a site, in the trace's order: the element count, then what its elements give.
STATISTICS = ("count", "mean", "std", "min", "max", "absmax", "nan", "inf", "zero", "l1_fp64")
# Those that are an element's value or a count: any computation of them gives the same number.
EXACT = ("count", "min", "max", "absmax", "nan", "inf", "zero")


def statistics(tensor: torch.Tensor) -> torch.Tensor:
    """The statistics of every element of `tensor`, by definition, in float64 on its device (in
    STATISTICS' order; nothing is read back, so a traced forward moves them to the host with the
    rest): the count; the mean; the population std (√ of the mean squared deviation from the mean);
    min and max; absmax, the largest |x|; the counts of NaN, of ±Inf and of exact zeros; l1_fp64,
    Σ|x|. A NaN anywhere makes the moments NaN (IEEE). An empty tensor's are all 0."""
    return statistics_of([tensor])[0]


def statistics_of(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(len(tensors), len(STATISTICS)) float64: each tensor's `statistics`, computed together. The
    tensors' elements are laid end to end in one float64 vector and each statistic is one
    segmented reduction over all of them: a traced forward's few dozen small slices cost a dozen
    reductions in all, not a dozen each."""
    import torch

    flat = [t.detach().reshape(-1).to(torch.float64) for t in tensors]
    device = flat[0].device if flat else torch.device("cpu")
    sizes = [x.numel() for x in flat]
    lengths = torch.tensor(sizes, dtype=torch.int64, device=device)
    if not any(sizes):
        return torch.zeros(len(flat), len(STATISTICS), dtype=torch.float64, device=device)
    x = flat[0] if len(flat) == 1 else torch.cat(flat)
    counts = lengths.to(torch.float64)

    def per_tensor(values: torch.Tensor, reduce: str) -> torch.Tensor:
        """One reduction per tensor (an empty one's is masked to 0 below, whatever it gives)."""
        return torch.segment_reduce(values, reduce, lengths=lengths).to(torch.float64)

    mean = per_tensor(x, "sum") / counts
    centered = x - mean.repeat_interleave(lengths)
    magnitude = x.abs()
    values = [
        counts,
        mean,
        per_tensor(centered.square_(), "sum").div(counts).sqrt(),
        per_tensor(x, "min"),
        per_tensor(x, "max"),
        per_tensor(magnitude, "max"),
        per_tensor(x.isnan().double(), "sum"),
        per_tensor(x.isinf().double(), "sum"),
        per_tensor((x == 0).double(), "sum"),
        per_tensor(magnitude, "sum"),
    ]
    return torch.stack(values, dim=1).masked_fill_((lengths == 0)[:, None], 0.0)


def named(row: list[float]) -> dict[str, float]:
    """One row of `statistics`, read back, as {statistic: value}."""
    return dict(zip(STATISTICS, row, strict=True))


def real(value: Any) -> float | None:
    """A statistic as a float: a number, or the strings "nan", "inf", "-inf" strict JSON keeps
    non-finite ones as; None for anything else."""
    if isinstance(value, str) and value.strip().lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}:
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def strict(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Statistics as strict JSON keeps them: a non-finite float as "nan", "inf" or "-inf"."""
    return {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in stats.items()}


def inconsistencies(stats: Mapping[str, Any]) -> list[str]:
    """What one site's statistics say against each other: absmax is max(−min, max) exactly (both
    NaN with a NaN), min is at most max, and the NaN, Inf and zero counts are at most the count."""
    value = {key: real(stats.get(key)) for key in STATISTICS}
    if None in value.values():
        return [f"its statistics are not {len(STATISTICS)} numbers ({', '.join(STATISTICS)})"]
    low, high, absmax = value["min"], value["max"], value["absmax"]
    problems = []
    expected = max(-low, high) if not (math.isnan(low) or math.isnan(high)) else math.nan
    if not (absmax == expected or (math.isnan(absmax) and math.isnan(expected))):
        problems.append(f"absmax {absmax!r} is not max(−min, max) = {expected!r} (min {low!r}, max {high!r})")
    if low > high:
        problems.append(f"min {low!r} exceeds max {high!r}")
    counted = [key for key in ("nan", "inf", "zero") if not 0 <= value[key] <= value["count"]]
    if counted:
        problems.append(f"{', '.join(counted)} outside 0..count {value['count']!r}")
    return problems
