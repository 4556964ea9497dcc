"""contracts.site_statistics.statistics_of: many tensors' statistics at once, each its own.

A traced forward computes the definitions of every sampled slice together (one segmented
reduction per statistic); a segment that leaked into its neighbour would move a slice's
statistics, and the check of the fused kernel against them would judge the wrong numbers."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.site_statistics import statistics, statistics_of

VALUES = st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf")])


def _same(a: list[float], b: list[float]) -> bool:
    return all(
        (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
        for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=80)
@given(
    st.lists(st.lists(VALUES, max_size=9), min_size=1, max_size=6),
    st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_each_tensors_statistics_together_are_its_own(parts: list[list[float]], dtype: torch.dtype) -> None:
    tensors = [torch.tensor(p, dtype=torch.float64).to(dtype) for p in parts]
    together = statistics_of(tensors).tolist()
    for row, tensor in zip(together, tensors, strict=True):
        x = tensor.double()
        alone = statistics(tensor).tolist()
        assert _same(row, alone)
        if x.numel() and bool(x.isfinite().all()):
            assert row[0] == x.numel() and row[3] == x.min().item() and row[4] == x.max().item()
            assert math.isclose(row[2], x.std(unbiased=False).item(), rel_tol=1e-9, abs_tol=1e-9)
        if not x.numel():
            assert row == [0.0] * len(row)
