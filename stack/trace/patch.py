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

GATE-PATCH-002 also holds what the grid reports to what its forwards did: each cell's forward
overwrote exactly its stated site at exactly its stated position, with the clean run's value there,
as the hooks record it (check `cells`); and the clean and corrupted scores are those the contracts'
metric reads at the last position of a plain forward of each prompt, with no hook on the model
(check `scores`). What a cell's hooks say the forward computed at its site is held to the corrupted
run's own kept activation there, and a cell must change its position exactly where the clean and
corrupted runs' kept activations differ (so a cell run on the clean prompt, or a hook that records
its replacement as what was computed, is named). The grid holds exactly every (site, position) it
states, a sweep every position of the prompt (check `grid`), and every recorded recovered fraction,
each cell's and the full patch's, is the contracts' formula over the recorded scores (check
`recovery`). The grid's cells are those the command line asks for, by contracts.patching's rule
from --patch-site, --patch-position and --patch-sweep as given (check `asked`): without it, a run
that patched at the last position where `--patch-position 5` asked could state position 10 and
pass every gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.patching import last_position_score, recovered_fraction
from stack.model.gpt import GPT
from stack.model.projection import stacked_weights
from stack.trace.hooks import Replacement, SiteHooks
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
        """logit(target) - logit(foil), or log p(target) without a foil (the contracts' reading)."""
        return last_position_score(logits, self.target, self.foil)


@dataclass(frozen=True)
class PatchRun:
    """The metric of both runs and, per patched site, the recovered fraction at each position."""

    clean: float
    corrupted: float
    positions: tuple[int, ...]
    recovered: dict[str, list[float]]
    full_recovered: float
    sweep: bool  # the positions are the sweep's, every one of the prompt
    patched: dict[str, list[float]]  # per site, the metric of each cell's forward
    full_patched: float


def splice(tensor: torch.Tensor, source: torch.Tensor, positions: Positions) -> torch.Tensor:
    """`tensor` with its positions `positions` (dim 1) taken from `source`."""
    out = tensor.clone()
    out[:, positions] = source[:, positions]
    return out


@dataclass(frozen=True)
class Forward:
    """One forward's logits, copies of the sites it was asked to keep, and what its hooks overwrote."""

    logits: torch.Tensor
    kept: dict[str, torch.Tensor]
    replaced: list[Replacement]


