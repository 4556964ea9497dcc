"""The factor a LoRA adapter's term is scaled by, from the settings its adapter states.

A LoRA layer adds s·B·A·x to its base's output, with s = alpha / r (Hu et al. 2021), or
s = alpha / √r under rank-stabilised LoRA (Kalajdzievski 2023). An adapter directory or a peft
file states r, alpha and whether rsLoRA is on; the wrappers a load builds must scale by the s
those settings give, or the loaded model computes another function than the one trained (an
rsLoRA adapter applied at alpha / r, half its update, merged and
"verified" against the equally mis-scaled unmerged model). Written here apart from the stack's
wrapper (stack.model.lora.LoRALinear) so one slip cannot move both.
"""

from __future__ import annotations

import math


def lora_scale(r: int, alpha: float, rslora: bool) -> float:
    """s of an adapter of rank `r` and `alpha`: alpha / √r under rsLoRA, alpha / r otherwise."""
    return alpha / math.sqrt(r) if rslora else alpha / r
