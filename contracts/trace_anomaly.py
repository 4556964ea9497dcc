"""GATE-TRACE-003's anomaly rule: each site of a block against the same site in the other blocks.

Layers of a healthy model look alike: the std of `ffn_swiglu` in layer 3 is of the order of its
std in layers 0, 1, 2 and 4. A site's baseline is the median std of the same site over the other
layers, never its own: a layer that blew up would otherwise pull its own baseline up with it
(with two layers, halfway), and a site at 27 times its neighbours would pass as clean. Whether a
site is an anomaly is GATE-TRACE-003's judge's to say from the ratio of its std to its baseline,
or from NaN/Inf in it (its std is then not a number to compare).

One site of one layer is no baseline: layer 0's `attn_residual` (stack.trace.sites' name
for x + attn_out, the stream between attention and FFN). Its stream is the embedding plus the
first attention's write, which no block has yet written into whole; from layer 1 on the stream
carries every earlier block's FFN write too. A trained model's embedding is a fraction of that (std
0.13 against 1.13 in a two-layer `tiny` run), so as the only other layer it would make every
trained two-layer model's second `attn_residual` an anomaly at 8.6 to 9.2 times. It is still judged
against the later layers, as every site with a baseline is.

Some sites have a role of their own in a healthy model, and one k × median does not describe them
(`ROLES`): layer 0's feed-forward writes (its `ffn_swiglu`, `ffn_out`, a mixture's `moe_out`) work
as part of the embedding in GPT-2-like models and are many times the later layers' (22.1 times at
`ffn_out` in a healthy `demo`-shaped model after 100 steps, 13.2 in a healthy 110 M model after 120
steps, both exit 3 under one k = 8); layer 0's attention write is mixed from the embedding alone,
where every later one reads a stream blocks have written into (12.3 times in a healthy two-layer
`tiny` model after 100 steps, 0.1 in the `base` reference run); the last block's output is what the
head reads. Each role is judged against its own multiple, calibrated on healthy models of the family
(spec: GATE-TRACE-003's `<role>_std_multiple`), and no site with a role stands in another layer's
baseline (its scale is its role's, not the layers'). A site whose only other layers have roles has
no baseline and is not judged; the report says so (`reasons`). A fault in layer 0's MLP before its
write (an up or gate projection scaled) is still judged, at its own site, at anomaly_std_multiple.

The sites a block computes from its own sites by its weights (`GAIN_READS`: the projections,
the attention and MLP writes, the SiLU and the SwiGLU product) are judged by their gain from
GATE-TRACE-003's revision 10 on: their std over the product of the stds of the sites they read,
against the median gain of the same site over the other layers. Their scale is the scale of what
they read times that of their weights, and what they read differs from layer to layer in a
healthy model: a `demo`-shaped model trained 100 steps on an earlier day's docs wrote 3.06 and
2.09 at its first two blocks' `ffn_out` and 0.19 and 0.11 at the last two, so the second was 14.1
times its baseline by std, while by gain (2.43 against 1.89, 1.23 and 0.97) it is 2.0. A gain
needs no role for layer 0's writes: from revision 10 only a mixture's layer-0 writes (`moe_out`
and each expert's output, judged by their std: an expert's sub-operations are not traced) and the
last block's output keep a role. A weight scaled multiplies its own site's gain alone: the sites
that read it see their reads grow with them and keep their gains, so the site named is the
sub-operation whose weight it is (by std, on that model, a down projection scaled 16-fold in layer
2 stood at 2.7 times its baseline and was not named at all). From revision 11 the routers are
judged by their gain too, at a multiple of their own (ROUTER_READS): a mixture-of-depths block's
router over the block's input, which it scores as it comes (the residual stream, not normed; by
std a healthy router stood at 8.11 times the other block's, by gain at 5.2), a mixture of experts'
router over ffn_norm. The norms, whose output is their weight's scale whatever they read, the
residual stream and a mixture's other sites are still judged by their std.

A site can be empty: an expert no token was routed to, or the feed-forward of a mixture-of-depths
block that routed none, sees zero rows. Its std (0 by convention) says nothing about the layer, so
an empty site is never judged and never part of another layer's baseline: a zero baseline would
make every nonzero std an infinite ratio. A layer whose std is not finite is no baseline either.

This module is the one account of the baselines: `stack trace` finds its anomalies with it, the
judge of GATE-TRACE-003's check `anomalies` re-derives them from the per-site statistics the run
measured, and tools/check_integrity.py from those its report (trace.json) holds. It reads only
site names and statistics (JSON data: a non-finite number may be the string "nan" or "inf").
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# name → its statistics ("count", "std", "nan", "inf" at least), as the trace measured them.
SiteStats = Mapping[str, Mapping[str, Any]]

_BLOCK_SITE = re.compile(r"^layers\.(\d+)\.(.+)$")

# (layer, site) of the stream no block has written into whole (module docstring): no baseline.
EMBEDDING_STREAM = (0, "attn_residual")
# GATE-TRACE-003's revision from which it is no baseline; a record judged earlier is derived again
# by the rule it was judged under.
EMBEDDING_STREAM_SINCE = 7
# GATE-TRACE-003's revision from which the sites of ROLES are judged by their role's multiple.
ROLES_SINCE = 8
# Its revision from which layer 0's attention write has a role too (FIRST_ATTENTION).
FIRST_ATTENTION_SINCE = 9
# Its revision from which the sites of GAIN_READS are judged by their gain (`gain`).
GAINS_SINCE = 10
# Its revision from which the routers are judged by their gain over what they score, at a multiple
# of their own (ROUTER_READS); the rule of the current spec.
ROUTER_GAINS_SINCE = 11
CURRENT = ROUTER_GAINS_SINCE

# The sites a block computes from other sites of its own by its weights, each with the sites it
# reads: judged from GAINS_SINCE on by their gain, their std over the product of their reads' stds.
# A healthy model's layers differ in scale by up to twenty times at such a site while the gains of
# the sub-operation stay within a few times of each other (docs/trace.md, "Calibration"); a weight
# blown up multiplies its own site's gain alone, so the rule names the sub-operation and the sites
# after it, which read its output, keep their gains.
GAIN_READS: dict[str, tuple[str, ...]] = {
    "q": ("attn_norm",),
    "k": ("attn_norm",),
    "v": ("attn_norm",),
    "q2": ("attn_norm",),
    "k2": ("attn_norm",),
    "attn_out": ("v",),
    "ffn_gate": ("ffn_norm",),
    "ffn_up": ("ffn_norm",),
    "ffn_silu": ("ffn_gate",),
    "ffn_swiglu": ("ffn_silu", "ffn_up"),
    "ffn_out": ("ffn_swiglu",),
}
# What a site reads that is no site of its own block: the block's input, the previous block's output
# (the embedding for block 0; `read_site`).
BLOCK_INPUT = "input"
# The routers, each with what it scores: a mixture-of-depths block's router the block's input as it
# comes, not normed, whose scale is the residual stream's, which grows with depth in a healthy model
# (docs/trace.md, "Calibration"); a mixture of experts' router the block's ffn_norm, as the
# projections read a norm's output. Judged from ROUTER_GAINS_SINCE by their gain over it, against
# the median gain of the same router in the other blocks, at router_gain_std_multiple: a score is a
# decision whose scale each block's router learns for itself, so routers are calibrated on routers
# alone.
ROUTER_READS: dict[str, tuple[str, ...]] = {"router": (BLOCK_INPUT,), "moe.router": ("ffn_norm",)}
# The threshold each measure other than the std is held to (the std's: anomaly_std_multiple, or a
# role's multiple); what `SiteBaseline.measure` names.
MEASURE_THRESHOLDS = {"gain": "gain_std_multiple", "router_gain": "router_gain_std_multiple"}


@dataclass(frozen=True)
class Role:
    """A site with a part of its own in a healthy model: judged at `threshold` × its baseline (a
    GATE-TRACE-003 threshold), never in another layer's baseline."""

    name: str
    threshold: str
    why: str


