"""The LoRA gates at run time: what an adapted, merged or trained model measures against its base.

Each check compares logits on a probe: a fixed row of token ids spread over the vocabulary (no
data needed, the same on every call), read with the model in eval mode so dropout is off. The
measured values go to the gate's judge through `contracts.gates.measure`; a failure raises
GateViolation naming the gate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from contracts.gates import gate_require, measure
from contracts.model_shape import lora_probe_tokens
from stack.model.gpt import GPT
from stack.model.lora import adapters, merge, tensor_sha256, unmerge, without_adapters

PROBE_STRIDE = 7919  # a prime: consecutive probe ids land far apart in any vocabulary


def probe_ids(model: GPT) -> torch.Tensor:
    """(1, T) token ids, T = min(ctx, 32) (contracts.model_shape.lora_probe_tokens, by which the
    integrity check derives what GATE-LORA-001 compared), strided across the vocabulary, on the
    model's device."""
    length = lora_probe_tokens(model.config.model_dump())
    device = model.embed.weight.device
    return (torch.arange(length, device=device) * PROBE_STRIDE % model.config.vocab).unsqueeze(0)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) and no autograd for the duration; the training flag comes back."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def logits_of(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits on `ids`, in eval mode, without a graph."""
    with _evaluating(model):
        return model(ids)[0]


def identity_measured(model: GPT) -> dict[str, Any]:
    """GATE-LORA-001's values: the adapted model's probe logits against its base's, element for element."""
    ids = probe_ids(model)
    adapted = logits_of(model, ids)
    with without_adapters(model):
        base = logits_of(model, ids)
    return {
        "adapters": len(adapters(model)),
        "differing_elements": int((adapted != base).sum()),
        "elements": base.numel(),
    }


@gate_require("GATE-LORA-001", lambda measured: measure("GATE-LORA-001", measured))
def check_identity(measured: dict[str, Any]) -> None:
    """Judge a freshly adapted model: it must compute its base's logits exactly."""


def merge_measured(model: GPT) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge every adapter and measure GATE-LORA-002 (merged against unmerged logits, Δ once) and
    GATE-LORA-006 (the input embedding untouched, a tied head still the embedding)."""
    ids = probe_ids(model)
    embed_before = tensor_sha256(model.embed.weight)
    unmerged = logits_of(model, ids)
    merge(model)
    merged = logits_of(model, ids)
    parity = {
        "adapters": len(adapters(model)),
        "max_abs_diff": float((merged.double() - unmerged.double()).abs().max()),
        "max_abs_logit": float(unmerged.double().abs().max()),
        "mismatched_elements": {name: wrapper.merge_mismatch() for name, wrapper in adapters(model)},
    }
    embedding = {
        "tied": model.config.tie_embeddings,
        "embed_changed": tensor_sha256(model.embed.weight) != embed_before,
        "head_is_embed": model.lm_head.weight is model.embed.weight,
    }
    return parity, embedding


@gate_require("GATE-LORA-002", lambda measured: measure("GATE-LORA-002", measured))
def check_merge_parity(measured: dict[str, Any]) -> None:
    """Judge a merge: the merged model computes the unmerged one's logits, each Δ merged once."""


@gate_require("GATE-LORA-006", lambda measured: measure("GATE-LORA-006", measured))
def check_embedding_kept(measured: dict[str, Any]) -> None:
    """Judge a merge: the input embedding is what it was, a tied head still the embedding."""


def checked_merge(model: GPT) -> dict[str, Any]:
    """Merge every adapter under GATE-LORA-006, then -002; returns both gates' measured values."""
    parity, embedding = merge_measured(model)
    check_embedding_kept(embedding)  # first: a changed embedding also moves the logits
    check_merge_parity(parity)
    return {"parity": parity, "embedding": embedding}


def unmerge_measured(model: GPT) -> dict[str, Any]:
    """Unmerge every adapter and measure GATE-LORA-003: each weight against its base's sha256."""
    unmerge(model)
    found = adapters(model)
    return {"adapters": len(found), "differing": [name for name, w in found if not w.base_intact()]}


@gate_require("GATE-LORA-003", lambda measured: measure("GATE-LORA-003", measured))
def check_unmerged(measured: dict[str, Any]) -> None:
    """Judge an unmerge: every adapted weight is its base again, bit for bit."""


def trained_measured(model: nn.Module) -> dict[str, Any]:
    """GATE-LORA-004's values after training: moved bases, base tensors left trainable, B still zero,
    and the adapters that received no input row in training (an expert no token was routed to)."""
    found = adapters(model)
    own = {id(w.lora_A) for _, w in found} | {id(w.lora_B) for _, w in found}
    return {
        "adapters": len(found),
        "base_moved": [name for name, w in found if not w.base_intact()],
        "trainable_base": [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in own],
        "zero_b": [name for name, w in found if not bool(w.lora_B.detach().ne(0).any())],
        "unfed": [name for name, w in found if int(w.fed) == 0],
    }


@gate_require("GATE-LORA-004", lambda measured: measure("GATE-LORA-004", measured))
def check_trained(measured: dict[str, Any]) -> None:
    """Judge a finished LoRA run: the base did not move, and every adapter trained."""
