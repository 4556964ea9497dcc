"""What a lens reads at each layer: the distribution, its top tokens, entropy and KL to the final one.

Lens layer i puts the stream entering block i (through the tuned lens's probe i, if any) into
the model's own final norm and unembedding. KL(final ‖ lens) says how far that distribution is
from the model's answer, in nats per position; the model's own distribution is the last row,
at KL 0. Reading is bound to GATE-LENS-004: the model must have its final norm, and a tuned
lens must have been trained on this model; every KL reported is held to the same KL recomputed
by torch's kl_div against the distribution of a plain forward of the model, every entropy to
contracts.divergence's of the same log-probabilities, and every top-k probability to the
log-probabilities it was read from (GATE-LENS-006).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from contracts import divergence
from contracts.divergence import kl_per_position, mean_kl_per_layer
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


def model_output(log_probs: list[torch.Tensor]) -> torch.Tensor:
    """The model's own distribution in a `layer_log_probs` list: its last entry, the reference every
    lens layer's KL is taken against."""
    return log_probs[-1]


def mean_kl(log_probs: list[torch.Tensor]) -> list[float]:
    """Per lens layer of `layer_log_probs`, KL(final ‖ layer) averaged over every position of the batch."""
    final = model_output(log_probs)
    return [float(kl_to_final(final, lp).mean()) for lp in log_probs[:-1]]


@torch.no_grad()
def output_log_probs(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The model's next-token log-probabilities of `ids` by a plain forward, no hook and no lens: the
    final distribution GATE-LENS-006 recomputes every KL against, apart from the lens's own list, so a
    reading that takes another row for the model's output shows."""
    logits, _ = model(ids)
    return logits.double().log_softmax(-1)


def kl_rows(logit: Sequence[float], tuned: Sequence[float]) -> list[dict[str, float]]:
    """Per lens layer, the logit lens's and the tuned lens's KL, as records and reports hold them."""
    return [
        {"layer": layer, "kl_logit": float(a), "kl_tuned": float(b)}
        for layer, (a, b) in enumerate(zip(logit, tuned, strict=True))
    ]


def recomputed_batch_kl(model: GPT, residuals: Residuals, lens: TunedLens) -> list[dict[str, float]]:
    """One held-out batch's per-layer mean KLs recomputed apart from the comparison's: the final
    distribution by a plain forward of the ids the batch's forward read, each column read through its
    own lens by name (kl_logit none, kl_tuned `lens`), the KL and mean by contracts.divergence. The
    comparison's mean over batches is the judge's to take (GATE-LENS-006, check heldout)."""
    final = output_log_probs(model, residuals.inputs)
    logit = mean_kl_per_layer(final, layer_log_probs(model, residuals, None)[:-1])
    tuned = mean_kl_per_layer(final, layer_log_probs(model, residuals, lens)[:-1])
    return kl_rows(logit, tuned)


def kl_outcome(measured: dict[str, Any]) -> Outcome:
    """GATE-LENS-006 over what a lens reports beside the same recomputed apart from it: a comparison's
    held-out means (check heldout), a reading's per-position KLs (check readings) and top tokens
    (check top), the loss the training consumed (check objective)."""
    return measure("GATE-LENS-006", measured, holds="the reported KL is KL(final ‖ layer)")


@gate_require("GATE-LENS-006", kl_outcome)
def check_kl(measured: dict[str, Any]) -> None:
    """Refuse a lens report whose KL is not KL(final ‖ layer), summed and averaged as stated."""


def entropy_of(log_probs: torch.Tensor) -> torch.Tensor:
    """The entropy in nats at each position of (..., vocab) log-probabilities: −Σ p log p over the
    vocabulary (GATE-LENS-006 holds it to contracts.divergence.entropy)."""
    return -(log_probs.exp() * log_probs).sum(-1)


def top_tokens(log_probs: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Per position of (time, vocab) log-probabilities, the k likeliest tokens and their probabilities."""
    probs, ids = log_probs.exp().topk(k, dim=-1)
    return [list(zip(i.tolist(), p.tolist(), strict=True)) for i, p in zip(ids, probs, strict=True)]


def read(model: GPT, residuals: Residuals, lens: TunedLens | None, top_k: int) -> list[LayerReading]:
    """Every lens layer and the model's output, for the first sequence of the batch. Before they are
    reported (`check_kl`), its KLs are held to kl_div's against a plain forward's distribution
    (check readings), its entropies to contracts.divergence's of the log-probabilities they were
    read from (check entropy), and its top tokens to those log-probabilities (check top)."""
    log_probs = layer_log_probs(model, residuals, lens)
    final = model_output(log_probs)[0]
    plain = output_log_probs(model, residuals.inputs)[0]
    k = min(top_k, final.shape[-1])
    sites = (*residuals.sites[:-1], "logits")
    readings, recomputed, entropies, top_logprobs, best = [], [], [], [], []
    for layer, (site, lp) in enumerate(zip(sites, log_probs, strict=True)):
        lp = lp[0]
        top = top_tokens(lp, k)
        entropy = entropy_of(lp)
        readings.append(LayerReading(layer, site, kl_to_final(final, lp).tolist(), entropy.tolist(), top))
        recomputed.append(kl_per_position(plain, lp).tolist())
        entropies.append(divergence.entropy(lp).tolist())
        ids = torch.tensor([[token for token, _ in row] for row in top], dtype=torch.long, device=lp.device)
        top_logprobs.append(lp.gather(-1, ids).tolist())
        best.append(lp.topk(k, dim=-1).values.tolist())
    check_kl(
        {
            "reading_kl": [r.kl for r in readings],
            "recomputed_reading_kl": recomputed,
            "reading_entropy": [r.entropy for r in readings],
            "recomputed_reading_entropy": entropies,
            "reading_top": [[[list(pair) for pair in row] for row in r.top] for r in readings],
            "top_logprobs": top_logprobs,
            "recomputed_top_logprobs": best,
        }
    )
    return readings