FIRST_MLP = Role(
    "first_mlp",
    "first_mlp_std_multiple",
    "layer 0's feed-forward write, part of the embedding in a healthy model",
)
LAST_OUTPUT = Role(
    "last_output", "last_output_std_multiple", "the last block's output, what the final norm and head read"
)
FIRST_ATTENTION = Role(
    "first_attention",
    "first_attention_std_multiple",
    "layer 0's attention write, mixed from the embedding alone in a healthy model",
)
ROLES = (FIRST_MLP, LAST_OUTPUT, FIRST_ATTENTION)
FIRST_MLP_SITES = ("ffn_swiglu", "ffn_out", "moe_out")
# From GAINS_SINCE a mixture's layer-0 expert writes (each expert's output, the shared expert's) have
# moe_out's role too: the sub-operations inside an expert are not traced, so no gain divides the
# scale of its weights out, and a healthy mixture's layer-0 experts write as large as its moe_out.
_EXPERT_WRITE = re.compile(r"^moe\.(expert\d+|shared)$")


def gain_reads(site: str, revision: int = CURRENT) -> tuple[str, ...]:
    """The sites whose stds `site`'s gain is over under `revision` (none: it is judged by its std),
    each a site of its block or BLOCK_INPUT."""
    if site in ROUTER_READS:
        return ROUTER_READS[site] if revision >= ROUTER_GAINS_SINCE else ()
    return GAIN_READS.get(site, ()) if revision >= GAINS_SINCE else ()


