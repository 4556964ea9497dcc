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

from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.model.gpt import GPT
from stack.tune.frozen import weights_sha256


@gate_ensure(
    "GATE-HQQ-002",
    lambda result: measure(
        "GATE-HQQ-002", result, holds="the quantised model predicts what the original does"
    ),
)
@torch.no_grad()
def heldout_agreement(original: GPT, changed: GPT, windows: torch.Tensor) -> dict[str, Any]:
    """Mean and largest KL(original ‖ changed) over every position of `windows` (batch, time), and
    the sha256 of the changed model's weights as compared (`check_compared` holds it to what is
    written)."""
    p = original(windows)[0].double().log_softmax(-1)
    q = changed(windows)[0].double().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return {
        "mean_kl_nats": float(kl.mean()),
        "max_kl_nats": float(kl.max()),
        "positions": kl.numel(),
        "model_sha256": weights_sha256(changed),
    }


def _compared_outcome(compared: str, written: GPT) -> Outcome:
    measured = {"compared_sha256": compared, "written_sha256": weights_sha256(written)}
    return measure("GATE-HQQ-002", measured, holds="the model compared is the model written")


@gate_require("GATE-HQQ-002", _compared_outcome)
def check_compared(compared: str, written: GPT) -> None:
    """Refuse to write a model other than the one the agreement was measured on: measured before
    the weights changed, the KL is 0 whatever the quantiser did."""