def forward_with(
    model: GPT, idx: torch.Tensor, patches: Patches, keep: frozenset[str] = frozenset()
) -> Forward:
    """model(idx) with `patches` applied, keeping copies of the (unpatched) `keep` sites."""
    kept: dict[str, torch.Tensor] = {}

    def visit(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        if name in keep:
            kept[name] = tensor.detach().clone()
        if name in patches:
            source, positions = patches[name]
            return splice(tensor, source, positions)
        return None

    with SiteHooks(model, visit) as hooks:
        logits, _ = model(idx)
    return Forward(logits, kept, hooks.replaced)


def _differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: the two differ (NaN against NaN counts as the same)."""
    return (a != b) & ~(a.isnan() & b.isnan())


def cell_written(
    site: str, position: int, clean: torch.Tensor, corrupted: torch.Tensor, replaced: list[Replacement]
) -> dict[str, Any]:
    """What one grid cell's forward overwrote, as its hooks recorded it: every site replaced with the
    positions (dim 1) where the tensor it went on with differs from the one the forward computed;
    how many elements of the stated site at the stated position differ from the clean run's; how
    many elements of what the forward computed there differ from the corrupted run's kept value (up
    to its site a cell is the corrupted forward); and, from the two runs' kept values alone, how many
    elements at the stated position differ between clean and corrupted (where the cell must change)."""
    written = [
        {
            "site": r.name,
            "changed": _differ(r.computed, r.written)
            .transpose(0, 1)
            .flatten(1)
            .any(1)
            .nonzero()
            .flatten()
            .tolist(),
        }
        for r in replaced
    ]
    at = [r for r in replaced if r.name == site]
    return {
        "site": site,
        "position": position,
        "written": written,
        "unlike_clean": int(_differ(at[0].written[:, position], clean[:, position]).sum()) if at else None,
        "computed_unlike_corrupted": int(_differ(at[0].computed, corrupted).sum()) if at else None,
        "clean_unlike_corrupted": int(_differ(clean[:, position], corrupted[:, position]).sum()),
    }


def cells_outcome(cells: list[dict[str, Any]]) -> Outcome:
    """GATE-PATCH-002's check `cells`: what each grid cell's forward overwrote."""
    return measure("GATE-PATCH-002", {"cells": cells}, holds="each cell patched its site at its position")


@gate_require("GATE-PATCH-002", lambda cells: cells_outcome(cells))
def check_cells(cells: list[dict[str, Any]]) -> None:
    """Refuse a grid whose forwards overwrote another site or position than the cell it fills."""


def scores_outcome(run: tuple[float, float], plain: tuple[float, float]) -> Outcome:
    """GATE-PATCH-002's check `scores`: the run's clean and corrupted scores and the contracts'
    metric on plain forwards of the two prompts."""
    measured = {
        "clean_recorded": run[0],
        "corrupted_recorded": run[1],
        "clean_plain": plain[0],
        "corrupted_plain": plain[1],
    }
    return measure(
        "GATE-PATCH-002", measured, holds="the scores are the plain forwards' at the last position"
    )


@gate_require("GATE-PATCH-002", lambda run, plain: scores_outcome(run, plain))
def check_scores(run: tuple[float, float], plain: tuple[float, float]) -> None:
    """Refuse scores that are not the metric at the last position of the prompts' plain forwards."""


def recorded_outcome(tokens: int, sites: list[str], positions: list[int] | None, run: PatchRun) -> Outcome:
    """GATE-PATCH-002's checks `grid` and `recovery` on what the run returns to be recorded: the
    (site, position) of every grid value against the sites and positions the run was asked for (a
    sweep: every position of the prompt's `tokens`), and every recovered fraction with the scores
    it was computed from."""
    cells = [
        (site, p, v, s)
        for site, row in run.recovered.items()
        for p, v, s in zip(run.positions, row, run.patched[site], strict=True)
    ]
    measured = {
        "grid_cells": [[site, p] for site, p, _, _ in cells],
        "grid_sites": sites,
        "grid_tokens": tokens,
        "grid_stated": "every" if positions is None else positions,
        "recovery_clean": run.clean,
        "recovery_corrupted": run.corrupted,
        "recovery_cells": [{"site": c, "position": p, "patched": s, "recovered": v} for c, p, v, s in cells],
        "recovery_full": {"patched": run.full_patched, "recovered": run.full_recovered},
    }
    return measure("GATE-PATCH-002", measured, holds="every stated cell, each recovery the formula's")


def sweep_positions(tokens: int) -> list[int]:
    """The positions a sweep patches: every one of the prompt's."""
    return list(range(tokens))


def plain_score(model: GPT, idx: torch.Tensor, metric: Metric) -> float:
    """The contracts' metric on the logits of a plain forward of idx: no hook is on the model here
    (GATE-PATCH-003 holds it at the start), so nothing the patching code does can reach them."""
    logits, _ = model(idx)
    return last_position_score(logits, metric.target, metric.foil)


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
    patched = forward_with(model, idx, {site: (v, EVERY_POSITION) for site, v in values.items()})
    return patched.logits, reference


