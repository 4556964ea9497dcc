"""A trace site's statistics by their definitions, and the relations any site's statistics obey.

The trace computes a site's statistics in one fused pass (a C kernel on the CPU, Triton on CUDA,
torch ops elsewhere: stack.trace.stats), and a bug in that pass moves every site it computes
while each number still looks plausible: an absmax taken as the max reports 0.2658 for a block
output whose most negative element is −0.3240, and nothing else holds it. GATE-TRACE-002's check
`statistics` holds a sample of the trace's sites to the statistics recomputed here from the
tensor the site observed, in float64 by plain torch reductions, and every site's statistics
(and the checker every site of trace.json) to `inconsistencies`. The names are the trace's
(stack.trace.sites.STATS), which trace.json and every record keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from contracts.device_copy import sent
from contracts.evidence import plain

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


def on_host(x: torch.Tensor) -> bool:
    """Whether reading a scalar of x is free (no device to synchronise)."""
    return x.is_cpu


def by_size(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """The indices of the non-empty `tensors`, grouped by element count in the order first seen:
    the groups a batched reduction stacks as the rows of one matrix (an empty tensor's row stays 0)."""
    groups: dict[int, list[int]] = {}
    for i, tensor in enumerate(tensors):
        if tensor.numel():
            groups.setdefault(tensor.numel(), []).append(i)
    return list(groups.values())


def place_rows(out: torch.Tensor, members: list[int], rows: torch.Tensor) -> None:
    """rows[i] into out[members[i]], without waiting for out's device: indexing it with the Python
    list would copy the list there by a copy that waits for everything queued before it."""
    import torch

    out.index_copy_(0, sent(torch.tensor(members, dtype=torch.int64), out.device), rows.to(out.dtype))


# Makes an uninitialised tensor: (shape, dtype, device) -> tensor.
Empty = Callable[[tuple[int, ...], "torch.dtype", "torch.device"], "torch.Tensor"]


def statistics_of(tensors: Sequence[torch.Tensor], empty: Empty | None = None) -> torch.Tensor:
    """(len(tensors), len(STATISTICS)) float64: each tensor's `statistics`, computed together.

    The tensors of one element count are stacked as the rows of one matrix (and widened to
    float64, exactly, for the sums), and each statistic is one reduction along its rows: a traced
    forward's few dozen slices come in a few sizes (one per site width), so they cost a few dense
    reductions per size, not a dozen per slice, and each is torch's fastest for its statistic on a
    CPU (amin and amax, not aminmax; the mean and squared deviations as sums, not var_mean's
    Welford loop), several times faster there.
    Counting costs more than the rest together and almost always finds nothing: a tensor whose
    min and max are finite has no NaN (it makes both NaN) and no ±Inf (it makes one of them
    infinite), and one whose least |x| is not 0 has no zero. On the host, where reading that is
    free, it is read once for all the tensors, and when it holds they are not counted.
    `empty` makes the matrices of each size (a traced forward hands its scratch, which it keeps
    between forwards: stack.trace.scratch); by default torch.empty."""
    import torch

    device = tensors[0].device if tensors else torch.device("cpu")
    out = torch.zeros(len(tensors), len(STATISTICS), dtype=torch.float64, device=device)
    make = empty or (lambda shape, dtype, device: torch.empty(shape, dtype=dtype, device=device))
    groups = [_Rows(members, [tensors[i] for i in members], make) for members in by_size(tensors)]
    counted = True
    if groups and on_host(out):
        counted = not bool(torch.cat([group.nothing_to_count() for group in groups]).all())
    for group in groups:
        place_rows(out, group.members, group.statistics(counted))
    return out


class _Rows:
    """Tensors of one size as the rows of a matrix, with what every statistic reads.

    The rows are stacked in their own dtype, where min, max and |x| are exact, and widened to
    float64 once for the sums (mean and squared deviations; Σ|x| is summed in float64 from |x|): on
    a CPU these passes over the matrix cost most of the definitions, and a float32 pass reads half
    the bytes of a float64 one. The float64 copy then holds the deviations from the mean."""

    def __init__(self, members: list[int], tensors: list[torch.Tensor], empty: Empty) -> None:
        import torch

        rows = [tensor.detach().reshape(-1) for tensor in tensors]
        shape, dtype, device = (len(rows), rows[0].numel()), rows[0].dtype, rows[0].device
        self.members = members
        self.x = x = torch.stack(rows, out=empty(shape, dtype, device))
        self.low, self.high = x.amin(1), x.amax(1)
        self.magnitude = torch.abs(x, out=empty(shape, dtype, device))
        self.wide = empty(shape, torch.float64, device).copy_(x)

    def nothing_to_count(self) -> torch.Tensor:
        """(rows,) bool: whether a row's min and max are finite and its least |x| is not 0."""
        import torch

        return torch.isfinite(self.low) & torch.isfinite(self.high) & (self.magnitude.amin(1) > 0)

    def statistics(self, counted: bool) -> torch.Tensor:
        """(rows, len(STATISTICS)) float64: each row's `statistics`; its NaN, Inf and zero counts 0
        without counting unless `counted` (see statistics_of). Overwrites the float64 matrix."""
        import torch

        x, wide, count = self.x, self.wide, self.x.shape[1]
        mean = wide.sum(1) / count
        absmax, l1 = self.magnitude.amax(1), self.magnitude.sum(1, dtype=torch.float64)
        squares = wide.sub_(mean[:, None]).square_().sum(1)
        zeros = torch.zeros_like(mean)
        nan, inf, zero = (
            (x.isnan().sum(1), x.isinf().sum(1), (x == 0).sum(1)) if counted else (zeros, zeros, zeros)
        )
        values = [
            torch.full_like(mean, count),
            mean,
            squares.div_(count).sqrt_(),
            self.low,
            self.high,
            absmax,
            nan,
            inf,
            zero,
            l1,
        ]
        return torch.stack([value.to(torch.float64) for value in values], dim=1)


def named(row: list[float]) -> dict[str, float]:
    """One row of `statistics`, read back, as {statistic: value}."""
    return dict(zip(STATISTICS, row, strict=True))


def real(value: Any) -> float | None:
    """A statistic as a float: a number, or the strings "nan", "inf", "-inf" strict JSON keeps
    non-finite ones as; None for anything else."""
    if type(value) is float:  # nearly every statistic: a judge reads a trace's hundreds of them
        return value
    if isinstance(value, str) and value.strip().lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}:
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# Statistics as strict JSON keeps them: a non-finite float as "nan", "inf" or "-inf", as every
# measured value of a record is kept.
strict = plain


