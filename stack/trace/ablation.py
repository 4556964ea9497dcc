"""Ablation: zero a component and see how load-bearing it is.

`--ablate SITE` zeroes a site's tensor as the forward goes (every layer after it sees the zero)
and compares the ablated trace with the intact one: how far the logits move (cosine, SQNR,
how many next-token argmaxes change, the mean KL divergence from the intact distribution),
and how much each layer's output changes. With `--sample N` both models also continue the
prompt greedily, to read the damage as text.

The KL reported is held to its direction where it is computed: GATE-TRACE-003's check `ablation`
recomputes KL(intact ‖ ablated) from the two forwards' logits by torch's kl_div (contracts.divergence)
and holds the reported mean to it. The check holds the report's other numbers the same way, each
recomputed from the two traces' kept tensors by the contracts' formula: every layer's output change
(‖ablated − intact‖ / ‖intact‖), the positions, and the changed argmaxes (over the vocabulary, so
never more than the positions). Check `samples` holds each greedy continuation to the N new ids
--sample N asked for. Check `ablated` holds the sites the ablated forward's hooks overwrote with
zeros (stack.trace.tracer.Trace.zeroed), and the sites the report names, to the command line's
--ablate, and the continuations the report shows to its --sample: an ablation handed only the
first of two --ablate sites would zero one, say so, and pass every gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from contracts import divergence
from contracts.divergence import argmax_changes, mean_kl, relative_change
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.model.gpt import GPT
from stack.trace.compare import SiteComparison, Tolerance, compare_site
from stack.trace.hooks import SiteHooks
from stack.trace.sites import layout_for
from stack.trace.tracer import Trace, check_ablation

EXACT = Tolerance(0.0, 0.0, "exact: any change counts")


@dataclass(frozen=True)
class AblationEffect:
    """How much zeroing `sites` moved the logits and each layer's output."""

    sites: tuple[str, ...]
    logits: SiteComparison
    argmax_changed: int
    positions: int
    mean_kl: float  # nats, KL(intact ‖ ablated) averaged over positions
    output_change: dict[int, float]  # layer → ‖ablated - intact‖ / ‖intact‖ of the block output


def kl_per_position(intact: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """KL(intact ‖ ablated) in nats at each position, from the two float64 logits."""
    log_p, log_q = intact.log_softmax(-1), ablated.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def effect_outcome(effect: AblationEffect, intact: Trace, ablated: Trace) -> Outcome:
    """GATE-TRACE-003's check `ablation`: each reported number (the mean KL, every layer's output
    change, the changed argmaxes, the positions) and the one contracts.divergence gives from the
    kept tensors of the intact and the ablated forward."""
    a, b = intact.values["logits"], ablated.values["logits"]
    sides = (intact, ablated)
    outputs = {str(i): [t.values[f"layers.{i}.output"] for t in sides] for i in range(intact.n_layers)}
    measured = {
        "mean_kl_reported": effect.mean_kl,
        "mean_kl_recomputed": mean_kl(a, b),
        "output_change_reported": {str(layer): v for layer, v in effect.output_change.items()},
        "output_change_recomputed": {i: divergence.relative_change(x, y) for i, (x, y) in outputs.items()},
        "argmax_changed_reported": effect.argmax_changed,
        "argmax_changed_recomputed": divergence.argmax_changes(a, b),
        "positions_reported": effect.positions,
        "positions_recomputed": int(a.shape[:-1].numel()),
    }
    return measure("GATE-TRACE-003", measured, holds="the ablation's numbers are the two forwards'")


@gate_ensure("GATE-TRACE-003", lambda intact, ablated, result: effect_outcome(result, intact, ablated))
def ablation_effect(intact: Trace, ablated: Trace, sites: tuple[str, ...]) -> AblationEffect:
    """Compare two kept traces of the same model, without and with the ablation."""
    a, b = intact.values["logits"].double(), ablated.values["logits"].double()
    kl = kl_per_position(a, b)
    change = {}
    for layer in range(intact.n_layers):
        x, y = (t.values[f"layers.{layer}.output"].double() for t in (intact, ablated))
        change[layer] = relative_change(x, y)
    return AblationEffect(
        sites=sites,
        logits=compare_site("logits", intact.sites["logits"], ablated.sites["logits"], a, b, EXACT),
        argmax_changed=argmax_changes(a, b),
        positions=int(a.shape[:-1].numel()),
        mean_kl=float(kl.mean()),
        output_change=change,
    )


@torch.no_grad()
def greedy_sample(model: GPT, idx: torch.Tensor, tokens: int, ablate: tuple[str, ...] = ()) -> list[int]:
    """`tokens` greedy continuation ids of idx, with the given sites zeroed at every step."""
    zeroed = check_ablation(ablate, len(model.layers), layout_for(model.config))

    def visit(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        return torch.zeros_like(tensor) if name in zeroed else None

    with SiteHooks(model, visit):
        out = model.generate(idx, tokens, temperature=0.0)
    return out[0, idx.shape[1] :].tolist()


def samples_outcome(samples: dict[str, list[int]], asked: int) -> Outcome:
    """GATE-TRACE-003's check `samples`: how many new ids each greedy continuation holds."""
    measured = {"samples_asked": asked, "sample_ids": {k: len(ids) for k, ids in samples.items()}}
    return measure("GATE-TRACE-003", measured, holds=f"each continuation is {asked} new token(s)")


@gate_require("GATE-TRACE-003", lambda samples, asked: samples_outcome(samples, asked))
def check_samples(samples: dict[str, list[int]], asked: int) -> None:
    """Refuse continuations that are not the `asked` new ids (a prompt token kept, one dropped)."""


def ablated_outcome(ablate: Sequence[str], sample: int, payload: Mapping[str, Any]) -> Outcome:
    """GATE-TRACE-003's check `ablated`: the command line's --ablate and --sample against the sites
    the ablated forward zeroed, the sites the report names and the continuations it shows."""
    measured = {
        "ablate_asked": list(ablate),
        "ablate_zeroed": list(payload.get("zeroed") or []),
        "ablate_reported": list(payload.get("ablated") or []),
        "sample_asked": sample,
        "continuations": len(payload.get("samples") or {}),
    }
    return measure("GATE-TRACE-003", measured, holds="the sites zeroed are those --ablate names")


@gate_require("GATE-TRACE-003", ablated_outcome)
def check_ablated(ablate: Sequence[str], sample: int, payload: Mapping[str, Any]) -> None:
    """Refuse an ablation report whose forward zeroed, or that names, other sites than --ablate
    asked for, or that shows continuations --sample did not ask for (or none it did)."""
