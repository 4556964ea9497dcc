"""LASER: a matrix replaced by its rank-k truncation, k the fraction ρ of its singular values kept.

The SVD is exact: `torch.linalg.svd` of the matrix in float64 (LAPACK, full spectrum), which at
these sizes (a few hundred rows) costs milliseconds; no randomised or iterative approximation
is used, so the error of the truncation is what Eckart–Young says it is, the norm of the
singular values dropped (GATE-LASER-002). The truncation is recomposed in float64 and stored in
the matrix's own dtype.

ρ = 1 keeps every singular value, and then the matrix is returned as it is, bit for bit: U·S·Vᵀ
recomposed would move every weight by rounding (GATE-LASER-001). Before any matrix is cut, each
target goes through `truncate` at ρ = 1 and must come back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.truncation import rank_kept
from stack.model.targets import Target


@dataclass(frozen=True)
class Truncation:
    """One matrix cut to `kept` of its `rank` singular values, and the norm of those it dropped."""

    site: str
    weight: torch.Tensor
    rank: int
    kept: int
    discarded_norm: float


def low_rank(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int) -> torch.Tensor:
    """U·S·Vᵀ over the k largest singular values (torch.linalg.svd sorts them descending)."""
    return (u[:, :k] * s[:k]) @ vh[:k]


def truncate(weight: torch.Tensor, rho: float) -> tuple[torch.Tensor, int, float]:
    """The rank-⌈ρ·r⌉ truncation of `weight` (r = min of its dimensions), how many values it kept,
    and the norm of the singular values it dropped; the matrix itself, copied, when it drops none."""
    rank = min(weight.shape)
    kept = rank_kept(rank, rho)
    if kept == rank:
        return weight.detach().clone(), kept, 0.0
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    discarded = float(s[kept:].square().sum().sqrt())
    return low_rank(u, s, vh, kept).to(weight.dtype), kept, discarded


def identity_outcome(targets: list[Target]) -> Outcome:
    """GATE-LASER-001: every target truncated at ρ = 1 comes back unchanged, element for element."""
    differing = elements = 0
    for target in targets:
        same = truncate(target.weight, 1.0)[0]
        differing += int((same != target.weight).sum()) if same.shape == target.weight.shape else same.numel()
        elements += target.weight.numel()
    measured = {"differing_elements": differing, "elements": elements, "matrices": [t.site for t in targets]}
    return measure("GATE-LASER-001", measured, holds="LASER at ρ = 1 leaves every target unchanged")


def spectrum_outcome(targets: list[Target], cuts: list[Truncation], rho: float) -> Outcome:
    """GATE-LASER-002: per target, ‖W − W_k‖_F (of W_k as stored) against the discarded values' norm,
    and the values kept against ρ and the rank."""
    rows = []
    for target, cut in zip(targets, cuts, strict=True):
        original = target.weight.detach().double()
        rows.append(
            {
                "matrix": cut.site,
                "rank": cut.rank,
                "kept": cut.kept,
                "error": float(torch.linalg.matrix_norm(original - cut.weight.double())),
                "discarded_norm": cut.discarded_norm,
                "norm": float(torch.linalg.matrix_norm(original)),
            }
        )
    measured = {"rho": rho, "matrices": rows}
    return measure("GATE-LASER-002", measured, holds="each error is the discarded values' norm")


@gate_require("GATE-LASER-001", lambda targets: identity_outcome(targets))
@gate_ensure("GATE-LASER-002", lambda targets, rho, result: spectrum_outcome(targets, result, rho))
@torch.no_grad()
def laser(
    targets: list[Target], rho: float, reached: Callable[[int, int], None] = lambda _done, _total: None
) -> list[Truncation]:
    """The rank-ρ truncation of every target; the model is not changed (`changes.write_weights` does).
    `reached(done, total)` after each matrix: an exact float64 SVD of a large model's 85 matrices
    takes minutes on a CPU."""
    cuts = []
    for target in targets:
        weight, kept, discarded = truncate(target.weight, rho)
        cuts.append(Truncation(target.site, weight, min(target.weight.shape), kept, discarded))
        reached(len(cuts), len(targets))
    return cuts
