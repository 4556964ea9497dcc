"""Whether a changed model still predicts what the original does: KL of next-token distributions.

Weight error alone misled others: it does not say which errors the model is sensitive to. So the
two models read the same held-out windows (stack.export.sample: the checkpoint's held-out split
when reachable, else --sample-text, else a fixed text) and at every position the KL divergence
KL(original ‖ changed) of their next-token distributions is taken, in float64; GATE-HQQ-002
bounds its mean.
"""

from __future__ import annotations

from typing import Any

import torch

from contracts.gates import gate_ensure, measure
from stack.model.gpt import GPT


@gate_ensure(
    "GATE-HQQ-002",
    lambda result: measure(
        "GATE-HQQ-002", result, holds="the quantised model predicts what the original does"
    ),
)
@torch.no_grad()
def heldout_agreement(original: GPT, changed: GPT, windows: torch.Tensor) -> dict[str, Any]:
    """Mean and largest KL(original ‖ changed) over every position of `windows` (batch, time)."""
    p = original(windows)[0].double().log_softmax(-1)
    q = changed(windows)[0].double().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return {"mean_kl_nats": float(kl.mean()), "max_kl_nats": float(kl.max()), "positions": kl.numel()}
