"""The start-up bindings of the mixture-of-depths gates (GATE-ARCH-008 … 011).

The rules are judges in contracts/judges_arch_options.py; here the stack measures on probes run
through a copy of the model itself (fp32, random tokens), so what is judged is the model's own
routing code with the run's configuration.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from contracts.gates import gate_ensure, measure
from stack.model.checks import PROBE_BATCH, PROBE_LEN
from stack.model.depth_router import depth_routed_blocks
from stack.model.diff_checks import future_leak
from stack.model.gpt import GPT


def _probe_tokens(model: GPT, seed: int) -> torch.Tensor:
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(config.vocab, (PROBE_BATCH, min(config.ctx, PROBE_LEN)), generator=generator)
    return tokens.to(model.embed.weight.device)


@gate_ensure(
    "GATE-ARCH-008",
    lambda result: measure("GATE-ARCH-008", result, holds="each sequence routes exactly ⌊C·T⌋ tokens"),
)
@torch.no_grad()
def check_capacity(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """Tokens each routed block picked per sequence in one training-mode forward of a probe."""
    twin = copy.deepcopy(model).float().train()
    tokens = _probe_tokens(twin, seed)
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
    tokens = _probe_tokens(twin, seed)
    _, loss = twin(tokens[:, :-1], tokens[:, 1:])
    assert loss is not None
    loss.backward()
    return {
        "grad_absmax": {
            name: 0.0 if block.router.weight.grad is None else block.router.weight.grad.abs().max().item()
            for name, block in depth_routed_blocks(twin)
        }
    }


@gate_ensure(
    "GATE-ARCH-011",
    lambda result: measure("GATE-ARCH-011", result, holds="inference routing is causal"),
)
def check_mod_causal(model: GPT, *, seed: int = 0) -> dict[str, Any]:
    """GATE-ARCH-011: in evaluation mode the future does not reach the past through the routing."""
    return future_leak(model, seed=seed)


def check_depth_routing(model: GPT) -> None:
    """The start-up checks of a model with mixture-of-depths blocks (GATE-ARCH-008 … 011)."""
    check_capacity(model)
    check_skipped_identical(model)
    check_router_gradient(model)
    check_mod_causal(model)
