"""The traced forward: one pass of the model that records the statistics of every site.

Each site's statistics are one on-device vector (stack.trace.stats); the vectors of the whole
forward are stacked and moved to the host once, after the pass, so tracing adds no device
synchronisation per site or per statistic. The hooks only read: the traced logits are the
untraced ones, bit for bit (GATE-TRACE-001). `trace_forward` is bound to GATE-TRACE-002: a
trace that lacks a site of any layer, or a statistic of any site, is refused, and so is one with
a site that does not hold what its name says (stack.trace.site_identity: each site that is a
module's output, recomputed by that module from the traced sites it reads).

`keep=True` also keeps a copy of every site's tensor, which bisection compares element by
element; `ablate` zeroes the named sites as the forward goes; `feed` is shadow mode (see hooks).

What the checks of GATE-TRACE-002 cost is bounded, so that tracing stays cheap enough to run on
every checkpoint. The identities are checked on `identity_sample_rows` rows of each site, a
linear site's by a product check on `identity_probes` random vectors (stack.trace.site_identity
says why a sample and the probes keep their power). The statistics are held to
their definitions on a bounded sample of sites (the first of each row layout the statistics
kernels read: `statistics_sample`), each on a slice of evenly spaced rows of at most
`statistics_sample_elements` elements read where the site lies (its layout and dtype, so the
fused kernel's path): the kernel's statistics of that slice against contracts.site_statistics'
float64 definitions of the same slice, and every site's statistics to each other. A fused kernel
that computes another quantity computes it on every slice. The exhaustive
check (`exhaustive=True`, or inside `exhaustive_checks()`: `stack trace --verify`) checks every
row of every identity and each sampled site whole, as its recorded statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.profiler import record_function

from contracts import site_statistics
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.selection import trace_sites
from contracts.spec import load_spec
from stack.model.gpt import GPT
from stack.trace.hooks import SiteHooks
from stack.trace.scratch import lent
from stack.trace.site_identity import DEVIATION, SiteIdentities, as_measured, as_rows, fed_inputs, identities
from stack.trace.sites import (
    DENSE,
    STATS,
    TRACE_SCHEMA_VERSION,
    BlockLayout,
    Layout,
    layout_for,
    site_names,
    split,
)
from stack.trace.stats import as_dict, finish, site_stats


@dataclass(frozen=True)
class SiteRecord:
    """What a trace knows about one site without its values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    stats: dict[str, float]


