"""What a surgery changed: new weights written into the model, then checked against the source.

The weights are copied into the model's own tensors in place, so a tied head, which *is* the
embedding's tensor, takes the change once and stays tied (GATE-HQQ-003). After the surgery the
sha256 of every tensor of the state is compared with the source's: a tensor that changed and
was not named as a target fails GATE-LASER-003; and the targets must be exactly the matrices the
command line's `--targets` and `--layers` select by the contracts' own rule (contracts.selection),
so a selection that leaves a named block out fails it too.
"""

from __future__ import annotations

import torch

from contracts.gates import Outcome, gate_require, measure
from contracts.selection import selected_by
from stack.model.gpt import GPT
from stack.model.lora import tensor_hashes
from stack.model.targets import Target


@torch.no_grad()
def write_weights(model: GPT, targets: list[Target], weights: list[torch.Tensor]) -> None:
    """Copy each new matrix into its target's tensor of `model`, in place (a tied head follows its
    embedding; a new Parameter per module name would untie them)."""
    for target, weight in zip(targets, weights, strict=True):
        target.weight.copy_(weight)


def changes_outcome(model: GPT, targets: list[Target], source: dict[str, str], argv: list[str]) -> Outcome:
    """GATE-LASER-003: the state's tensors whose sha256 moved from `source`, against the targets' keys
    (check changed); and the targets' keys against what the command line's `--targets` and
    `--layers` select of the model by the contracts' own rule (contracts.selection, check selection)."""
    now = tensor_hashes(model)
    changed = sorted(key for key in source.keys() | now.keys() if source.get(key) != now.get(key))
    measured = {
        "targets": sorted(key for t in targets for key in t.keys),
        "changed": changed,
        "selected": selected_by(argv, model.config.model_dump()),
    }
    return measure("GATE-LASER-003", measured, holds="only the named matrices changed")


@gate_require(
    "GATE-LASER-003",
    lambda model, targets, source, argv: changes_outcome(model, targets, source, argv),
)
def check_changes(model: GPT, targets: list[Target], source: dict[str, str], argv: list[str]) -> None:
    """Judge the model after surgery against the source's tensor hashes, and its targets against the
    command line `argv` that named them."""


def ties_outcome(model: GPT) -> Outcome:
    """GATE-HQQ-003: a tied model's head is still the embedding's tensor, and equal to it."""
    head, embed = model.lm_head.weight, model.embed.weight
    same_shape = head.shape == embed.shape
    measured = {
        "tied_config": model.config.tie_embeddings,
        "same_storage": head is embed or (same_shape and head.data_ptr() == embed.data_ptr()),
        "differing_elements": int((head != embed).sum()) if same_shape else embed.numel(),
    }
    return measure("GATE-HQQ-003", measured, holds="tied embeddings stayed tied")


@gate_require("GATE-HQQ-003", lambda model: ties_outcome(model))
def check_ties(model: GPT) -> None:
    """Judge the model after surgery: a tied head must still be its embedding."""
