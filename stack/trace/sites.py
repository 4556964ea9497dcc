"""The names of the trace sites, their forward order and data flow, and the trace schema version.

A site is one tensor of the forward pass with a stable name: `embed`, then per layer i
`layers.<i>.<site>` for each site kind of the model's `Layout` in the order the block computes
them, then `final_norm` and `logits`. These names are the trace's public vocabulary: they appear
in every table, JSON, CSV, dump and evidence record, always next to TRACE_SCHEMA_VERSION, and a
change to them (or to what a name observes) bumps that version.

The layout is read from the model's configuration (`layout_for`), because the blocks are built
from it, and names what each block's modules hold. A dense block has the kinds of LAYER_SITES.
The architecture options add their own and never change what a dense name means, so a dense
trace reads the same whichever options exist:

* mixture of experts (stack/model/moe.py): after `ffn_norm`, `moe.router` (the router logits),
  per expert `moe.expert<e>.input` (the tokens routed to it) and `moe.expert<e>` (what it
  returns for them), `moe.shared` with a shared expert, and `moe_out`, what the mixture adds to
  the stream, in place of the ffn kinds;
* differential attention (stack/model/diff_attention.py): `q2` and `k2`, the second branch's
  projections, and `attn_head_norm`, the per-head norm of (A₁ − λA₂)V before `o`;
* q/k head norms (`qk_norm`, Qwen3's): `q_norm` and `k_norm` after `v` (the three projections are
  one product), each head of the rows of `q` and `k` RMS-normed (stack.model.layers.HeadNorm), what
  RoPE then rotates;
* mixture of depths (stack/model/depth_router.py): `router` first, the block's token scores;
  from `attn_residual` on, the block's FFN sees only the routed tokens' rows.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import BadInput
from stack.model.config import ModelConfig

# Bump when a site name, a statistic, or what a site observes changes meaning.
TRACE_SCHEMA_VERSION = 1

# Per layer, in forward order. What each observes (stack/model/layers.py names the modules):
LAYER_SITES = (
    "attn_norm",  # attn_norm(x), the attention's input
    "q",  # attn.q(...), before RoPE
    "k",  # attn.k(...), before RoPE
    "v",  # attn.v(...)
    "attn_out",  # the attention block's output after the o projection: what it adds to the stream
    "attn_residual",  # x + attn_out, the residual stream between attention and FFN
    "ffn_norm",  # ffn_norm(attn_residual), the FFN's input
    "ffn_gate",  # ffn.gate(...)
    "ffn_up",  # ffn.up(...)
    "ffn_silu",  # silu(ffn_gate), as computed inside ffn.swiglu
    "ffn_swiglu",  # silu(gate) * up
    "ffn_out",  # ffn.down(...), what the FFN adds to the stream
    "output",  # the block's output, attn_residual + ffn_out
)
MODEL_SITES = ("embed", "final_norm", "logits")

# Statistics of every site, in the order of the on-device statistics vector (count is host-side).
STATS = ("count", "mean", "std", "min", "max", "absmax", "nan", "inf", "zero", "l1_fp64")

_NAME_RE = re.compile(r"^layers\.(\d+)\.([a-z_][a-z0-9_.]*)$")
# The kinds of the optional parts of a block (see the module docstring), beyond LAYER_SITES.
_OPTION_KIND_RE = re.compile(
    r"router|q2|k2|q_norm|k_norm|attn_head_norm|moe\.router|moe\.expert\d+(\.input)?|moe\.shared|moe_out"
)


@dataclass(frozen=True)
class BlockLayout:
    """The site kinds of one block in forward order, what each reads, and how each may be used.

    `inputs` maps a kind to the kinds it is computed from ("<input>" is the block's input), which
    tells a site that makes a NaN from one that passes it on. `observe_only` kinds are seen
    through an input hook and cannot be replaced; `token_rows` kinds have no positions on their
    second axis (a (tokens, width) matrix of the tokens routed there, or attn_head_norm's heads),
    so they cannot be patched at a position.
    """

    kinds: tuple[str, ...]
    inputs: Mapping[str, tuple[str, ...]] = field(hash=False)  # a dict: hashed by the kinds it serves
    observe_only: frozenset[str]
    token_rows: frozenset[str] = frozenset()

    def as_json(self) -> dict[str, Any]:
        return {
            "kinds": list(self.kinds),
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "observe_only": sorted(self.observe_only),
            "token_rows": sorted(self.token_rows),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockLayout:
        return cls(
            tuple(data["kinds"]),
            {k: tuple(v) for k, v in data["inputs"].items()},
            frozenset(data["observe_only"]),
            frozenset(data["token_rows"]),
        )


def block_layout(
    *,
    diff_attn: bool = False,
    experts: int = 0,
    shared: bool = False,
    routed_depth: bool = False,
    qk_norm: bool = False,
) -> BlockLayout:
    """The sites of a block with these options, in the order its forward computes them."""
    kinds: list[str] = []
    inputs: dict[str, tuple[str, ...]] = {}

    def site(kind: str, *reads: str) -> None:
        kinds.append(kind)
        inputs[kind] = reads

    if routed_depth:
        site("router", "<input>")
    site("attn_norm", "<input>")
    site("q", "attn_norm")
    if diff_attn:
        site("q2", "attn_norm")
    site("k", "attn_norm")
    if diff_attn:
        site("k2", "attn_norm")
    site("v", "attn_norm")
    queries, keys = ("q", "k")
    if qk_norm:
        site("q_norm", "q")
        site("k_norm", "k")
        queries, keys = ("q_norm", "k_norm")
    if diff_attn:
        site("attn_head_norm", "q", "q2", "k", "k2", "v")
        site("attn_out", "attn_head_norm")
    else:
        site("attn_out", queries, keys, "v")
    site("attn_residual", "<input>", "attn_out")
    site("ffn_norm", "attn_residual")
    observe_only = {"attn_residual"}
    if experts:
        site("moe.router", "ffn_norm")
        for e in range(experts):
            site(f"moe.expert{e}.input", "ffn_norm", "moe.router")
            site(f"moe.expert{e}", f"moe.expert{e}.input")
            observe_only.add(f"moe.expert{e}.input")
        if shared:
            site("moe.shared", "ffn_norm")
        site("moe_out", *(k for k in kinds if k.startswith("moe.") and not k.endswith(".input")))
        mixed = "moe_out"
    else:
        site("ffn_gate", "ffn_norm")
        site("ffn_up", "ffn_norm")
        site("ffn_silu", "ffn_gate")
        site("ffn_swiglu", "ffn_silu", "ffn_up")
        site("ffn_out", "ffn_swiglu")
        mixed = "ffn_out"
    # A mixture works on the flattened tokens; the head norm's second axis is the heads.
    rows = {k for k in kinds if k.startswith("moe.") or k == "attn_head_norm"}
    if routed_depth:  # x + w·(attn_out + ffn) for the routed tokens, x for the others
        rows |= set(kinds[kinds.index("attn_residual") :])  # the FFN sees only the routed rows
        site("output", "<input>", "router", "attn_out", mixed)
    else:
        site("output", "attn_residual", mixed)
    return BlockLayout(tuple(kinds), inputs, frozenset(observe_only), frozenset(rows))


DENSE_BLOCK = block_layout()


@dataclass(frozen=True)
class Layout:
    """The blocks of a model: one block layout for every layer, or one per layer where they differ
    (mixture of depths in every n-th block)."""

    uniform: BlockLayout = DENSE_BLOCK
    blocks: tuple[BlockLayout, ...] = ()

    def block(self, layer: int) -> BlockLayout:
        """The layout of block `layer`."""
        return self.blocks[layer] if self.blocks else self.uniform

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind some block has, the fullest block's order first (the rows of a table)."""
        fullest = max((self.uniform, *self.blocks), key=lambda b: len(b.kinds))
        rest = (k for b in self.blocks for k in b.kinds)
        return tuple(dict.fromkeys((*fullest.kinds, *rest)))

    def as_json(self) -> dict[str, Any]:
        """The layout as plain data (a dump of a non-dense model carries it)."""
        return {"uniform": self.uniform.as_json(), "blocks": [b.as_json() for b in self.blocks]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        """The inverse of as_json."""
        blocks = tuple(BlockLayout.from_json(b) for b in data["blocks"])
        return cls(BlockLayout.from_json(data["uniform"]), blocks)


DENSE = Layout()


@functools.lru_cache(maxsize=64)
def layout_for(config: ModelConfig) -> Layout:
    """The site layout of the blocks a model of `config` is built with (kept per configuration: a
    traced forward asks every time, and the answer is its configuration's)."""
    blocks = tuple(
        block_layout(
            diff_attn=config.diff_attn,
            experts=config.moe_experts,
            shared=config.moe_shared_expert,
            routed_depth=config.mod_block(i),
            qk_norm=config.qk_norm,
        )
        for i in range(config.n_layers)
    )
    if all(b == blocks[0] for b in blocks):
        return Layout(blocks[0])
    return Layout(blocks[0], blocks)


def site_names(n_layers: int, layout: Layout = DENSE) -> list[str]:
    """Every site of a model with `n_layers` blocks of `layout`, in forward order."""
    return list(_site_names(n_layers, layout))


@functools.lru_cache(maxsize=64)
def _site_names(n_layers: int, layout: Layout) -> tuple[str, ...]:
    """`site_names`, kept per shape: a traced forward asks several times."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [f"layers.{layer}.{site}" for site in layout.block(layer).kinds]
    return (*names, "final_norm", "logits")


def split(name: str) -> tuple[int | None, str]:
    """`layers.3.ffn_swiglu` → (3, "ffn_swiglu"); `logits` → (None, "logits")."""
    match = _NAME_RE.match(name)
    if match and (match.group(2) in LAYER_SITES or _OPTION_KIND_RE.fullmatch(match.group(2))):
        return int(match.group(1)), match.group(2)
    if name in MODEL_SITES:
        return None, name
    raise BadInput(f"{name!r} is not a trace site; sites look like embed, layers.3.ffn_swiglu, logits")


def block_input(layer: int) -> str:
    """The site whose tensor is the input of block `layer` (`final_norm` reads block_input(n_layers))."""
    return "embed" if layer == 0 else f"layers.{layer - 1}.output"


def inputs_of(name: str, n_layers: int, layout: Layout = DENSE) -> tuple[str, ...]:
    """The sites `name` is computed from (empty for embed)."""
    layer, site = split(name)
    if layer is None:
        return {"embed": (), "final_norm": (block_input(n_layers),), "logits": ("final_norm",)}[site]
    reads = layout.block(layer).inputs[site]
    return tuple(block_input(layer) if s == "<input>" else f"layers.{layer}.{s}" for s in reads)


def select(names: list[str], layers: range | None = None, pattern: str | None = None) -> list[str]:
    """The sites of `names` in the given layers whose full or short name matches the glob `pattern`.

    Model-level sites (embed, final_norm, logits) belong to no layer and are kept by a layer
    filter. A pattern that matches nothing is bad input, so a typo cannot empty a report.
    """
    chosen = []
    for name in names:
        layer, site = split(name)
        if layers is not None and layer is not None and layer not in layers:
            continue
        if pattern is not None and not any(fnmatch.fnmatchcase(n, pattern) for n in (name, site)):
            continue
        chosen.append(name)
    if not chosen:
        kinds = ", ".join(dict.fromkeys((*MODEL_SITES, *(split(n)[1] for n in names))))
        raise BadInput(f"--sites {pattern!r} matches no site; site names are {kinds} (globs allowed)")
    return chosen
