"""How far an artefact's logits are from the stack's, computed from the two tensors themselves.

An export's parity gates (GATE-EXPORT-001 and -002, GATE-LORA-007) hold a runtime's logits to the
stack's within an absolute tolerance on the largest difference. The stack's own comparison
(stack.export.parity.compare_logits) states that number; a comparison that stated the mean
difference instead would state 2.1e-08 for an fp32 graph 3.6e-07 off and 0.0013 for an int8 graph
0.04 off, and gates that judged only the number the code under test computed would all pass. The gates' check
tensors judge the numbers computed here, apart from the stack, from the same two tensors the
comparison was handed, and hold the stated numbers to them.
"""

from __future__ import annotations

import hashlib

import torch


def max_abs_difference(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max |candidate − reference| over every logit, in float64; inf when the shapes differ, nan when
    a candidate logit is not finite (no tolerance admits either)."""
    if candidate.shape != reference.shape:
        return float("inf")
    if not bool(candidate.isfinite().all()):
        return float("nan")
    return float((candidate.double() - reference.double()).abs().max())


def argmax_agreement(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """The fraction of positions (every axis but the last) whose largest candidate logit is the
    reference's; 0 when the shapes differ."""
    if candidate.shape != reference.shape:
        return 0.0
    same = candidate.argmax(-1) == reference.argmax(-1)
    return int(same.sum()) / same.numel()


def logits_sha256(logits: torch.Tensor) -> str:
    """sha256 of a logits tensor's dtype, shape and float32 bytes: which tensors a stated number is of."""
    data = logits.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(f"{data.dtype}:{tuple(data.shape)}\0".encode())
    digest.update(data.reshape(-1).numpy().tobytes())
    return digest.hexdigest()
