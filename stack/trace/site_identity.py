"""GATE-TRACE-002's check identity: every site holds what its name says it observes.

A trace is read by its names: `layers.3.q` is taken for the queries of block 3, and a bisection
that names it sends the reader to `attn.q`. A hook registered on the wrong module, or two names
swapped, still records a complete trace whose every statistic looks plausible (queries and keys
are made alike), so completeness alone cannot see it.

Most sites are a module's output on another site's tensor, which the site layout names
(stack.trace.sites): `q`, `k` and `v` (and a differential attention's `q2`, `k2`) are the
block's own projections of `attn_norm`, `attn_norm` its norm of the block's input, `ffn_norm`
its norm of `attn_residual`, `ffn_gate` and `ffn_up` the feed-forward's projections of
`ffn_norm`, `ffn_swiglu` its product module on `ffn_gate` and `ffn_up`, `ffn_out` its down
projection of `ffn_swiglu`; a mixture's router and shared expert read `ffn_norm`, each expert
its routed tokens; a depth-routed block's router reads the block's input; `final_norm` reads the
last block's output and `logits` are the head of `final_norm`. `SiteIdentities` recomputes each
of those sites, as the forward goes, by calling the module its name names (its `forward`, so no
hook runs twice) on the traced tensors it reads, and measures how far the traced tensor is from
that. A site that observes another tensor than its name says is off by about its own size; the
same module on the same tensor differs by the rounding of another matrix shape (the forward
projects q, k and v as one product) only.

What no module computes is not recomputed: the sums the block makes itself (`attn_residual`,
`output`), the attention (`attn_out`, which needs the rotary tables) and `ffn_silu`, the result
of F.silu wherever ffn.swiglu calls it. They are the arithmetic a trace is there to question (a
bisection names a residual added twice there), and the sites that read them (`ffn_norm`, the
next block's `attn_norm`, `final_norm`, `ffn_swiglu`) hold them to their names. Under shadow
mode (`feed`) a block reads the fed tensor, not the previous block's output, and its identities
read it too; an ablated site holds zeros by request, so its own identity is not asked (its
readers see the zeros, as the forward did).

Cost: one more call of each projection and norm at a trace's one forward, and a few reductions
per site kept on the device and read back with the trace's statistics (no synchronisation per
site); the tensors a block's identities read are kept (by reference) until the block's output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from stack.model.depth_router import DepthRoutedBlock
from stack.model.gpt import GPT
from stack.model.moe import MoE
from stack.trace.sites import Layout, block_input
from stack.trace.stats import on_host


@dataclass(frozen=True)
class Identity:
    """How a site is computed from the sites it reads: `compute(*tensors of reads)`."""

    reads: tuple[str, ...]
    compute: Callable[..., torch.Tensor]


def _flat(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module` on the (tokens, width) rows a mixture works on."""
    return lambda x: module.forward(x.reshape(-1, x.shape[-1]))


def _block_identities(index: int, layer: nn.Module, kinds: tuple[str, ...]) -> dict[str, Identity]:
    """The identities of block `index`'s sites of `kinds` that are one of its modules' outputs."""

    def site(kind: str) -> str:
        return f"layers.{index}.{kind}"

    normed = (site("attn_norm"),)
    found = {site("attn_norm"): Identity((block_input(index),), layer.attn_norm.forward)}
    for kind in ("q", "k", "v", "q2", "k2"):
        if kind in kinds:
            found[site(kind)] = Identity(normed, getattr(layer.attn, kind).forward)
    if isinstance(layer, DepthRoutedBlock):
        found[site("router")] = Identity((block_input(index),), layer.router.forward)
    found[site("ffn_norm")] = Identity((site("attn_residual"),), layer.ffn_norm.forward)
    ffn_input = (site("ffn_norm"),)
    feed_forward = layer.feed_forward
    if isinstance(feed_forward, MoE):
        found[site("moe.router")] = Identity(ffn_input, _flat(feed_forward.router))
        for e, expert in enumerate(feed_forward.experts):
            found[site(f"moe.expert{e}")] = Identity((site(f"moe.expert{e}.input"),), expert.forward)
        if feed_forward.shared is not None:
            found[site("moe.shared")] = Identity(ffn_input, _flat(feed_forward.shared))
        return found
    found[site("ffn_gate")] = Identity(ffn_input, feed_forward.gate.forward)
    found[site("ffn_up")] = Identity(ffn_input, feed_forward.up.forward)
    found[site("ffn_swiglu")] = Identity((site("ffn_gate"), site("ffn_up")), feed_forward.swiglu.forward)
    found[site("ffn_out")] = Identity((site("ffn_swiglu"),), feed_forward.down.forward)
    return found