def read_site(layer: int, read: str) -> str:
    """The name of the site a site of block `layer` reads as `read`: one of the block's own, or the
    block's input (`embed` for block 0, else the previous block's `output`)."""
    if read == BLOCK_INPUT:
        return "embed" if layer == 0 else f"layers.{layer - 1}.output"
    return f"layers.{layer}.{read}"


def role_of(layer: int, site: str, n_layers: int, revision: int = CURRENT) -> Role | None:
    """The role of `site` of `layer` in a model of `n_layers` blocks under `revision`, if it has one
    (a site judged by its gain has none: its gain is the layers' alike)."""
    if revision < ROLES_SINCE or n_layers < 2 or gain_reads(site, revision):
        return None
    expert_write = revision >= GAINS_SINCE and _EXPERT_WRITE.match(site) is not None
    if layer == 0 and (site in FIRST_MLP_SITES or expert_write):
        return FIRST_MLP
    if layer == 0 and site == "attn_out" and revision >= FIRST_ATTENTION_SINCE:
        return FIRST_ATTENTION
    if layer == n_layers - 1 and site == "output":
        return LAST_OUTPUT
    return None


@dataclass(frozen=True)
class SiteBaseline:
    """One site of one layer against its baseline: the median std of that site in other layers."""

    name: str
    layer: int
    site: str
    std: float
    baseline: float
    baseline_layers: tuple[int, ...]
    ratio: float
    nonfinite: bool
    role: Role | None = None
    # The sites its gain is over, when it is judged by its gain: `gain` is then its std over the
    # product of theirs, and `baseline` the median gain of the same site in the other layers.
    reads: tuple[str, ...] = ()
    gain: float = math.nan

    @property
    def measure(self) -> str:
        """What the site is compared by: "std", "gain" (GAIN_READS) or "router_gain" (ROUTER_READS: a
        mixture-of-depths or a mixture of experts' router)."""
        if not self.reads:
            return "std"
        return "router_gain" if self.site in ROUTER_READS else "gain"

    def measured(self) -> dict[str, Any]:
        """What GATE-TRACE-003's check `site` reads; JSON has no infinity, the judge reads "inf" back.
        A site with a role says which, and one judged by a gain says which gain: the judge takes that
        role's multiple, or the measure's (MEASURE_THRESHOLDS)."""
        ratio = self.ratio if math.isfinite(self.ratio) else str(self.ratio)
        return (
            {"std_ratio": ratio, "nonfinite": self.nonfinite}
            | ({"role": self.role.name} if self.role else {})
            | ({"measure": self.measure} if self.reads else {})
        )


def block_site(name: str) -> tuple[int, str] | None:
    """`layers.3.ffn_up` → (3, "ffn_up"); a site of no block (embed, logits) → None."""
    match = _BLOCK_SITE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def _number(value: Any) -> float:
    """A statistic as a float: JSON writes NaN and ±Inf as strings; anything else unreadable is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _seen(stats: Mapping[str, Any]) -> bool:
    """Whether the site saw any element (an empty site is no candidate and no baseline)."""
    return _number(stats.get("count")) > 0


def _ratio(std: float, baseline: float) -> float:
    """std / baseline, where a zero baseline makes any spread infinitely large."""
    if baseline == 0:
        return math.inf if std > 0 else 1.0
    return std / baseline


def _same_site(stats: SiteStats, site: str) -> list[tuple[int, Mapping[str, Any]]]:
    """(layer, statistics) of every block that has `site` (a routed block has sites others lack)."""
    found = []
    for name, held in stats.items():
        where = block_site(name)
        if where is not None and where[1] == site:
            found.append((where[0], held))
    return sorted(found, key=lambda pair: pair[0])


def n_blocks(stats: SiteStats) -> int:
    """The model's depth as its block sites show it: one past the deepest layer named."""
    return 1 + max((where[0] for where in map(block_site, stats) if where is not None), default=-1)


