"""Round-to-nearest on the min-max grid: the baseline GATE-HQQ-001 holds a quantiser to; and what
a grid of 2^bits levels per group is, which the weights a quantiser writes must lie on.

It lives in the contracts, apart from the quantiser's own grid (stack.surgery.hqq), because a
baseline computed on the grid under test shares its bugs: a grid one level short makes HQQ's error
and the baseline's worse alike, and HQQ still beats "round-to-nearest". The arithmetic is written
in the same order as the stack's min-max grid (s·(q − z), z = −min/s), so a correct quantiser that
keeps RTN's zero-point matches this baseline bit for bit. A quantiser whose zero-points go one
per weight instead of one per group writes "4-bit" matrices with 32 distinct values in each group
of 32 and beats round-to-nearest all the same: GATE-HQQ-001's check grid counts the distinct
values of each group of the weights written (`most_levels`) and dequantises the quantiser's codes
(`dequantise`) to compare with them.
"""

from __future__ import annotations

import torch


def rtn_baseline(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """`weight` rounded to the nearest of 2^bits evenly spaced levels spanning each group of `group`
    consecutive weights (min to max), dequantised, in float64 and the weight's shape."""
    w = weight.detach().double().reshape(-1, group)
    low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    top = 2**bits - 1
    scale = (high - low) / top
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = -low / scale
    levels = torch.clamp(torch.round(w / scale + zero), 0, top)
    return (scale * (levels - zero)).reshape(weight.shape)


def dequantise(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """s·(q − z) of integer codes (groups, group) on a grid of one scale and one zero-point per group
    ((groups, 1) each), in float64, in the same order as the quantiser's dequantisation."""
    return scale.double() * (codes.double() - zero.double())


def most_levels(weight: torch.Tensor, group: int) -> int:
    """The most distinct values any group of `group` consecutive weights of `weight` holds (a group
    on a grid of 2^bits levels holds at most 2^bits)."""
    w = weight.detach().double().reshape(-1, group).sort(dim=1).values
    return int(((w[:, 1:] != w[:, :-1]).sum(dim=1) + 1).max()) if w.numel() else 0
