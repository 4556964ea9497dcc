"""The bindings of the mixture-of-depths gates: at start-up GATE-ARCH-008 … 011, at every
held-out evaluation GATE-ARCH-014 and GATE-ARCH-008's check inference.

The rules are judges in contracts/judges/arch.py. At start-up the stack measures on
probes run through a copy of the model itself (fp32, random tokens), so what is judged is the
model's own routing code with the run's configuration; a probe is long enough for ⌊C·T⌋ ≥ 1
(the configuration refuses a capacity that routes no token of ctx). GATE-ARCH-008 probes the
run's own window length and one where C·T is not whole (`capacity_lengths`). At evaluation it counts
what the inference routing did on the held-out batches (`DepthRoutedBlock.inference_counts`), and
holds the threshold that routing read to the scores of the training batch that set it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from contracts.gates import gate_ensure, gate_require, measure
from stack.model.checks import PROBE_BATCH, PROBE_LEN
from stack.model.depth_router import depth_routed_blocks
from stack.model.diff_checks import future_leak
from stack.model.gpt import GPT


def _probe_tokens(model: GPT, seed: int, targets: int = 0, length: int | None = None) -> torch.Tensor:
    """PROBE_BATCH random sequences of T tokens, T long enough that ⌊C·T⌋ ≥ 1 (at most ctx) unless
    `length` says, and `targets` more for the next-token targets of a loss."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    if length is None:
        length = min(config.ctx, max(PROBE_LEN, math.ceil(1 / config.mod_capacity)))
    tokens = torch.randint(config.vocab, (PROBE_BATCH, length + targets), generator=generator)
    return tokens.to(model.embed.weight.device)


def capacity_lengths(capacity: float, ctx: int) -> list[int]:
    """The sequence lengths GATE-ARCH-008 probes: the run's own, ctx (a training window), and the
    shortest that routes a token and whose C·T is not whole, where ⌊C·T⌋ parts from a rounding
    up or to the nearest (at C·T whole, every rounding routes the same count: a probe there sees
    none)."""
    shortest = math.ceil(1 / capacity)
    fractional = (t for t in range(shortest, ctx) if capacity * t != math.floor(capacity * t))
    return sorted({ctx, *(t for t in [next(fractional, None)] if t is not None)})


@gate_ensure(
    "GATE-ARCH-008",
    lambda result: measure("GATE-ARCH-008", result, holds="each sequence routes exactly ⌊C·T⌋ tokens"),
)
@torch.no_grad()
def check_capacity(model: GPT, *, seed: int = 0, length: int | None = None) -> dict[str, Any]:
    """Tokens each routed block picked per sequence in one training-mode forward of a probe (of
    `length` tokens, or `_probe_tokens`' own)."""
    twin = copy.deepcopy(model).float().train()
    tokens = _probe_tokens(twin, seed, length=length)
    twin(tokens)
    return {
        "capacity": twin.config.mod_capacity,
        "length": tokens.shape[1],
        "routed": {name: block.routed.sum(-1).tolist() for name, block in depth_routed_blocks(twin)},
    }


def _changed_skipped(twin: GPT, tokens: torch.Tensor) -> dict[str, int]:
    """Per routed block, the skipped tokens whose output bits differ from their input's."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        block.register_forward_hook(
            lambda _m, args, out, name=name: seen.__setitem__(name, (args[0], out))  # type: ignore[misc]
        )
        for name, block in depth_routed_blocks(twin)
    ]
    try:
        twin(tokens)
    finally:
        for handle in handles:
            handle.remove()
    changed = {}
    for name, block in depth_routed_blocks(twin):
        before, after = seen[name]
        # Compared as raw bits: -0.0 for 0.0 or a NaN's payload would count as a change.
        differs = (after.view(torch.int32) != before.view(torch.int32)).any(-1)
        changed[name] = int((differs & ~block.routed).sum())
    return changed


@gate_ensure(
    "GATE-ARCH-009",
    lambda result: measure("GATE-ARCH-009", result, holds="skipped tokens leave each block bit for bit"),
)
@torch.no_grad()
def check_skipped_identical(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """Skipped tokens' changes, in training routing (top-k) and inference routing (threshold)."""
    twin = copy.deepcopy(model).float()
    tokens = _probe_tokens(twin, seed)
    train = _changed_skipped(twin.train(), tokens)
    infer = _changed_skipped(twin.eval(), tokens)
    return {"changed": {name: {"train": train[name], "inference": infer[name]} for name in train}}


