"""GATE-MODEL-003's `init` check: a freshly built model holds the initialisation its class names.

`GPT`'s docstring names the initialisation: every weight matrix ~ N(0, init_std²) but the two
projections that write into the residual stream (attn.o and each feed-forward's down), drawn at
init_std / √(2 n_layers); norm gains 1, biases 0, a differential attention's λ vectors
~ N(0, LAMBDA_STD²). A slip in `init_weights` (the residual projections drawn at init_std, a
gain left at 0) trains, only worse, and no other gate looks at the weights a run starts from.

`contracts.model_init.named_initialisation` writes that table out again by parameter name,
without calling `init_weights` (the integrity check derives a record's table by it too);
`initialisation_measured` reads each tensor's mean and root mean square; the judge allows a drawn
tensor init_max_z standard errors of either (σ/√n for the mean, σ/√(2n) for the root mean square
of n normal draws) and a constant one no difference at all. The check runs
on the model as the Trainer builds it, before any checkpoint is loaded over it: it judges the
initialisation the class draws, which is what a fresh run trains from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contracts.gates import Outcome, gate_ensure, measure
from contracts.model_init import Named, named_initialisation
from stack.model.gpt import GPT


def _tensor_measured(tensor: torch.Tensor, named: Named) -> dict[str, Any]:
    """A drawn tensor's elements, mean and root mean square; a constant one's largest distance."""
    values = tensor.detach().double()
    if named.std is None:
        return {"named_value": named.value, "max_abs_diff": float((values - named.value).abs().max())}
    return {
        "named_std": named.std,
        "elements": values.numel(),
        "mean": float(values.mean()),
        "rms": float(values.pow(2).mean().sqrt()),
    }


def initialisation_measured(model: GPT) -> dict[str, dict[str, Any]]:
    """Parameter name → what `_tensor_measured` reads of it, for every parameter of `model`."""
    return {
        name: _tensor_measured(param, named_initialisation(name, model.config.model_dump()))
        for name, param in model.named_parameters()
    }


@dataclass(frozen=True)
class Initialisation:
    """GATE-MODEL-003's `init` values: per parameter, its named initialisation and what it holds."""

    tensors: dict[str, dict[str, Any]]

    def outcome(self) -> Outcome:
        """The GATE-MODEL-003 verdict of the initialisation."""
        return measure("GATE-MODEL-003", {"init": self.tensors}, holds="the model starts as its class names")


@gate_ensure("GATE-MODEL-003", lambda result: result.outcome())
@torch.no_grad()
def check_initialisation(model: GPT) -> Initialisation:
    """Measure a freshly built model's parameters against their named initialisation."""
    return Initialisation(initialisation_measured(model))