@gate_ensure(
    "GATE-PATCH-002",
    lambda result: exact_outcome("GATE-PATCH-002", *result, "the whole stream at layer 0 recovered the run"),
)
def full_patch(
    model: GPT, corrupted: torch.Tensor, clean_stream: torch.Tensor, clean_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The corrupted run with the clean stream entering layer 0 at every position, and the clean logits."""
    patched = forward_with(model, corrupted, {STREAM_AT_LAYER_0: (clean_stream, EVERY_POSITION)})
    return patched.logits, clean_logits


@gate_require("GATE-PATCH-003", lambda model: hooks_outcome(model, "start"))
@gate_ensure("GATE-PATCH-003", lambda model, result: hooks_outcome(model, "end"))
@gate_ensure(
    "GATE-PATCH-002",
    lambda clean, sites, positions, result: recorded_outcome(clean.shape[1], sites, positions, result),
)
@torch.no_grad()
def patch_runs(
    model: GPT,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    sites: list[str],
    positions: list[int] | None,
) -> PatchRun:
    """Patch each site at each position from the clean run into the corrupted one, after the
    controls; `positions` None is a sweep, every position of the prompt."""
    if clean.shape != corrupted.shape:
        raise BadInput(
            f"the clean prompt is {clean.shape[1]} tokens and the corrupted one {corrupted.shape[1]}; "
            "patching pairs positions, so give prompts of the same length"
        )
    check_sites(sites, len(model.layers), layout_for(model.config))
    # Every forward below reads the same weights without a graph: each projection group's stacked
    # weight is made once for the run, not once a forward (stack.model.projection says why; the
    # product, and so every score, is the same bit for bit).
    with stacked_weights():
        plain = (plain_score(model, clean, metric), plain_score(model, corrupted, metric))
        first = forward_with(model, clean, {}, keep=frozenset({*sites, STREAM_AT_LAYER_0}))
        clean_logits, values = first.logits, first.kept
        second = forward_with(model, corrupted, {}, keep=frozenset(sites))
        corrupted_logits, corrupted_values = second.logits, second.kept
        self_patch(model, clean, {site: values[site] for site in sites}, clean_logits)
        full_logits, _ = full_patch(model, corrupted, values[STREAM_AT_LAYER_0], clean_logits)
        clean_score, corrupted_score = metric(clean_logits), metric(corrupted_logits)
        check_scores((clean_score, corrupted_score), plain)
        if clean_score == corrupted_score:
            raise BadInput(
                "the clean and corrupted prompts give the target the same score, so there is nothing to "
                "recover; choose prompts (or a --target) whose answers differ"
            )

        def recovered(patched: float) -> float:
            return recovered_fraction(patched, clean_score, corrupted_score)

        grid_positions = sweep_positions(clean.shape[1]) if positions is None else positions
        scores: dict[str, list[float]] = {site: [] for site in sites}
        cells = []
        for site in sites:
            for p in grid_positions:
                cell = forward_with(model, corrupted, {site: (values[site], p)})
                scores[site].append(metric(cell.logits))
                cells.append(cell_written(site, p, values[site], corrupted_values[site], cell.replaced))
        check_cells(cells)
        grid = {site: [recovered(s) for s in row] for site, row in scores.items()}
        full_score = metric(full_logits)
        return PatchRun(
            clean_score,
            corrupted_score,
            tuple(grid_positions),
            grid,
            recovered(full_score),
            positions is None,
            scores,
            full_score,
        )


def asked_outcome(asked: Mapping[str, Any], tokens: int, run: PatchRun) -> Outcome:
    """GATE-PATCH-002's check `asked`: the command line's --patch-site/--patch-position/--patch-sweep
    (`asked`, as given) and the (site, position) of every cell the run patched and scored."""
    measured = {
        "asked_patch": dict(asked),
        "asked_cells": [[site, p] for site in run.recovered for p in run.positions],
        "asked_tokens": tokens,
    }
    return measure("GATE-PATCH-002", measured, holds="the grid is the cells the command line asked for")


@gate_require("GATE-PATCH-002", asked_outcome)
def check_asked(asked: Mapping[str, Any], tokens: int, run: PatchRun) -> None:
    """Refuse a patching whose grid is not the cells --patch-site/--patch-position/--patch-sweep ask for."""
