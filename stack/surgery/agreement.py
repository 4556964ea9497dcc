"""Whether a changed model still predicts what the original does: KL of next-token distributions.

Weight error alone misled others: it does not say which errors the model is sensitive to. So the
two models read the same held-out windows (stack.export.sample: the checkpoint's held-out split
when reachable, else --sample-text, else a fixed text) and at every position the KL divergence
KL(original ‖ changed) of their next-token distributions is taken, in float64; GATE-HQQ-002
bounds its mean, and holds it to the same KL taken by the contracts' kl_div (contracts.divergence)
from the same logits: a KL taken the other way round is another number.
"""

from __future__ import annotations

from typing import Any

import torch

from contracts.divergence import mean_kl
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.model.gpt import GPT
from stack.tune.frozen import weights_sha256


def position_kl(original_logits: torch.Tensor, changed_logits: torch.Tensor) -> torch.Tensor:
    """KL(original ‖ changed) in nats at every position, in float64."""
    p, q = original_logits.double().log_softmax(-1), changed_logits.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


@gate_ensure(
    "GATE-HQQ-002",
    lambda result: measure(
        "GATE-HQQ-002", result, holds="the quantised model predicts what the original does"
    ),
)
@torch.no_grad()
def heldout_agreement(original: GPT, changed: GPT, windows: torch.Tensor) -> dict[str, Any]:
    """Mean and largest KL(original ‖ changed) over every position of `windows` (batch, time), and
    the sha256 of the changed and the original model's weights as compared (`check_compared` holds
    the one to what is written, `check_reference` the other to the source's weights as read)."""
    original_logits, changed_logits = original(windows)[0], changed(windows)[0]
    kl = position_kl(original_logits, changed_logits)
    return {
        "mean_kl_nats": float(kl.mean()),
        "max_kl_nats": float(kl.max()),
        "positions": kl.numel(),
        "model_sha256": weights_sha256(changed),
        # the weights of the model whose forward gave the reference logits (check reference)
        "original_sha256": weights_sha256(original),
        # the same KL(original ‖ changed) by the contracts' kl_div, from the same logits (check recomputed)
        "mean_kl_recomputed": mean_kl(original_logits, changed_logits),
    }


def _compared_outcome(compared: str, written: GPT) -> Outcome:
    measured = {"compared_sha256": compared, "written_sha256": weights_sha256(written)}
    return measure("GATE-HQQ-002", measured, holds="the model compared is the model written")


@gate_require("GATE-HQQ-002", _compared_outcome)
def check_compared(compared: str, written: GPT) -> None:
    """Refuse to write a model other than the one the agreement was measured on: measured before
    the weights changed, the KL is 0 whatever the quantiser did."""


def _reference_outcome(agreement: dict[str, Any], source_sha256: str) -> Outcome:
    measured = {
        "reference_sha256": agreement["original_sha256"],
        "source_sha256": source_sha256,
        "quantised_sha256": agreement["model_sha256"],
    }
    return measure("GATE-HQQ-002", measured, holds="the agreement's reference is the source as read")


@gate_require("GATE-HQQ-002", _reference_outcome)
def check_reference(agreement: dict[str, Any], source_sha256: str) -> None:
    """Refuse an agreement whose reference side is not the source's weights as read (`source_sha256`,
    taken before quantising) or is the quantised model itself: the KL of a model with itself is 0
    whatever the quantiser did."""
