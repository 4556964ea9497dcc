"""GATE-TRACE-002's check identity: every site holds what its name says it observes.

A trace is read by its names: `layers.3.q` is taken for the queries of block 3, and a bisection
that names it sends the reader to `attn.q`. A hook registered on the wrong module, or two names
swapped, still records a complete trace whose every statistic looks plausible (queries and keys
are made alike), so completeness alone cannot see it.

Most sites are a module's output on another site's tensor, which the site layout names
(stack.trace.sites): `q`, `k` and `v` (and a differential attention's `q2`, `k2`) are the
block's own projections of `attn_norm`, `q_norm` and `k_norm` its head norms of `q` and `k`,
`attn_norm` its norm of the block's input, `ffn_norm`
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
`output`), the attention (`attn_out`, which needs the rotary tables) and `ffn_silu`, the output
of the product's SiLU (`ffn.swiglu.act`). They are the arithmetic a trace is there to question (a
bisection names a residual added twice there), and the sites that read them (`ffn_norm`, the
next block's `attn_norm`, `final_norm`, `ffn_swiglu`) hold them to their names. Under shadow
mode (`feed`) a block reads the fed tensor, not the previous block's output, and its identities
read it too; an ablated site holds zeros by request, so its own identity is not asked (its
readers see the zeros, as the forward did).

Cost: every module an identity names acts on its input row by row (a projection, a norm, the
SwiGLU product, an expert, a router, the head: one token's row in, one row out), so the identity
holds on every row alone, and by default each is checked on a deterministic sample of
`identity_sample_rows` rows (GATE-TRACE-002): row ⌊i·n/s⌋ for i < s of the site's n rows, the
reads' same rows through the module, compared with the traced rows. That is s/n of one more
forward's projections and a few reductions over s rows per site, instead of a second forward and
float64 copies of every activation, which cost a `small` trace on a CPU several times the forward.
What the sample catches (GATE-TRACE-002's statement): a site that observes another tensor, or a
module's output off by a scale (every row is off), for certain; a fault confined to a run of at
least ⌈n/s⌉ consecutive rows (one sequence of a batch of at most s), for certain, since no gap
between sampled rows is longer; a fault in one row at a place drawn at random, with probability
s/n. A sampled row of a projection's output (a plain nn.Linear, a LoRA-wrapped one, a router:
`affine`) is checked without reading the weight again: its traced rows and its read's are
projected on a few seeded random vectors r (`probes`), y·r against x·(Mᵀr) + b·r, M the map the
module applies (W, or W + s·B·A under an adapter), with Mᵀr kept while the module is unchanged,
since recomputing 16 rows of the head still multiplied by its whole weight, half a forward again
at GPT-2 small's shape on a CPU, and an adapted projection's three products launched again; the
spec states what the probes miss (below 1e-10 a row for a row off by its own size). A mixture's
expert is a feed-forward whose inner tensors are no sites, so its parts show the checks their rows
as the forward makes them (`parts_tapped`), and the expert is held through them (`_check_parts`)
instead of recomputed through its three weights.
`exhaustive=True` (`stack trace --verify`) checks every row, as the whole tensors. The
reductions are kept on the device and read back with the trace's statistics (no synchronisation
per site); the tensors a block's identities read are kept (by reference) until the block's output.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contracts.device_copy import sent
from contracts.site_statistics import Empty, by_size, place_rows
from stack.kernels.host_checks import host_deviations, host_product_deviations
from stack.kernels.host_stats import copy_rows
from stack.model.depth_router import DepthRoutedBlock
from stack.model.feedforward import FeedForward
from stack.model.gpt import GPT
from stack.model.lora import LoRALinear
from stack.model.moe import MoE
from stack.trace.scratch import Scratch
from stack.trace.sites import Layout, block_input
from stack.trace.stats import on_host
from stack.trace.structure import kept

# A module whose output is an affine map of its input row, y = x·Mᵀ + b, with M and b its own:
# a plain projection (M = W) or a LoRA-wrapped one (M = W + s·B·A, or W with Δ merged into it).
Linear = nn.Linear | LoRALinear


def affine(module: nn.Module) -> Linear | None:
    """`module` when a product check can stand in for recomputing it: a plain nn.Linear, or a LoRA
    wrapper whose adapter's dropout is inactive (eval mode, or p = 0), so that its output is the
    same affine map of every row; None for any other module, which is recomputed."""
    if type(module) is nn.Linear:
        return module
    if isinstance(module, LoRALinear) and not (module.lora_dropout.training and module.lora_dropout.p > 0):
        return module
    return None


@dataclass(frozen=True)
class Identity:
    """How a site is computed from the sites it reads: `compute(*tensors of reads)`; `linear` is the
    module when it is an affine map of its one read row by row (`affine`), which a product check can
    stand in for; `parts` the SwiGLU feed-forward when the site is one whose inner tensors are no
    sites (a mixture's expert, its shared expert), checked through its parts (`_check_parts`)."""

    reads: tuple[str, ...]
    compute: Callable[..., torch.Tensor]
    linear: Linear | None = None
    parts: FeedForward | None = None


def _module(reads: tuple[str, ...], module: nn.Module) -> Identity:
    """`module`'s identity on `reads`, product-checkable when it is `affine`."""
    return Identity(reads, _forward(module), affine(module))


def _forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    """`module`'s forward as it is when called: a table of identities is kept across forwards
    (`identities`), and a forward replaced since must be the one that recomputes."""
    return lambda *tensors: module.forward(*tensors)


def _flat(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module` on the (tokens, width) rows a mixture works on."""
    return lambda x: module.forward(x.reshape(-1, x.shape[-1]))


def _block_identities(index: int, layer: nn.Module, kinds: tuple[str, ...]) -> dict[str, Identity]:
    """The identities of block `index`'s sites of `kinds` that are one of its modules' outputs."""

    def site(kind: str) -> str:
        return f"layers.{index}.{kind}"

    normed = (site("attn_norm"),)
    found = {site("attn_norm"): Identity((block_input(index),), _forward(layer.attn_norm))}
    for kind in ("q", "k", "v", "q2", "k2"):
        if kind in kinds:
            found[site(kind)] = _module(normed, getattr(layer.attn, kind))
    for kind in ("q_norm", "k_norm"):  # a head norm reads its projection's rows
        if kind in kinds:
            found[site(kind)] = _module((site(kind[0]),), getattr(layer.attn, kind))
    if isinstance(layer, DepthRoutedBlock):
        found[site("router")] = _module((block_input(index),), layer.router)
    found[site("ffn_norm")] = Identity((site("attn_residual"),), _forward(layer.ffn_norm))
    ffn_input = (site("ffn_norm"),)
    feed_forward = layer.feed_forward
    if isinstance(feed_forward, MoE):
        router = feed_forward.router
        found[site("moe.router")] = Identity(ffn_input, _flat(router), affine(router))
        for e, expert in enumerate(feed_forward.experts):
            found[site(f"moe.expert{e}")] = Identity(
                (site(f"moe.expert{e}.input"),), _forward(expert), parts=expert
            )
        shared = feed_forward.shared
        if shared is not None:
            found[site("moe.shared")] = Identity(ffn_input, _flat(shared), parts=shared)
        return found
    found[site("ffn_gate")] = _module(ffn_input, feed_forward.gate)
    found[site("ffn_up")] = _module(ffn_input, feed_forward.up)
    found[site("ffn_swiglu")] = Identity((site("ffn_gate"), site("ffn_up")), _forward(feed_forward.swiglu))
    found[site("ffn_out")] = _module((site("ffn_swiglu"),), feed_forward.down)
    return found


def identities(model: GPT, layout: Layout) -> dict[str, Identity]:
    """Every site of `model` that is a module's output, by name: the sites it reads and the module
    (kept per model structure and layout, stack.trace.structure: a table to read, not to change)."""
    return kept(model, ("identities", layout), lambda: _identities(model, layout))


def _identities(model: GPT, layout: Layout) -> dict[str, Identity]:
    """`identities`, derived from the model's modules."""
    found: dict[str, Identity] = {}
    for index, layer in enumerate(model.layers):
        found |= _block_identities(index, layer, layout.block(index).kinds)
    last = block_input(len(model.layers))
    found["final_norm"] = Identity((last,), _forward(model.final_norm))
    found["logits"] = _module(("final_norm",), model.lm_head)
    return found


# The row `site_deviation` keeps per site: max |traced − recomputed|, max |recomputed| (over the
# elements finite on both sides), and 1 where NaN/Inf stand on one side only or the shapes differ.
DEVIATION = ("max_abs_diff", "ref_absmax", "unmatched")


def sampled_rows(rows: int, limit: int | None) -> torch.Tensor | None:
    """The rows an identity checks of a site of `rows` rows: ⌊i·rows/limit⌋ for i < limit, evenly
    spaced and the same for every trace of that shape, or every row of a site that has no more
    than `limit`; None (the whole site, recomputed) when `limit` is None (the exhaustive check) or
    the site has no row. A short prompt's sites are a sample of themselves, checked as any other
    sample (a linear site by its product check), not recomputed whole: recomputing 12 rows of
    GPT-2 small's head reads its 25 M weights again, and a 12-token trace would take twice the
    forward."""
    if limit is None or rows == 0:
        return None
    if rows <= limit:
        return torch.arange(rows, dtype=torch.int64)
    return torch.arange(limit, dtype=torch.int64) * rows // limit


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as (rows, width): one row per token (a view wherever the layout allows)."""
    return tensor.reshape(-1, tensor.shape[-1]) if tensor.dim() else tensor.reshape(1, 1)


def row_count(tensor: torch.Tensor) -> int:
    """How many rows `as_rows` makes of `tensor`, without making them."""
    return tensor.numel() // tensor.shape[-1] if tensor.dim() and tensor.shape[-1] else 1


def site_deviation(traced: torch.Tensor, recomputed: torch.Tensor) -> torch.Tensor:
    """The DEVIATION of a traced site from its recomputation, in float64 on their device: NaN and Inf
    at the same places on both sides are no difference (a model that makes NaN makes it in both,
    and a trace of it stays readable); a site of another shape is unmatched."""
    device = traced.device
    if traced.shape != recomputed.shape:
        return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device)
    if traced.numel() == 0:  # an expert no token was routed to
        return torch.zeros(len(DEVIATION), dtype=torch.float64, device=device)
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


def _float_rows(tensors: list[torch.Tensor], empty: Empty | None) -> torch.Tensor:
    """`tensors` stacked as float32 (bf16 widened exactly): into `empty`'s tensor when given, so a
    bf16 stack is not made twice (stacked, then widened)."""
    if empty is None:
        return torch.stack(tensors).float()
    first = tensors[0]
    return torch.stack(tensors, out=empty((len(tensors), *first.shape), torch.float32, first.device))


def sampled_deviations(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], empty: Empty | None = None
) -> torch.Tensor:
    """(len(pairs), 3): each (traced, recomputed) pair's DEVIATION as `site_deviation` defines it,
    for all pairs at once: the pairs are the sampled rows of a forward's sites, a few rows each, so
    the pairs of one size (one per site width, and every product check's projections) are stacked
    as the rows of one matrix (bf16 widened to float32, exactly) and each pass runs once over them,
    instead of a dozen small passes per site. The difference is taken in float32 here: within a
    rounding of itself of the float64 one (where an identity holds the two sides are within a
    factor 2 of each other and their difference is exact), far below site_identity_rtol. On the
    host the C kernel measures them all in one call (stack.kernels.host_checks), with the same
    bits; where it cannot, a largest difference that is finite proves every element finite, as in
    `site_deviation`."""
    if pairs and on_host(pairs[0][0]) and (by_kernel := host_deviations(pairs)) is not None:
        return by_kernel[0]
    device = pairs[0][0].device if pairs else torch.device("cpu")
    out = torch.zeros(len(pairs), len(DEVIATION), dtype=torch.float64, device=device)
    # an empty pair (an expert no token was routed to) is no difference: its row stays 0
    for members in by_size([traced for traced, _ in pairs]):
        traced = _float_rows([pairs[i][0].reshape(-1) for i in members], empty)
        recomputed = _float_rows([pairs[i][1].reshape(-1) for i in members], empty)
        place_rows(out, members, _row_deviations(traced, recomputed))
    return out


def _row_deviations(traced: torch.Tensor, recomputed: torch.Tensor) -> torch.Tensor:
    """(rows, 3) float64: the DEVIATION of each row of the float32 matrix `traced` from the same row
    of `recomputed` (which it may overwrite)."""
    if on_host(traced):
        measured = _finite_row_deviations(traced, recomputed)
        if measured is not None:
            return measured
    diff = torch.sub(traced, recomputed).abs_()
    traced_finite, recomputed_finite = traced.isfinite(), recomputed.isfinite()
    unmatched = (traced_finite != recomputed_finite).any(1).float()
    stray = traced_finite.logical_and_(recomputed_finite).logical_not_()
    diff.masked_fill_(stray, 0.0)
    recomputed.masked_fill_(stray, 0.0)
    return torch.stack([diff.amax(1), recomputed.abs_().amax(1), unmatched], dim=1).double()


def _finite_row_deviations(traced: torch.Tensor, recomputed: torch.Tensor) -> torch.Tensor | None:
    """`_row_deviations` where every element of both matrices is finite, else None: on the host,
    where reading the answer is free (elsewhere it would wait for the device). A largest difference
    per row that is finite in every row proves both sides finite there (Inf or NaN on either side
    makes a difference Inf or NaN, and amax keeps a NaN), so nothing is masked. Overwrites
    `recomputed` only when it answers."""
    largest = torch.sub(traced, recomputed).abs_().amax(1)
    if not bool(largest.isfinite().all()):
        return None
    scale = recomputed.abs_().amax(1)
    return torch.stack([largest, scale, torch.zeros_like(largest)], dim=1).double()


def as_measured(
    row: list[float], rows: int, checked: int, probes: int | None = None
) -> dict[str, float | str | int]:
    """GATE-TRACE-002's values of one site from its DEVIATION read back, with its rows, the rows
    checked and, for a site its product check measured, the probes it was projected on (its
    deviation is then of the projections, whose largest magnitude is at most the site's): an
    unmatched site is "inf" away."""
    diff, scale, unmatched = row
    measured: dict[str, float | str | int] = {
        "max_abs_diff": "inf" if unmatched else diff,
        "ref_absmax": scale,
        "rows": rows,
        "rows_checked": checked,
    }
    if probes is not None:
        measured["probes"] = probes
    return measured


@dataclass(frozen=True)
class Probes:
    """A linear module's product-check vectors at one version of its weights, as rows: `outputs`
    (k, out), k seeded Gaussian vectors r each scaled to unit L1 norm; `inputs` = (Wᵀr)ᵀ (k, in)
    and `offset` = b·r (k, 1), all float32 on the weight's device. For a row x and its output
    y = xWᵀ + b, y·r = x·(Wᵀr) + b·r for every r, so a traced row is checked against its read
    without reading W. Unit L1 vectors keep |y·r| within max|y|, the site's absmax. Rows, not
    columns, because the products take them on the left (`projected_together` says why)."""

    key: tuple[object, ...]
    outputs: torch.Tensor
    inputs: torch.Tensor
    offset: torch.Tensor


# Per linear module, its probes at the weights' version they were made for. Wᵀr reads the whole
# weight, as the module's product does; kept while the weights are unchanged (an optimizer step, a
# load or a move changes the version, the storage or the device), it is read once per checkpoint,
# not once per traced forward.
_PROBES: weakref.WeakKeyDictionary[Linear, Probes] = weakref.WeakKeyDictionary()


def _state(linear: Linear) -> tuple[object, ...]:
    """What `linear`'s map is made of, as its probes are keyed: each tensor's device, dtype, storage
    and in-place version (its weight and bias, and a LoRA wrapper's A and B), and a wrapper's scale
    and whether its Δ is merged into the weight."""
    tensors = [linear.weight, linear.bias]
    adapter: tuple[object, ...] = ()
    if isinstance(linear, LoRALinear):
        tensors += [linear.lora_A, linear.lora_B]
        adapter = (linear.scale, linear.merged)
    return (*((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors if t is not None), *adapter)


def probes(linear: Linear, count: int) -> Probes:
    """`linear`'s `count` probes (Probes), made again only when its map changed (`_state`). The
    vectors are drawn from a generator seeded by the output width: the same for every trace. A LoRA
    wrapper whose Δ is not merged maps x to x·(W + Δ)ᵀ + b: its `inputs` are (W + Δ)ᵀr, Δ = s·B·A
    as the wrapper states it (LoRALinear.delta), so the check reads neither W nor A and B again."""
    weight, bias = linear.weight, linear.bias
    key = (count, *_state(linear))
    kept = _PROBES.get(linear)
    if kept is not None and kept.key == key:
        return kept
    width = weight.shape[0]
    seeded = torch.Generator().manual_seed(width)
    # Drawn width by count and taken as rows: the same seeded vectors whichever way they are stored.
    drawn = torch.randn(width, count, generator=seeded, dtype=torch.float64).t()
    outputs = (drawn / drawn.abs().sum(1, keepdim=True)).float().contiguous().to(weight.device)
    with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):
        inputs = outputs @ weight.detach().float()
        if isinstance(linear, LoRALinear) and not linear.merged:
            inputs += (outputs.double() @ linear.delta()).float()
        offset = outputs.new_zeros(count, 1) if bias is None else outputs @ bias.detach().float()[:, None]
    made = Probes(key, outputs, inputs, offset)
    _PROBES[linear] = made
    return made


def projected_together(
    products: list[tuple[Linear, torch.Tensor, torch.Tensor]], count: int, empty: Empty | None = None
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Each (linear, traced rows Y, read rows X) projected on the linear's `count` probes R (rows
    r), float32 and equal up to rounding when each traced row is the module's output on its read
    row: R·Yᵀ against (WᵀR)ᵀ·Xᵀ + b·R. Every product has the same number of rows (a
    sample), so each side is one matrix with a row of count × rows projections per product:
    returned as (the products' indices in the matrices' row order, traced side, read side).
    Called with autocast off (float32 products, not autocast's bf16 ones).

    Computed as one batched product per shape of module (a block's q, its k and v, its gate and
    up, its down projection, the head: a few shapes however deep the model), written into its
    rows of the two matrices, not two small products per site. The probes go on the left, a few
    rows against the sampled rows' transposes: on a CPU that orientation of the same product ran
    about three times faster than the rows against the probes' columns (16 rows, 8 probes, widths
    128 to 4,096, one core). The modules' probes are stacked once per version of their weights
    (`_stacked`)."""
    by_shape: dict[tuple[object, ...], list[int]] = {}
    for i, (linear, traced, read) in enumerate(products):
        by_shape.setdefault((linear.weight.shape, traced.shape[1], read.shape[1]), []).append(i)
    first = products[0][1]
    shape = (len(products), count, first.shape[0])
    make = empty or (lambda size, dtype, device: torch.empty(size, dtype=dtype, device=device))
    projected, recomputed = (make(shape, torch.float32, first.device) for _ in range(2))
    order: list[int] = []
    for members in by_shape.values():
        outputs, inputs, offsets = _stacked(tuple(probes(products[i][0], count) for i in members))
        traced = _float_rows([products[i][1] for i in members], empty).transpose(1, 2)
        read = _float_rows([products[i][2] for i in members], empty).transpose(1, 2)
        place = slice(len(order), len(order) + len(members))
        torch.bmm(outputs, traced, out=projected[place])
        torch.baddbmm(offsets, inputs, read, out=recomputed[place])
        order += members
    return order, projected.flatten(1), recomputed.flatten(1)


# The probes of a group of modules stacked for `projected_together`, by the Probes objects (the same
# objects while the weights are unchanged, and kept alive here, so their identities are a key no
# other group can take); the last few groups only, about one per shape of module of a model.
Stacked = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
_STACKED: dict[tuple[int, ...], tuple[tuple[Probes, ...], Stacked]] = {}
_STACKED_KEPT = 64


def _stacked(made: tuple[Probes, ...]) -> Stacked:
    """(outputs, inputs, offsets) of `made` stacked: (g, k, out), (g, k, in), (g, k, 1)."""
    key = tuple(id(probe) for probe in made)
    kept = _STACKED.get(key)
    if kept is not None:
        return kept[1]
    stacked = (
        torch.stack([probe.outputs for probe in made]),
        torch.stack([probe.inputs for probe in made]),
        torch.stack([probe.offset for probe in made]),
    )
    if len(_STACKED) >= _STACKED_KEPT:
        del _STACKED[next(iter(_STACKED))]
    _STACKED[key] = (made, stacked)
    return stacked


def fed_inputs(feed: Mapping[str, torch.Tensor] | None, n_layers: int) -> dict[str, torch.Tensor]:
    """The block inputs (and final_norm's) that shadow mode hands the blocks instead of the previous
    block's output: what their identities read there."""
    if feed is None:
        return {}
    sources = {block_input(layer) for layer in range(n_layers + 1)}
    return {name: tensor for name, tensor in feed.items() if name in sources}


# A site set aside for its product check: (name, its sampled rows, its read's same rows, the module).
ProductCheck = tuple[str, torch.Tensor, torch.Tensor, Linear]


class SiteIdentities:
    """The identities of one traced forward, measured on the device as its sites are shown (`visit`),
    each on at most `sample_rows` rows of its site (None: every row, the exhaustive check)."""

    def __init__(
        self,
        table: Mapping[str, Identity],
        fed: Mapping[str, torch.Tensor],
        ablated: frozenset[str],
        sample_rows: int | None = None,
        probe_count: int | None = None,
        scratch: Scratch | None = None,
    ) -> None:
        self.fed, self.sample_rows = fed, sample_rows
        self.probe_count = probe_count
        # Where the sampled rows and their recomputations are kept until `deviations` (a traced
        # forward lends its own: stack.trace.scratch says why).
        self.scratch = Scratch() if scratch is None else scratch
        # Per checked site in forward order, its DEVIATION, or None while its sampled rows wait in
        # `_pending` to be measured with the others' (`deviations`).
        self.rows: dict[str, torch.Tensor | None] = {}
        self.counted: list[tuple[int, int]] = []  # (rows, rows checked) of each of `rows`, in order
        self._pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        # Sampled rows of an affine site (a plain or adapted projection, a router) and of its read,
        # product-checked in `deviations`.
        self._products: list[ProductCheck] = []
        # After `deviations`, the sites whose DEVIATION is their product check's, with the probes it
        # projected them on (the record states them: the deviation is then of the projections).
        self.probed: dict[str, int] = {}
        # On an accelerator, after `deviations`: the product-checked sites, and per site whether its
        # projections were all finite (on the device, for the caller to read with the rest of the
        # trace, not before: `remeasured` then measures a site whose were not).
        self.projected: list[ProductCheck] = []
        self.projections_finite: torch.Tensor | None = None
        # Sampled rows of any other site and of its reads, recomputed by its module in `deviations`:
        # the rows are copies, so the module can run after the forward, when what it reads is
        # still in the cache, not between the forward's products, whose data has evicted the
        # interpreter's and the dispatcher's (a small operation there costs several times more).
        # (its index in `counted`, name, rows, reads' rows, identity)
        self._recomputed: list[tuple[int, str, torch.Tensor, list[torch.Tensor], Identity]] = []
        # Per site some identity reads or checks, (its identity if it is asked, whether one reads
        # it): the tensors read are kept (by reference) until the block's output, no other, so that
        # a traced forward frees each activation when the plain one does, and reuses its memory
        # while it is still in the cache. An ablated site's identity is not asked.
        reads = {read for identity in table.values() for read in identity.reads}
        self._roles = {name: (None, True) for name in reads}
        for name, identity in table.items():
            if name not in ablated:
                self._roles[name] = (identity, name in reads)
        self._seen: dict[str, torch.Tensor] = {}
        # The sampled rows of each site read or checked so far in this block, copied when the site
        # is shown (before anything can write into it), so that q, k and v, which read one site,
        # and a checked site's readers share one copy: (the rows chosen, their copy).
        self._site_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._chosen: dict[tuple[int, torch.device], torch.Tensor | None] = {}
        # Per feed-forward site checked through its parts, the sampled rows of its gate's and up's
        # outputs and of its down projection's input, copied as the forward makes them (`parts_tapped`).
        self._captured: dict[str, dict[str, torch.Tensor]] = {}

    @contextmanager
    def parts_tapped(self) -> Iterator[None]:
        """While inside, every feed-forward site checked through its parts (Identity.parts) on a
        sample shows the checks its gate's and up's outputs and its down projection's input, each
        copied at the rows sampled of its read as the forward makes it; nothing under the exhaustive
        check, which recomputes the whole site."""
        handles = []
        if self.sample_rows is not None:
            for name, (identity, _) in self._roles.items():
                inner = None if identity is None else identity.parts
                if inner is not None:
                    read = identity.reads[0]
                    handles += [
                        inner.gate.register_forward_hook(self._tap(name, "gate", read)),
                        inner.up.register_forward_hook(self._tap(name, "up", read)),
                        inner.down.register_forward_pre_hook(self._tap(name, "hidden", read)),
                    ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _tap(self, name: str, part: str, read: str) -> Callable[..., None]:
        """A hook that copies `part` of site `name`'s feed-forward at the rows sampled of its read
        (a forward hook's output, or a pre-hook's first argument), when it has as many rows."""

        def copy(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor | None = None) -> None:
            tensor = args[0] if output is None else output
            kept = self._site_rows.get(read)
            if kept is not None and kept[0] is self._sampled(row_count(tensor), tensor.device):
                self._captured.setdefault(name, {})[part] = self.scratch.rows(tensor, kept[0])

        return copy

    def _read(self, name: str) -> torch.Tensor | None:
        """The tensor the forward read as site `name`: a fed block input under shadow mode."""
        seen = self._seen.get(name)
        if name in self.fed and seen is not None:
            return self.fed[name].to(seen.dtype)
        return seen

    def visit(
        self, name: str, tensor: torch.Tensor, *, copies: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Site `name` as the forward handed it on: its identity's DEVIATION, when it has one, taken
        now or set aside for `deviations`. A check reads a few rows of the site, copied into the
        scratch before anything can write into it: by `visit` itself, or with `copies` by the
        caller, to whom `visit` then returns where they go, (rows chosen, their scratch), or None
        (none read, or every row: the site itself). A traced forward's statistics kernel copies
        them as it reads the site (stack.trace.stats). Nothing here reads the rows' values: every
        sampled check runs after the forward."""
        role = self._roles.get(name)
        if role is None:
            return None
        identity, read = role
        rows, sample = None, self.sample_rows
        if sample is not None and tensor.dim():
            chosen = self._sampled(row_count(tensor), tensor.device)
            if chosen is not None:  # the sample: `sample` rows, or every row of a short site
                into = self.scratch.take((chosen.numel(), tensor.shape[-1]), tensor.dtype, tensor.device)
                rows = self._site_rows[name] = (chosen, into)
                if not copies:
                    copy_rows(tensor, chosen, into)
        if read:
            self._seen[name] = tensor
        if identity is not None:
            reads = [self._read(read) for read in identity.reads]
            if any(read is None for read in reads):  # shown before what it is computed from
                self.rows[name] = self._counted(0, 0, _UNMATCHED.to(tensor.device))
            else:
                self.rows[name] = self._check(name, tensor, identity, reads)
        if name.endswith(".output"):  # the next block's input, the one site any later identity reads
            self._seen = {name: tensor}
            self._site_rows = {name: rows} if rows is not None else {}
        return rows if copies else None

    def _check(
        self, name: str, tensor: torch.Tensor, identity: Identity, reads: list[torch.Tensor]
    ) -> torch.Tensor | None:
        """The DEVIATION of one site from its module on the reads over every row, or (None) its
        sampled rows and their recomputation set aside for `deviations`; the counts go to
        `counted`. A site with another number of rows than its reads is unmatched: it observes
        another tensor."""
        rows = row_count(reads[0])
        chosen = self._sampled(rows, tensor.device)
        if chosen is None:
            return self._counted(rows, rows, site_deviation(tensor, identity.compute(*reads)))
        kept = self._site_rows.get(name)
        if kept is None or kept[0] is not chosen:  # another number of rows than its reads
            return self._counted(rows, 0, _UNMATCHED.to(tensor.device))
        sampled = kept[1]
        read_rows = [
            self._rows_of(read_name, read, chosen)
            for read_name, read in zip(identity.reads, reads, strict=True)
        ]
        captured = self._captured.pop(name, {})
        inner = identity.parts
        if inner is not None and captured.keys() == {"gate", "up", "hidden"}:
            return self._check_parts(name, rows, sampled, read_rows[0], inner, captured)
        return self._set_aside(name, rows, sampled, read_rows, identity)

    def _check_parts(
        self,
        name: str,
        rows: int,
        sampled: torch.Tensor,
        read: torch.Tensor,
        inner: FeedForward,
        captured: dict[str, torch.Tensor],
    ) -> torch.Tensor | None:
        """A feed-forward site's sampled rows checked through its parts, each set aside as an
        identity of its own named `<site>.<part>`: gate and up of the read rows, and (`swiglu`) what
        the down projection read against the SwiGLU product of their rows; the site's own rows as
        the down projection of what it read. A plain or adapted projection is product-checked, so
        no weight of the feed-forward is read again. Together they hold the site to the
        feed-forward of its read, as recomputing it did."""
        gate, up, hidden = captured["gate"], captured["up"], captured["hidden"]
        for part, shown, reads, module in (
            ("gate", gate, [read], inner.gate),
            ("up", up, [read], inner.up),
            ("swiglu", hidden, [gate, up], inner.swiglu),
        ):
            self.rows[f"{name}.{part}"] = self._set_aside(
                f"{name}.{part}", rows, shown, reads, _module((), module)
            )
        return self._set_aside(name, rows, sampled, [hidden], _module((), inner.down))

    def _set_aside(
        self, name: str, rows: int, sampled: torch.Tensor, read_rows: list[torch.Tensor], identity: Identity
    ) -> torch.Tensor | None:
        """`sampled`, rows of site `name`, and its reads' same rows set aside for `deviations`: for
        the product check where the module is affine (a read of another width is unmatched), else
        for the module's recomputation."""
        linear = identity.linear
        if linear is not None and self.probe_count is not None:
            if (sampled.shape[1], read_rows[0].shape[1]) != (linear.out_features, linear.in_features):
                return self._counted(rows, 0, _UNMATCHED.to(sampled.device))
            self._products.append((name, sampled, read_rows[0], linear))
            return self._counted(rows, sampled.shape[0], None)
        self._recomputed.append((len(self.counted), name, sampled, read_rows, identity))
        return self._counted(rows, sampled.shape[0], None)

    def _sampled(self, rows: int, device: torch.device) -> torch.Tensor | None:
        """`sampled_rows` of a site of `rows` rows on `device`, made once per forward and shape."""
        key = (rows, device)
        if key not in self._chosen:
            chosen = sampled_rows(rows, self.sample_rows)
            self._chosen[key] = None if chosen is None else self.scratch.copy(sent(chosen, device))
        return self._chosen[key]

    def _rows_of(self, name: str, read: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Rows `at` of site `name` as read: the copy taken when it was shown, or (a fed block input,
        or rows chosen for another count) one taken now."""
        kept = self._site_rows.get(name)
        if kept is None or kept[0] is not at or name in self.fed:
            return self.scratch.rows(read, at)
        return kept[1]

    def _counted(self, rows: int, checked: int, deviation: torch.Tensor | None) -> torch.Tensor | None:
        self.counted.append((rows, checked))
        return deviation

    @torch.no_grad()
    def deviations(self) -> dict[str, torch.Tensor]:
        """Every checked site's DEVIATION, in forward order: the sampled ones measured together, in a
        few reductions over all their rows instead of a dozen small ones per site (no graph: a
        measurement, never differentiated)."""
        self._measure_products()
        self._recompute()
        if self._pending:
            pairs = [(traced, again) for _, traced, again in self._pending]
            measured = sampled_deviations(pairs, self.scratch.take)
            for (name, _, _), row in zip(self._pending, measured, strict=True):
                self.rows[name] = row
            self._pending = []
        return {name: row for name, row in self.rows.items() if row is not None}

    def _recompute(self) -> None:
        """Each set-aside site's module on its reads' sampled rows, paired with its traced rows for
        `deviations` (a recomputation of another shape than the rows is unmatched: none checked)."""
        recomputed, self._recomputed = self._recomputed, []
        for index, name, sampled, read_rows, identity in recomputed:
            again = identity.compute(*read_rows)
            if sampled.shape != again.shape:
                self.rows[name] = _UNMATCHED.to(sampled.device)
                self.counted[index] = (self.counted[index][0], 0)
            else:
                self._pending.append((name, sampled, again))

    def _measure_products(self) -> None:
        """The product-checked sites' DEVIATIONs, of their rows projected on the module's probes
        (`projected_together`), the sites of one number of rows as the rows of one matrix (a
        forward's sites have the same number, but for the tokens a routed block takes); or, where a
        site's projections are not all finite (a NaN or an Inf in its rows or its read's), of its
        rows against the module recomputed on them, so that NaN/Inf are held to the same places as
        everywhere else. On the host whether any is not finite is read at once, for all of them;
        on an accelerator reading it would wait for the whole forward before the other checks are
        queued, so the rows are the projections' there and `projections_finite` says, with the
        trace's one transfer, which sites `remeasured` must measure again."""
        products, self._products = self._products, []
        groups: dict[int, list[ProductCheck]] = {}
        for product in products:
            groups.setdefault(product[1].shape[0], []).append(product)
        finite = []
        for group in groups.values():
            if not self._measured_on_host(group) and (flags := self._measured_by_torch(group)) is not None:
                finite.append(flags)
        if finite:
            self.projections_finite = torch.cat(finite)

    def _measured_by_torch(self, products: list[ProductCheck]) -> torch.Tensor | None:
        """`_measure_products` of sites of one number of rows by torch's ops: on an accelerator, the
        projections' finite flags of the sites it adds to `projected`, for the caller to read with
        the trace; on the host None, every site measured or set aside for `deviations`."""
        count = self.probe_count or 0
        with torch.autocast(products[0][1].device.type, enabled=False):
            order, projected, recomputed = projected_together(
                [(linear, traced, read) for _, traced, read, linear in products], count, self.scratch.take
            )
        ordered = [products[i] for i in order]
        if not on_host(projected):
            self.projected += ordered
            measured = _row_deviations(projected, recomputed)
            for (name, *_), row in zip(ordered, measured, strict=True):
                self.rows[name], self.probed[name] = row, count
            return projected.isfinite().all(1) & recomputed.isfinite().all(1)
        measured = _finite_row_deviations(projected, recomputed)
        for index, (name, traced, read, linear) in enumerate(ordered):
            side, again = projected[index], recomputed[index]
            if measured is not None:
                self.rows[name], self.probed[name] = measured[index], count
            elif bool(torch.cat([side, again]).isfinite().all()):
                self._pending.append((name, side, again))
                self.probed[name] = count
            else:
                self._pending.append((name, traced, linear.forward(read)))
        return None

    def _measured_on_host(self, products: list[ProductCheck]) -> bool:
        """`_measure_products` by the C kernel (stack.kernels.host_checks), where the rows are on the
        host and it can read them: the projections and their deviations in two calls, a site whose
        projections were not all finite set against its module recomputed on its rows. False where
        the torch ops must measure them."""
        first = products[0][1]
        if not on_host(first):
            return False
        count = self.probe_count or 0
        checks = []
        for _, traced, read, linear in products:
            made = probes(linear, count)
            checks.append((made.outputs, made.inputs, made.offset, traced, read))
        shape = (len(products), count * first.shape[0])
        sides = [self.scratch.take(shape, torch.float32, first.device) for _ in range(2)]
        measured = host_product_deviations(checks, *sides)
        if measured is None:
            return False
        rows, finite = measured
        for (name, traced, read, linear), row, ok in zip(products, rows.unbind(0), finite, strict=True):
            if ok:
                self.rows[name], self.probed[name] = row, count
            else:
                self._pending.append((name, traced, linear.forward(read)))
        return True

    @torch.no_grad()
    def remeasured(self, finite: list[float]) -> dict[str, torch.Tensor]:
        """The DEVIATIONs of the product-checked sites (`projected`) whose projections `finite`, read
        back from `projections_finite`, says were not all finite: their rows against the module
        recomputed on them, as on the host."""
        again = [
            (name, traced, linear.forward(read))
            for ok, (name, traced, read, linear) in zip(finite, self.projected, strict=True)
            if not ok
        ]
        measured = sampled_deviations(
            [(traced, recomputed) for _, traced, recomputed in again], self.scratch.take
        )
        return {name: row for (name, _, _), row in zip(again, measured, strict=True)}


# The DEVIATION of a site that cannot be set against its recomputation.
_UNMATCHED = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
