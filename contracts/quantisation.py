"""Round-to-nearest on the min-max grid: the baseline GATE-HQQ-001 holds a quantiser to.

It lives in the contracts, apart from the quantiser's own grid (stack.surgery.hqq), because a
baseline computed on the grid under test shares its bugs: a grid one level short made HQQ's error
and the baseline's worse alike, and HQQ still beat "round-to-nearest". The arithmetic is written
in the same order as the stack's min-max grid (s·(q − z), z = −min/s), so a correct quantiser that
keeps RTN's zero-point matches this baseline bit for bit.
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