@dataclass
class Trace:
    """The sites of one forward in the order they were recorded, and optionally their values.

    `values` holds full tensors for a trace made in this process with keep=True, or for a trace
    read back from a dump the site's flattened elements, or a fixed sample of them.
    """

    n_layers: int
    sites: dict[str, SiteRecord]
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    duplicates: tuple[str, ...] = ()
    schema_version: int = TRACE_SCHEMA_VERSION
    layout: Layout = DENSE
    # Per site that is a module's output, how far it is from that module on the sites it reads
    # (stack.trace.site_identity); measured by the traced forward, absent from a trace read back.
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per site of `statistics_sample`, the statistics the fused kernel gave of the rows checked (the
    # site's own when every row was), those of their definitions (contracts.site_statistics), and
    # (rows checked, rows); measured by the traced forward only.
    sampled: dict[str, dict[str, float]] = field(default_factory=dict)
    recomputed: dict[str, dict[str, float]] = field(default_factory=dict)
    sample_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The sites whose tensor the forward's hooks replaced with zeros (SiteHooks.replaced): where an
    # ablation acted, measured by the hooks, not by the list of sites it was handed.
    zeroed: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        """The expected sites of this model in forward order (present or not)."""
        return site_names(self.n_layers, self.layout)

    def stat(self, name: str, statistic: str) -> float:
        """One statistic of one site."""
        return self.sites[name].stats[statistic]

    def completeness(self) -> Outcome:
        """GATE-TRACE-002: every site of every layer present, once, with every statistic, and (for a
        trace this process made) each site that is a module's output that module's on its reads."""
        missing = [n for n in self.names if n not in self.sites]
        partial = [n for n, r in self.sites.items() if None in map(r.stats.get, STATS)]
        problems = {"missing": missing, "partial": partial, "recorded_twice": list(self.duplicates)}
        measured: dict[str, object] = {k: len(v) for k, v in problems.items()}
        measured["examples"] = {k: v[:5] for k, v in problems.items() if v}
        measured["sites"] = len(self.names)
        if self.identities:
            measured["identities"] = self.identities
        if self.recomputed:
            strict = site_statistics.strict
            measured["stats_recorded"] = {n: strict(v) for n, v in self.sampled.items()}
            measured["stats_recomputed"] = {n: strict(v) for n, v in self.recomputed.items()}
            measured["stats_rows"] = {n: list(v) for n, v in self.sample_rows.items()}
        return measure("GATE-TRACE-002", measured, holds="trace complete, every site what its name says")


def kept_sites(payload: Mapping[str, Any]) -> dict[str, list[str]]:
    """The sites each trace a report keeps shows, by label (`trace`, or path A/B, intact/ablated),
    read from the report itself: what --json and the record will hold."""
    kept = {"trace": payload.get("trace"), **(payload.get("traces") or {})}
    return {
        label: [site["name"] for site in trace.get("sites") or []]
        for label, trace in kept.items()
        if isinstance(trace, Mapping)
    }


def selection(
    payload: Mapping[str, Any], traced: list[str], layers: str | None, pattern: str | None, n_layers: int
) -> Outcome:
    """GATE-TRACE-002's check selection: the sites the report's traces show against those
    contracts.selection.trace_sites selects from the forward's sites by --layers and --sites."""
    chosen = trace_sites(traced, layers, pattern, n_layers)
    return measure("GATE-TRACE-002", {"shown": kept_sites(payload), "selected": chosen, "traced": traced})


@gate_require("GATE-TRACE-002", selection)
def check_selection(
    payload: Mapping[str, Any], traced: list[str], layers: str | None, pattern: str | None, n_layers: int
) -> None:
    """Bound to GATE-TRACE-002 (check selection): a report whose traces show other sites than
    --layers and --sites select halts the trace before it is written."""


# Whether a site the forward shows is one of the check statistics' sample: called once per site.
Sample = Callable[[torch.Tensor], bool]


def statistics_sample() -> Sample:
    """The sites whose statistics one traced forward computes again from their tensors
    (GATE-TRACE-002, check statistics): the first site the forward shows of each row layout the
    statistics kernels read, its device, dtype, row width, the strides of its rows and whether it is
    contiguous, however many rows it has. Sites alike in these are read by the same path of the same
    kernel, their rows laid out alike (a CPU site's columns and row stride, or a contiguous copy of a
    layout whose rows do not flatten; a CUDA site's launch over its rows), so what one
    of them shows of the kernel each shows; a model's sites come in a few such layouts (six at the
    `small` preset: the residual-width tensors, q, k with v, gate with up, the feed-forward's inner
    width, the logits), however deep it is and however its tokens are routed (a mixture's experts
    read rows of the residual width, each expert its own number of them)."""
    seen: set[tuple[object, ...]] = set()

    def takes(tensor: torch.Tensor) -> bool:
        rows = (tensor.shape[-1:], tensor.stride()[-2:], tensor.is_contiguous())
        layout = (tensor.device, tensor.dtype, *rows)
        if layout in seen:
            return False
        seen.add(layout)
        return True

    return takes


_EXHAUSTIVE: ContextVar[bool] = ContextVar("exhaustive", default=False)


@contextmanager
def exhaustive_checks() -> Iterator[None]:
    """Every traced forward made inside holds GATE-TRACE-002's identities on every row and its
    statistics on whole sites (`stack trace --verify`): a command's calibrations, paths and
    ablations all trace through here, without a flag handed down each of them."""
    token = _EXHAUSTIVE.set(True)
    try:
        yield
    finally:
        _EXHAUSTIVE.reset(token)


@dataclass(frozen=True)
class CheckBudget:
    """How much of each site GATE-TRACE-002's checks read: None reads all of it."""

    identity_rows: int | None
    statistics_elements: int | None
    identity_probes: int | None

    @classmethod
    def of(cls, exhaustive: bool) -> CheckBudget:
        """The spec's sample sizes, or the exhaustive check."""
        if exhaustive:
            return cls(None, None, None)
        spec = load_spec()
        return cls(
            int(spec.threshold("GATE-TRACE-002", "identity_sample_rows")),
            int(spec.threshold("GATE-TRACE-002", "statistics_sample_elements")),
            int(spec.threshold("GATE-TRACE-002", "identity_probes")),
        )


def statistics_slice(tensor: torch.Tensor, elements: int | None) -> tuple[torch.Tensor, int, int]:
    """The rows of `tensor` its statistics are checked on, a view in its own layout (every
    ⌈n/k⌉-th of its n rows, k rows of at most `elements` elements in all, at least one), with
    (rows checked, rows); the whole tensor when it fits or `elements` is None."""
    rows = as_rows(tensor)
    count = rows.shape[0]
    fits = count if elements is None else max(1, elements // max(1, rows.shape[1]))
    if fits >= count:
        return tensor, count, count
    step = -(-count // fits)
    chosen = rows[::step]
    return chosen, chosen.shape[0], count


class Rows:
    """The statistics rows of one traced forward's sites: float64 on the device, made before the
    forward with a row for every site the model has, handed out row by row (`take`). A row never
    moves once handed out, since a CUDA site's is written only after the forward, by its queued
    merge: a forward that shows more sites (none should) gets another matrix as large, and `used`
    joins them."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.chunks = [torch.zeros(max(1, capacity), len(STATS) - 1, dtype=torch.float64, device=device)]
        self.views = list(self.chunks[0].unbind(0))  # every row's view at once, not one indexing per site
        self.count = 0

    def take(self) -> torch.Tensor:
        """The next free row (a view, written by site_stats)."""
        if self.count == len(self.views):
            chunk = self.chunks[-1].new_zeros(self.chunks[-1].shape)
            self.chunks.append(chunk)
            self.views += chunk.unbind(0)
        self.count += 1
        return self.views[self.count - 1]

    def used(self) -> torch.Tensor:
        """(rows taken, len(STATS) - 1): the rows written, in the order they were taken."""
        matrix = self.chunks[0] if len(self.chunks) == 1 else torch.cat(self.chunks)
        return matrix[: self.count]


# The slices' rows made before a forward: one per row layout the statistics kernels read (six at the
# `small` preset: statistics_sample); a forward that checks more takes another matrix as large.
_SLICES = 8


def _widened(dtype: torch.dtype) -> torch.dtype:
    """The dtype a slice's copy for its definitions is kept in: float32 for a narrower float (which
    it holds exactly), the slice's own otherwise."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


# GATE-TRACE-002's values of each site an identity checks, by site (site_identity.as_measured).
Measured = dict[str, dict[str, Any]]

# The parts of a traced forward, as a profiler's ranges name them, in the order they run: the model's
# forward with every site's hooks, statistics and copies; then, after it, the identities measured on
# their samples, the statistics' definitions of the sampled slices, the one host transfer (where the
# host waits for the device) and the records built from it. benchmarks/trace_overhead.py splits the
# host's time by them, so that a record says which part a traced forward's excess is spent in. A
# range costs a few microseconds when no profiler runs: some 20 a forward.
PHASES = ("forward", "identities", "statistics check", "transfer", "records")


def phase(name: str) -> record_function:
    """The profiler's range of one of PHASES (`trace: <name>`)."""
    return record_function(f"trace: {name}")


class _Recorder:
    """The visitor of one traced forward: statistics on device, values when asked to keep them.

    Every result it keeps past a site goes into storage made before the forward: the statistics'
    `Rows`, and the checks' copies in the forward's scratch (stack.trace.scratch says why)."""

    def __init__(
        self,
        keep: bool,
        ablate: frozenset[str],
        identities: SiteIdentities,
        sample: Sample,
        statistics_elements: int | None,
        sites: int,
        device: torch.device,
    ) -> None:
        self.keep, self.ablate, self.identities, self.sample = keep, ablate, identities, sample
        self.statistics_elements = statistics_elements
        # A row per site, and one per sampled site whose check reads a slice of it (`_sample`).
        self.stats, self.slice_stats = Rows(sites, device), Rows(_SLICES, device)
        # On CUDA, the sites' merges, queued as they are shown and launched together after the
        # forward (stack.trace.stats.finish): their rows are written only then.
        self.pending: list = []
        self.order: list[str] = []
        self.meta: dict[str, tuple[tuple[int, ...], str]] = {}
        self.values: dict[str, torch.Tensor] = {}
        # Per sampled site: the kernel's statistics of its slice, their definitions' (or, for a
        # bounded slice, its copy until the end of the forward), (checked, rows).
        self.sampled: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}
        self.duplicates: list[str] = []
        # While a site's identity is checked: the module it recomputes may hold a site of its own,
        # whose hook then shows the check's call, which is not the forward's.
        self.checking = False

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        if self.checking:  # a check recomputing a module with a site inside it (ffn.swiglu's act)
            return None
        replacement = torch.zeros_like(tensor) if name in self.ablate else None
        seen = tensor if replacement is None else replacement
        if name in self.meta:
            self.duplicates.append(name)
            return replacement
        self.order.append(name)
        self.checking = True  # an identity checked on every row recomputes its module now
        try:
            rows = self.identities.visit(name, seen, copies=True)
        finally:
            self.checking = False
        # The statistics kernel copies the rows the checks read as it reads the site.
        row = site_stats(seen, out=self.stats.take(), rows=rows, pending=self.pending)
        self.meta[name] = (tuple(seen.shape), str(seen.dtype).removeprefix("torch."))
        if self.keep:
            # A copy, so that a later in-place write into the same storage cannot change the record.
            self.values[name] = seen.detach().clone()
        if self.sample(seen):
            self._sample(name, seen, row)
        return replacement

    def _sample(self, name: str, seen: torch.Tensor, row: torch.Tensor) -> None:
        """A sampled site's statistics by the kernel and by their definitions, of the same rows,
        taken now (on the device, nothing read back) before anything can write into them: a whole
        site's definitions at once, a bounded slice's as a copy into the forward's scratch, whose
        definitions are computed with the other slices' at the end of the forward
        (`_definitions`). The copy of a bf16 or fp16 slice is float32, which holds it exactly
        (float64 would double it again): torch's CPU reductions run several times slower over bf16
        than over float32, and a bf16 trace's definitions took longer than the copies' widening."""
        chosen, checked, count = statistics_slice(seen, self.statistics_elements)
        by_kernel = (
            row if checked == count else site_stats(chosen, out=self.slice_stats.take(), pending=self.pending)
        )
        definitions = (
            site_statistics.statistics(chosen)
            if self.statistics_elements is None
            else self.identities.scratch.copy(chosen, _widened(chosen.dtype))
        )
        self.sampled[name] = (by_kernel, definitions, (checked, count))

    def _definitions(self) -> list[torch.Tensor]:
        """Each sampled site's statistics by their definitions, in `sampled`'s order: the slices'
        together, in one contracts.site_statistics.statistics_of."""
        kept = [again for _, again, _ in self.sampled.values()]
        if self.statistics_elements is None or not kept:
            return kept
        return list(site_statistics.statistics_of(kept, self.identities.scratch.take).unbind(0))

    def trace(self, n_layers: int, layout: Layout) -> Trace:
        finish(self.pending)  # first, so the device merges while the host checks
        with phase("identities"):
            deviation_of = self.identities.deviations()
        stats, rows = self.stats.used(), list(deviation_of.values())
        deviations = torch.stack(rows).to(stats.dtype) if rows else stats.new_zeros(0, len(DEVIATION))
        with phase("statistics check"):
            pairs = [
                side
                for (kernel, _, _), again in zip(self.sampled.values(), self._definitions(), strict=True)
                for side in (kernel, again.to(stats.device))
            ]
        # The one host transfer: every site's statistics, every identity's row, every sampled
        # site's statistics of its slice by the kernel and by their definitions (and on an
        # accelerator, whether each product check's projections were finite).
        finite = self.identities.projections_finite
        doubted = [] if finite is None else [finite.to(stats.dtype)]
        with phase("transfer"):
            flat = torch.cat([stats.flatten(), deviations.flatten(), *pairs, *doubted]).cpu().tolist()
        with phase("records"):
            return self._records(n_layers, layout, flat, stats.shape[1], list(deviation_of))

    def _records(
        self, n_layers: int, layout: Layout, flat: list[float], width: int, checked: list[str]
    ) -> Trace:
        """The trace from the one host transfer `flat`: every site's statistics (a row of `width` a
        site), then the DEVIATION of each identity `checked`, then each sampled site's statistics by
        the kernel and by their definitions (and on an accelerator, the product checks' finite
        flags)."""
        sampled = list(self.sampled)
        finite = self.identities.projections_finite
        cut = len(self.order) * width
        tail = cut + len(checked) * len(DEVIATION)
        size = width + len(site_statistics.STATISTICS)
        by_kernel, recomputed, sample_rows = {}, {}, {}
        for i, name in enumerate(sampled):
            start = tail + i * size
            rows_checked, count = self.sampled[name][2]
            elements = math.prod(self.meta[name][0]) // max(1, count) * rows_checked
            by_kernel[name] = as_dict(elements, flat[start : start + width])
            recomputed[name] = site_statistics.named(flat[start + width : start + size])
            sample_rows[name] = (rows_checked, count)
        sites = {}
        for i, name in enumerate(self.order):
            shape, dtype = self.meta[name]
            sites[name] = SiteRecord(
                name, shape, dtype, as_dict(math.prod(shape), flat[i * width : (i + 1) * width])
            )
        probed = self.identities.probed
        identities = {
            name: as_measured(
                flat[cut + i * len(DEVIATION) : cut + (i + 1) * len(DEVIATION)], *counts, probed.get(name)
            )
            for i, (name, counts) in enumerate(zip(checked, self.identities.counted, strict=True))
        }
        if finite is not None:
            identities |= self._remeasured(flat[len(flat) - len(finite) :], identities)
        duplicates = tuple(self.duplicates)
        return Trace(
            n_layers,
            sites,
            self.values,
            duplicates=duplicates,
            layout=layout,
            identities=identities,
            sampled=by_kernel,
            recomputed=recomputed,
            sample_rows=sample_rows,
        )

    def _remeasured(self, finite: list[float], measured: Measured) -> Measured:
        """The identities of the product-checked sites whose projections `finite` says were not
        all finite, measured again against their modules (SiteIdentities.remeasured), with their
        rows as first `measured`: none, almost always, and then nothing more is read."""
        again = self.identities.remeasured(finite)
        if not again:
            return {}
        rows = torch.stack(list(again.values())).tolist()
        return {
            name: as_measured(row, measured[name]["rows"], measured[name]["rows_checked"])
            for name, row in zip(again, rows, strict=True)
        }


def check_site(name: str, option: str, n_layers: int, layout: Layout) -> BlockLayout | None:
    """Bad input unless `name` is a site of this model; returns its block's layout (None: a model site)."""
    layer, kind = split(name)  # a malformed name gets the naming help
    if name not in site_names(n_layers, layout):
        if layer is not None and layer < n_layers:
            raise BadInput(f"{option} {name}: block {layer} of this model has no {kind} site")
        raise BadInput(f"{option} {name}: the model has layers 0-{n_layers - 1}")
    return None if layer is None else layout.block(layer)


def check_ablation(names: Sequence[str], n_layers: int, layout: Layout = DENSE) -> frozenset[str]:
    """The sites to zero, validated: each must be a site of this model that can be replaced."""
    for name in names:
        block = check_site(name, "--ablate", n_layers, layout)
        if block is not None and split(name)[1] in block.observe_only:
            raise BadInput(
                f"--ablate {name}: an input (the residual stream, or an expert's routed tokens) is "
                "observed, not replaceable; ablate the site that feeds it instead"
            )
    return frozenset(names)


@gate_ensure("GATE-TRACE-002", lambda result: result[0].completeness())
@torch.no_grad()
def trace_forward(
    model: GPT,
    idx: torch.Tensor,
    *,
    keep: bool = False,
    ablate: Sequence[str] = (),
    feed: Mapping[str, torch.Tensor] | None = None,
    exhaustive: bool | None = None,
) -> tuple[Trace, torch.Tensor]:
    """Run model(idx) once with every site recorded; returns the trace and the logits. GATE-TRACE-002's
    checks read their samples, or everything with `exhaustive` (None: as `exhaustive_checks` says)."""
    layout = layout_for(model.config)
    ablated = check_ablation(ablate, len(model.layers), layout)
    fed = fed_inputs(feed, len(model.layers))
    budget = CheckBudget.of(_EXHAUSTIVE.get() if exhaustive is None else exhaustive)
    sample = statistics_sample()
    sites = len(site_names(len(model.layers), layout))
    with lent() as scratch:
        checked = SiteIdentities(
            identities(model, layout), fed, ablated, budget.identity_rows, budget.identity_probes, scratch
        )
        recorder = _Recorder(keep, ablated, checked, sample, budget.statistics_elements, sites, idx.device)
        with SiteHooks(model, recorder, feed) as hooks, checked.parts_tapped(), phase("forward"):
            logits, _ = model(idx)
        trace = recorder.trace(len(model.layers), layout)
    zeroed = tuple(dict.fromkeys(r.name for r in hooks.replaced if not bool(r.written.any())))
    return replace(trace, zeroed=zeroed), logits


def unchanged_outcome(traced: torch.Tensor, untraced: torch.Tensor) -> Outcome:
    """GATE-TRACE-001: the traced forward's logits against the untraced ones, bit for bit."""
    same_shape = traced.shape == untraced.shape and traced.dtype == untraced.dtype
    differing = int((traced != untraced).sum().item()) if same_shape else untraced.numel()
    measured = {"differing_elements": differing, "elements": untraced.numel(), "same_dtype": same_shape}
    return measure("GATE-TRACE-001", measured, holds="tracing changed nothing")