# The statistic a moment's tolerance is a multiple of: mean and std are held to the scale of the
# elements, l1_fp64 to itself.
TOLERANCE_SCALE = {"mean": "absmax", "std": "absmax", "l1_fp64": "l1_fp64"}


class NotStatistics(ValueError):
    """A statistic that is no number (`unlike` with strict=True)."""


def unlike(
    recorded: Mapping[str, Any], definitions: Mapping[str, Any], rtol: float, *, strict: bool = False
) -> list[str]:
    """The statistics of one site recorded otherwise than their definitions give (`statistics`):
    the counts, min, max and absmax exactly; mean and std within rtol × the definitions' absmax and
    l1_fp64 within rtol × itself, since a kernel sums in another order (the CPU kernel's lanes in
    float32 over short runs); NaN where NaN. A statistic that is no number on either side is
    unlike, or with `strict` raises NotStatistics (a judge's malformed measurement)."""
    off = []
    for key in STATISTICS:
        have, want = real(recorded.get(key)), real(definitions.get(key))
        if have is None or want is None:
            found = f"{key} {recorded.get(key)!r}, recomputed {definitions.get(key)!r}"
            if strict:
                raise NotStatistics(f"statistic {found}")
            off.append(found)
            continue
        if have == want or (math.isnan(have) and math.isnan(want)):
            continue
        size = real(definitions.get(TOLERANCE_SCALE.get(key, key))) or 0.0
        allowed = 0.0 if key in EXACT or not math.isfinite(want) else rtol * abs(size)
        if not abs(have - want) <= allowed:
            off.append(f"{key} {have!r}, recomputed {want!r}")
    return off


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