@gate_ensure(
    "GATE-ARCH-010",
    lambda result: measure("GATE-ARCH-010", result, holds="every router receives gradient"),
)
def check_router_gradient(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """The largest |gradient| of each router's weight after one training forward and backward."""
    twin = copy.deepcopy(model).float().train()
    tokens = _probe_tokens(twin, seed, targets=1)
    _, loss = twin(tokens[:, :-1], tokens[:, 1:])
    assert loss is not None
    loss.backward()
    return {
        "capacity": twin.config.mod_capacity,
        "length": tokens.shape[1] - 1,
        "grad_absmax": {
            name: 0.0 if block.router.weight.grad is None else block.router.weight.grad.abs().max().item()
            for name, block in depth_routed_blocks(twin)
        },
    }


@gate_ensure(
    "GATE-ARCH-011",
    lambda result: measure("GATE-ARCH-011", result, holds="inference routing is causal"),
)
def check_mod_causal(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """GATE-ARCH-011: in evaluation mode the future does not reach the past through the routing."""
    return future_leak(model, seed=seed)


@gate_require(
    "GATE-ARCH-014",
    lambda routed, capacity, step: measure(
        "GATE-ARCH-014",
        {"capacity": capacity, "routed": routed},
        step=step,
        holds="inference routing routes about C of the held-out tokens",
    ),
)
def check_inference_capacity(routed: dict[str, list[int]], capacity: float, step: int) -> None:
    """Judge what each block's inference routing did on an evaluation's held-out batches:
    `routed` maps each block to [tokens routed, tokens seen] (`inference_routed`)."""


@gate_require(
    "GATE-ARCH-008",
    lambda split, capacity, step: measure(
        "GATE-ARCH-008",
        {"capacity": capacity, "threshold_split": split},
        step=step,
        holds="each inference threshold admits ⌊C·N⌋ of the scores that set it",
    ),
)
def check_inference_threshold(split: dict[str, dict[str, int]], capacity: float, step: int) -> None:
    """Judge the threshold each block's inference routing reads at an evaluation against the
    training batch that set it: `split` maps each block to `threshold_split`'s counts."""


def threshold_split(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per mixture-of-depths block whose threshold a training forward of this process set: how many
    of that batch's scores exceed the threshold as inference compares them (admitted), of how many
    (tokens), and the scores beyond the first tied at the largest score left out (tied)."""
    return {
        name: split_counts(block.split_scores, block.route_threshold)
        for name, block in depth_routed_blocks(model)
        if block.split_scores is not None  # resumed or loaded: no batch of this process set it
    }


def split_counts(scores: torch.Tensor, threshold: torch.Tensor) -> dict[str, int]:
    """Of `scores`, the ones `threshold` admits as inference routing compares them (in the scores'
    dtype), how many there are, and those beyond the first tied at the largest score left out."""
    flat = scores.reshape(-1)
    admits = flat > threshold.to(flat.dtype)
    left = flat[~admits]
    tied = int((left == left.max()).sum()) - 1 if left.numel() else 0
    return {"admitted": int(admits.sum()), "tokens": flat.numel(), "tied": tied}


def inference_routed(model: nn.Module) -> dict[str, list[int]]:
    """Per mixture-of-depths block, [routed, seen] tokens of inference forwards since the last reset."""
    return {name: block.inference_counts.tolist() for name, block in depth_routed_blocks(model)}


def reset_inference_routed(model: nn.Module) -> None:
    """Start every block's inference counts afresh (the start of an evaluation)."""
    for _, block in depth_routed_blocks(model):
        block.reset_counts()


def check_depth_routing(model: GPT) -> None:
    """The start-up checks of a model with mixture-of-depths blocks (GATE-ARCH-008 … 011)."""
    for length in capacity_lengths(model.config.mod_capacity, model.config.ctx):
        check_capacity(model, length=length)
    check_skipped_identical(model)
    check_router_gradient(model)
    check_mod_causal(model)
