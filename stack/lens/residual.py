"""The residual stream a lens reads: where it enters each block, before any norm.

Lens layer i reads the stream entering block i: `embed` for layer 0, then `layers.<i-1>.output`.
The stream leaving the last block is read too, only to check the reading: put through the
model's own final norm and unembedding it must give the model's logits bit for bit
(GATE-LENS-005). A reading of post-norm states (an `attn_norm` site, or `final_norm`) would
apply the final norm twice; the check catches it, and the judge refuses any site that is not the
stream. The states are captured by the trace's site hooks, not by a second hook system.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contracts.gates import Outcome, gate_ensure
from stack.model.gpt import GPT
from stack.trace.hooks import SiteHooks
from stack.trace.identity import exact_outcome
from stack.trace.sites import block_input


def stream_sites(n_layers: int) -> list[str]:
    """The sites of the stream entering each block, then the one leaving the last (n_layers + 1)."""
    return [block_input(layer) for layer in range(n_layers + 1)]


@dataclass(frozen=True)
class Residuals:
    """One forward's residual stream at every lens layer, the stream after the last block, the logits."""

    sites: tuple[str, ...]  # what was read, lens layers first, the last block's output at the end
    states: tuple[torch.Tensor, ...]  # (batch, time, d_model) per lens layer
    last: torch.Tensor
    logits: torch.Tensor
    inputs: torch.Tensor  # the token ids the forward read (batch, time): what a reading is of


def read_through(model: GPT, state: torch.Tensor) -> torch.Tensor:
    """The logits the model would give if `state` were the stream leaving its last block."""
    return model.lm_head(model.final_norm(state))


def pre_norm_outcome(model: GPT, residuals: Residuals) -> Outcome:
    """GATE-LENS-005: the sites read are the stream, and the last one reproduces the logits exactly."""
    return exact_outcome(
        "GATE-LENS-005",
        read_through(model, residuals.last),
        residuals.logits,
        "the lens reads the pre-norm residual stream",
        {"sites": list(residuals.sites)},
    )


@gate_ensure("GATE-LENS-005", lambda model, result: pre_norm_outcome(model, result))
@torch.no_grad()
def capture(model: GPT, idx: torch.Tensor) -> Residuals:
    """Run model(idx) once and keep the residual stream at every lens layer (the model is not changed)."""
    wanted = stream_sites(len(model.layers))
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        if name in wanted:
            seen[name] = tensor.detach().clone()  # a later in-place write must not change the reading

    with SiteHooks(model, keep):
        logits, _ = model(idx)
    return Residuals(tuple(wanted), tuple(seen[s] for s in wanted[:-1]), seen[wanted[-1]], logits, idx)