def site_baselines(stats: SiteStats, names: Sequence[str], revision: int = CURRENT) -> list[SiteBaseline]:
    """Each non-empty block site among `names` that another layer has and saw something in, against
    its baseline, in the order of `names` (none for a one-layer model). The baseline is taken over
    the other layers only, those of them whose std is finite (a NaN layer is no baseline), from
    GATE-TRACE-003 `revision` 7 on never over the embedding's stream (EMBEDDING_STREAM), and from
    revision 8 never over a site with a role (ROLES_SINCE; layer 0's attention write from revision 9),
    which is judged by its role's multiple. From revision 10 a site of GAIN_READS is set against the
    median gain of the same site, not its std (GAINS_SINCE), and from revision 11 a router too
    (ROUTER_GAINS_SINCE: its gain over what it scores)."""
    return [b for b in (_judged(stats, name, revision) for name in names) if isinstance(b, SiteBaseline)]


def not_judged(stats: SiteStats, names: Sequence[str], revision: int = CURRENT) -> dict[str, str]:
    """Why each block site among `names` that is not judged is not, by name (the report's reasons)."""
    return {name: why for name in names if isinstance(why := _judged(stats, name, revision), str)}


def _judged(stats: SiteStats, name: str, revision: int) -> SiteBaseline | str | None:
    """Site `name` against its baseline, or why it has none (None: not a block site of the trace)."""
    where, held = block_site(name), stats.get(name)
    if where is None or held is None:
        return None
    if not _seen(held):
        return "empty: no element (no token routed to it)"
    layer, site = where
    depth = n_blocks(stats)
    reads = gain_reads(site, revision)
    if reads and (missing := [read_site(layer, r) for r in reads if read_site(layer, r) not in stats]):
        return f"no gain: what it reads ({', '.join(missing)}) was not traced"
    same = [(j, other) for j, other in _same_site(stats, site) if j != layer and _seen(other)]
    others = [(j, other) for j, other in same if _baseline(j, site, depth, revision)]
    if not others:
        if not same:
            return "no other layer has this site with elements in it"
        return (
            "no baseline: its other layers' sites have roles of their own (the embedding's stream, "
            "layer 0's attention or MLP write, the last block's output)"
        )
    measures = {j: _measure(stats, j, site, reads) for j, _ in others}
    used = tuple(j for j, value in measures.items() if math.isfinite(value))
    baseline = statistics.median(measures[j] for j in used) if used else math.nan
    std = _number(held.get("std"))
    value = _measure(stats, layer, site, reads)
    bad = _number(held.get("nan")) + _number(held.get("inf")) > 0 or not math.isfinite(std)
    role = role_of(layer, site, depth, revision)
    gain = value if reads else math.nan
    ratio = _ratio(value, baseline)
    return SiteBaseline(name, layer, site, std, baseline, used, ratio, bad, role, reads, gain)


def _measure(stats: SiteStats, layer: int, site: str, reads: tuple[str, ...]) -> float:
    """What site `site` of `layer` is compared by: its std, or (with `reads`) its gain, its std over
    the product of its reads' stds (NaN where one of theirs is not finite or absent; a read of
    std 0 makes any spread an infinite gain, none a gain of 1)."""
    std = _number(stats.get(f"layers.{layer}.{site}", {}).get("std"))
    if not reads:
        return std
    scale = math.prod(_number(stats.get(read_site(layer, read), {}).get("std")) for read in reads)
    return _ratio(std, scale) if math.isfinite(scale) else math.nan


def _baseline(layer: int, site: str, n_layers: int, revision: int) -> bool:
    """Whether `site` of `layer` may stand in another layer's baseline under `revision`."""
    if revision >= EMBEDDING_STREAM_SINCE and (layer, site) == EMBEDDING_STREAM:
        return False
    return role_of(layer, site, n_layers, revision) is None


def anomalies(
    stats: SiteStats,
    names: Sequence[str],
    anomalous: Callable[[SiteBaseline], bool],
    revision: int = CURRENT,
) -> list[SiteBaseline]:
    """The anomalous sites among `names`, in their order; `anomalous` is GATE-TRACE-003's decision
    on one site (the judge's, at run time under the spec's thresholds, in a judge under its own)."""
    return [b for b in site_baselines(stats, names, revision) if anomalous(b)]
