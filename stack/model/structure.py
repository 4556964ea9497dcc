"""GATE-MODEL-003's `structure` check: the model holds exactly the tensors its config implies.

The Trainer calls `check_structure` at step 0, after the run's adapters are attached and before
the optimizer exists: every parameter the model registers (`named_parameters()`: its name, its
shape, and whether it requires a gradient) against `contracts.model_parameters.implied_parameters`
of the run's resolved `[model]` and `[lora]` tables, written out apart from the modules that built
it. A module never created (a mixture's shared expert), one created where the config has none (a
depth router on the wrong block), a head tied where the config unties it, or adapters on other
matrices than `lora.targets` names all show as names missing or extra, whatever the forward
computes with the tensors that are there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from contracts.gates import Outcome, gate_ensure, measure
from contracts.model_parameters import implied_parameters


def held_parameters(model: nn.Module) -> dict[str, dict[str, Any]]:
    """name → {"shape", "trainable"} of every parameter `model` registers (each tensor once)."""
    return {
        name: {"shape": list(param.shape), "trainable": param.requires_grad}
        for name, param in model.named_parameters()
    }


@dataclass(frozen=True)
class Structure:
    """GATE-MODEL-003's `structure` values: the parameters held, and those the config implies."""

    held: dict[str, dict[str, Any]]
    named: dict[str, dict[str, Any]]

    def outcome(self) -> Outcome:
        """The GATE-MODEL-003 verdict of the model's tensors."""
        measured = {"parameters_held": self.held, "parameters_named": self.named}
        return measure("GATE-MODEL-003", measured, holds="the model holds the tensors its config implies")


@gate_ensure("GATE-MODEL-003", lambda result: result.outcome())
def check_structure(
    model: nn.Module, model_table: Mapping[str, Any], lora_table: Mapping[str, Any] | None
) -> Structure:
    """Measure `model`'s parameters against those its run's `[model]` and `[lora]` tables imply."""
    return Structure(held_parameters(model), implied_parameters(model_table, lora_table))
