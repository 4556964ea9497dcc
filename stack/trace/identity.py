"""The bit-for-bit identities of the tools that look inside a model.

Every such tool has a setting at which it must reproduce the model exactly: a lens whose
probes are zero, a patch of a run with its own activations, a patch of the whole stream. At
that setting nothing may differ, not even by rounding, so the comparison counts differing
elements instead of measuring a distance against a tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from contracts.gates import Outcome, measure


def exact_outcome(
    gate_id: str, got: torch.Tensor, want: torch.Tensor, holds: str, also: Mapping[str, Any] | None = None
) -> Outcome:
    """`gate_id`'s outcome for tensors that must be equal element for element (shape and dtype too).

    `also` adds measured values the gate's judge reads besides the comparison.
    """
    same_kind = got.shape == want.shape and got.dtype == want.dtype
    differing = int((got != want).sum().item()) if same_kind else want.numel()
    measured = {**(also or {}), "differing_elements": differing, "elements": want.numel()}
    return measure(gate_id, measured, holds=holds)
