"""What a lens reads at each layer: the distribution, its top tokens, entropy and KL to the final one.

Lens layer i puts the stream entering block i (through the tuned lens's probe i, if any) into
the model's own final norm and unembedding. KL(final ‖ lens) says how far that distribution is
from the model's answer, in nats per position; the model's own distribution is the last row,
at KL 0. Reading is bound to GATE-LENS-004: the model must have its final norm, and a tuned
lens must have been trained on this model; every KL reported is held to the same KL recomputed
by torch's kl_div (GATE-LENS-006).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contracts.divergence import kl_per_position
from contracts.gates import Outcome, gate_require, measure
from stack.lens.probes import TunedLens, fit_outcome
from stack.lens.residual import Residuals, read_through
from stack.model.gpt import GPT


@dataclass(frozen=True)
class LayerReading:
    """One lens layer (or the model's output, as the last row) on batch row 0, position by position."""

    layer: int
    site: str
    kl: list[float]  # nats, KL(final ‖ this layer)
    entropy: list[float]  # nats
    top: list[list[tuple[int, float]]]  # per position the top-k (token id, probability)


def kl_to_final(final: torch.Tensor, reading: torch.Tensor) -> torch.Tensor:
    """KL(final ‖ reading) per position, from two log-probability tensors (..., vocab)."""
    return (final.exp() * (final - reading)).sum(-1)


@gate_require("GATE-LENS-004", lambda model, lens: fit_outcome(model, lens))
@torch.no_grad()
def layer_log_probs(model: GPT, residuals: Residuals, lens: TunedLens | None) -> list[torch.Tensor]:
    """Per lens layer, then the model's output: float64 log-probabilities (batch, time, vocab)."""
    states = [state if lens is None else lens(i, state) for i, state in enumerate(residuals.states)]
    return [read_through(model, s).double().log_softmax(-1) for s in (*states, residuals.last)]


def mean_kl(log_probs: list[torch.Tensor]) -> list[float]:
    """Per lens layer of `layer_log_probs`, KL(final ‖ layer) averaged over every position of the batch."""
    *layers, final = log_probs
    return [float(kl_to_final(final, lp).mean()) for lp in layers]


def recomputed_kl(final: torch.Tensor, reading: torch.Tensor) -> torch.Tensor:
    """`kl_to_final` by another path, the contracts' KL(final ‖ layer) by torch's `kl_div`
    (contracts.divergence): what GATE-LENS-006 holds the reported KL to, on the same log-probabilities."""
    return kl_per_position(final, reading)


def recomputed_mean_kl(log_probs: list[torch.Tensor]) -> list[float]:
    """`mean_kl` by `recomputed_kl`, averaged over every position of the batch."""
    *layers, final = log_probs
    return [float(recomputed_kl(final, lp).mean()) for lp in layers]


def kl_outcome(measured: dict[str, Any]) -> Outcome:
    """GATE-LENS-006 over the KLs a lens reports beside the same KLs recomputed (`recomputed_kl`):
    a comparison's held-out means (check heldout) or a reading's per-position values (check readings)."""
    return measure("GATE-LENS-006", measured, holds="the reported KL is KL(final ‖ layer)")


@gate_require("GATE-LENS-006", kl_outcome)
def check_kl(measured: dict[str, Any]) -> None:
    """Refuse a lens report whose KL is not KL(final ‖ layer), summed and averaged as stated."""


def read(model: GPT, residuals: Residuals, lens: TunedLens | None, top_k: int) -> list[LayerReading]:
    """Every lens layer and the model's output, for the first sequence of the batch; its KLs held
    to `recomputed_kl` of the same log-probabilities before they are reported (`check_kl`)."""
    log_probs = layer_log_probs(model, residuals, lens)
    final = log_probs[-1][0]
    sites = (*residuals.sites[:-1], "logits")
    readings, recomputed = [], []
    for layer, (site, lp) in enumerate(zip(sites, log_probs, strict=True)):
        lp = lp[0]
        probs, ids = lp.exp().topk(min(top_k, lp.shape[-1]), dim=-1)
        top = [list(zip(i.tolist(), p.tolist(), strict=True)) for i, p in zip(ids, probs, strict=True)]
        entropy = -(lp.exp() * lp).sum(-1)
        readings.append(LayerReading(layer, site, kl_to_final(final, lp).tolist(), entropy.tolist(), top))
        recomputed.append(recomputed_kl(final, lp).tolist())
    check_kl({"reading_kl": [r.kl for r in readings], "recomputed_reading_kl": recomputed})
    return readings