def identities(model: GPT, layout: Layout) -> dict[str, Identity]:
    """Every site of `model` that is a module's output, by name: the sites it reads and the module."""
    found: dict[str, Identity] = {}
    for index, layer in enumerate(model.layers):
        found |= _block_identities(index, layer, layout.block(index).kinds)
    last = block_input(len(model.layers))
    found["final_norm"] = Identity((last,), model.final_norm.forward)
    found["logits"] = Identity(("final_norm",), model.lm_head.forward)
    return found


# The row `site_deviation` keeps per site: max |traced − recomputed|, max |recomputed| (over the
# elements finite on both sides), and 1 where NaN/Inf stand on one side only or the shapes differ.
ROW = ("max_abs_diff", "ref_absmax", "unmatched")


def site_deviation(traced: torch.Tensor, recomputed: torch.Tensor) -> torch.Tensor:
    """The ROW of a traced site against its recomputation, in float64 on their device: NaN and Inf
    at the same places on both sides are no difference (a model that makes NaN makes it in both,
    and a trace of it stays readable); a site of another shape is unmatched."""
    device = traced.device
    if traced.shape != recomputed.shape:
        return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device)
    if traced.numel() == 0:  # an expert no token was routed to
        return torch.zeros(len(ROW), dtype=torch.float64, device=device)
    # The difference is taken in float64 (recomputed is promoted inside the kernel, not copied),
    # while |recomputed| and its max are exact in its own dtype. A largest difference that is
    # finite proves every element finite on both sides (Inf or NaN on either side makes the
    # difference Inf or NaN, and max keeps a NaN), so nothing is masked; on the host reading that
    # is free, and it skips the finiteness passes, a third of a `small` trace's check on CPU.
    # Elsewhere reading it would synchronise the device, so the masked path always runs there.
    if on_host(traced):
        diff = (traced.double() - recomputed).abs_().max()
        if bool(diff.isfinite()):
            scale = recomputed.abs().max().double()
            return torch.stack([diff, scale, torch.zeros((), dtype=torch.float64)])
    # Each side's finiteness once, and float64 only where it changes a value.
    traced_finite, recomputed_finite = traced.isfinite(), recomputed.isfinite()
    unmatched = (traced_finite != recomputed_finite).any()
    stray = traced_finite.logical_and_(recomputed_finite).logical_not_()
    diff = (traced.double() - recomputed).abs_().masked_fill_(stray, 0.0).max()
    scale = recomputed.abs().masked_fill_(stray, 0.0).max().double()
    return torch.stack([diff, scale, unmatched.double()])


def as_measured(row: list[float]) -> dict[str, float | str]:
    """GATE-TRACE-002's values of one site from its ROW read back: an unmatched site is "inf" away."""
    diff, scale, unmatched = row
    return {"max_abs_diff": "inf" if unmatched else diff, "ref_absmax": scale}


def fed_inputs(feed: Mapping[str, torch.Tensor] | None, n_layers: int) -> dict[str, torch.Tensor]:
    """The block inputs (and final_norm's) that shadow mode hands the blocks instead of the previous
    block's output: what their identities read there."""
    if feed is None:
        return {}
    sources = {block_input(layer) for layer in range(n_layers + 1)}
    return {name: tensor for name, tensor in feed.items() if name in sources}


class SiteIdentities:
    """The identities of one traced forward, measured on the device as its sites are shown (`visit`)."""

    def __init__(
        self, table: Mapping[str, Identity], fed: Mapping[str, torch.Tensor], ablated: frozenset[str]
    ) -> None:
        self.table, self.fed, self.ablated = table, fed, ablated
        self.rows: dict[str, torch.Tensor] = {}
        self._seen: dict[str, torch.Tensor] = {}

    def _read(self, name: str) -> torch.Tensor | None:
        """The tensor the forward read as site `name`: a fed block input under shadow mode."""
        seen = self._seen.get(name)
        if name in self.fed and seen is not None:
            return self.fed[name].to(seen.dtype)
        return seen

    def visit(self, name: str, tensor: torch.Tensor) -> None:
        """Site `name` as the forward handed it on: its identity's ROW, when it has one."""
        self._seen[name] = tensor
        identity = self.table.get(name)
        if identity is not None and name not in self.ablated:
            reads = [self._read(read) for read in identity.reads]
            if any(read is None for read in reads):  # shown before what it is computed from
                self.rows[name] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=tensor.device)
            else:
                self.rows[name] = site_deviation(tensor, identity.compute(*reads))
        if name.endswith(".output"):  # the next block's input, the one site any later identity reads
            self._seen = {name: tensor}
