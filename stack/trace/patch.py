"""Activation patching: write one run's activation into another and see how much of the effect returns.

A clean and a corrupted prompt of the same length are run; then the corrupted prompt again with
one (site, position) activation taken from the clean run. The metric (the target token's
log-probability at the last position, or its logit minus a foil's) of the patched run, placed
between the corrupted run's (0) and the clean run's (1), is the recovered fraction. A sweep
does this for one site kind at every layer × every position.

Each run first shows that patching does nothing where it must: the clean run patched with its
own activations at every site it uses, at every position, gives its logits bit for bit
(GATE-PATCH-001), and the corrupted run patched with the clean embedding at every position
gives the clean logits bit for bit (GATE-PATCH-002). The patches are the trace's site hooks; a
run starts with none on the model and leaves none (GATE-PATCH-003).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.model.gpt import GPT
from stack.trace.hooks import SiteHooks
from stack.trace.identity import exact_outcome
from stack.trace.sites import DENSE, BlockLayout, Layout, layout_for, split
from stack.trace.tracer import check_site

EVERY_POSITION = slice(None)
STREAM_AT_LAYER_0 = "embed"  # the residual stream entering block 0

Positions = slice | int
Patches = Mapping[str, tuple[torch.Tensor, Positions]]


@dataclass(frozen=True)
class Metric:
    """What patching tries to recover, read at the last position of batch row 0."""

    target: int
    foil: int | None = None

    def __call__(self, logits: torch.Tensor) -> float:
        """logit(target) - logit(foil), or log p(target) without a foil."""
        last = logits[0, -1].double()
        if self.foil is not None:
            return float(last[self.target] - last[self.foil])
        return float(last.log_softmax(-1)[self.target])


@dataclass(frozen=True)
class PatchRun:
    """The metric of both runs and, per patched site, the recovered fraction at each position."""

    clean: float
    corrupted: float
    positions: tuple[int, ...]
    recovered: dict[str, list[float]]
    full_recovered: float


def splice(tensor: torch.Tensor, source: torch.Tensor, positions: Positions) -> torch.Tensor:
    """`tensor` with its positions `positions` (dim 1) taken from `source`."""
    out = tensor.clone()
    out[:, positions] = source[:, positions]
    return out


def forward_with(
    model: GPT, idx: torch.Tensor, patches: Patches, keep: frozenset[str] = frozenset()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """model(idx) with `patches` applied; also returns copies of the (unpatched) `keep` sites."""
    kept: dict[str, torch.Tensor] = {}

    def visit(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        if name in keep:
            kept[name] = tensor.detach().clone()
        if name in patches:
            source, positions = patches[name]
            return splice(tensor, source, positions)
        return None

    with SiteHooks(model, visit):
        logits, _ = model(idx)
    return logits, kept


def check_sites(sites: list[str], n_layers: int, layout: Layout = DENSE) -> None:
    """Each site must exist in this model and be one a hook can replace at a position."""
    for name in sites:
        block, kind = check_site(name, "--patch-site", n_layers, layout), split(name)[1]
        if block is None:
            continue
        if kind in block.observe_only:
            raise BadInput(
                f"--patch-site {name}: the residual stream there is observed, not replaceable; "
                "patch the output site of the block before it"
            )
        if kind in block.token_rows:
            raise BadInput(
                f"--patch-site {name}: the site has no positions to patch (it holds routed tokens' rows, "
                f"or heads); patch one of this block's {', '.join(patchable(block))}"
            )


def patchable(block: BlockLayout) -> list[str]:
    """The site kinds of a block that can be patched at a position."""
    return [k for k in block.kinds if k not in block.observe_only | block.token_rows]


def sweep_sites(kind: str, n_layers: int, layout: Layout = DENSE) -> list[str]:
    """The site `kind` (e.g. output, attn_out) at every layer whose block can patch it."""
    layers = [layer for layer in range(n_layers) if kind in patchable(layout.block(layer))]
    if not layers:
        usable = ", ".join(dict.fromkeys(k for i in range(n_layers) for k in patchable(layout.block(i))))
        raise BadInput(f"--patch-sweep {kind!r} is not a site kind that can be patched; use one of: {usable}")
    return [f"layers.{layer}.{kind}" for layer in layers]


def hook_count(model: GPT) -> int:
    """Forward hooks and pre-hooks registered on any module of `model`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def hooks_outcome(model: GPT, when: str) -> Outcome:
    """GATE-PATCH-003 at the start or the end of a patching run."""
    measured = {
        "when": when,
        "hooks": hook_count(model),
        "function_modes": torch._C._len_torch_function_stack(),
    }
    return measure("GATE-PATCH-003", measured, holds=f"no hook on the model at the {when}")


@gate_ensure(
    "GATE-PATCH-001",
    lambda result: exact_outcome("GATE-PATCH-001", *result, "patching a run with itself changed nothing"),
)
def self_patch(
    model: GPT, idx: torch.Tensor, values: Mapping[str, torch.Tensor], reference: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The run of idx patched with its own `values` at every position, and the logits it must equal."""
    logits, _ = forward_with(model, idx, {site: (v, EVERY_POSITION) for site, v in values.items()})
    return logits, reference


@gate_ensure(
    "GATE-PATCH-002",
    lambda result: exact_outcome("GATE-PATCH-002", *result, "the whole stream at layer 0 recovered the run"),
)
def full_patch(
    model: GPT, corrupted: torch.Tensor, clean_stream: torch.Tensor, clean_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The corrupted run with the clean stream entering layer 0 at every position, and the clean logits."""
    logits, _ = forward_with(model, corrupted, {STREAM_AT_LAYER_0: (clean_stream, EVERY_POSITION)})
    return logits, clean_logits


@gate_require("GATE-PATCH-003", lambda model: hooks_outcome(model, "start"))
@gate_ensure("GATE-PATCH-003", lambda model, result: hooks_outcome(model, "end"))
@torch.no_grad()
def patch_runs(
    model: GPT,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    sites: list[str],
    positions: list[int],
) -> PatchRun:
    """Patch each site at each position from the clean run into the corrupted one, after the controls."""
    if clean.shape != corrupted.shape:
        raise BadInput(
            f"the clean prompt is {clean.shape[1]} tokens and the corrupted one {corrupted.shape[1]}; "
            "patching pairs positions, so give prompts of the same length"
        )
    check_sites(sites, len(model.layers), layout_for(model.config))
    clean_logits, values = forward_with(model, clean, {}, keep=frozenset({*sites, STREAM_AT_LAYER_0}))
    corrupted_logits, _ = forward_with(model, corrupted, {})
    self_patch(model, clean, {site: values[site] for site in sites}, clean_logits)
    full_logits, _ = full_patch(model, corrupted, values[STREAM_AT_LAYER_0], clean_logits)
    clean_score, corrupted_score = metric(clean_logits), metric(corrupted_logits)
    if clean_score == corrupted_score:
        raise BadInput(
            "the clean and corrupted prompts give the target the same score, so there is nothing to "
            "recover; choose prompts (or a --target) whose answers differ"
        )

    def recovered(logits: torch.Tensor) -> float:
        return (metric(logits) - corrupted_score) / (clean_score - corrupted_score)

    grid = {
        site: [recovered(forward_with(model, corrupted, {site: (values[site], p)})[0]) for p in positions]
        for site in sites
    }
    return PatchRun(clean_score, corrupted_score, tuple(positions), grid, recovered(full_logits))
