"""The names of the trace sites, their forward order and data flow, and the trace schema version.

A site is one tensor of the forward pass with a stable name: `embed`, then per layer i
`layers.<i>.<site>` for each site of LAYER_SITES in the order the block computes them, then
`final_norm` and `logits`. These names are the trace's public vocabulary: they appear in every
table, JSON, CSV, dump and evidence record, always next to TRACE_SCHEMA_VERSION, and a change
to them (or to what a name observes) bumps that version.
"""

from __future__ import annotations

import fnmatch
import re

from contracts.errors import BadInput

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

# Which sites each layer site reads, for telling a site that makes a NaN from one that passes it on.
_LAYER_INPUTS: dict[str, tuple[str, ...]] = {
    "attn_norm": ("<input>",),
    "q": ("attn_norm",),
    "k": ("attn_norm",),
    "v": ("attn_norm",),
    "attn_out": ("q", "k", "v"),
    "attn_residual": ("<input>", "attn_out"),
    "ffn_norm": ("attn_residual",),
    "ffn_gate": ("ffn_norm",),
    "ffn_up": ("ffn_norm",),
    "ffn_silu": ("ffn_gate",),
    "ffn_swiglu": ("ffn_silu", "ffn_up"),
    "ffn_out": ("ffn_swiglu",),
    "output": ("attn_residual", "ffn_out"),
}

_NAME_RE = re.compile(r"^layers\.(\d+)\.([a-z_]+)$")


def site_names(n_layers: int) -> list[str]:
    """Every site of a model with `n_layers` blocks, in forward order."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [f"layers.{layer}.{site}" for site in LAYER_SITES]
    return [*names, "final_norm", "logits"]


def split(name: str) -> tuple[int | None, str]:
    """`layers.3.ffn_swiglu` → (3, "ffn_swiglu"); `logits` → (None, "logits")."""
    match = _NAME_RE.match(name)
    if match and match.group(2) in LAYER_SITES:
        return int(match.group(1)), match.group(2)
    if name in MODEL_SITES:
        return None, name
    raise BadInput(f"{name!r} is not a trace site; sites look like embed, layers.3.ffn_swiglu, logits")


def block_input(layer: int) -> str:
    """The site whose tensor is the input of block `layer` (`final_norm` reads block_input(n_layers))."""
    return "embed" if layer == 0 else f"layers.{layer - 1}.output"


def inputs_of(name: str, n_layers: int) -> tuple[str, ...]:
    """The sites `name` is computed from (empty for embed)."""
    layer, site = split(name)
    if layer is None:
        return {"embed": (), "final_norm": (block_input(n_layers),), "logits": ("final_norm",)}[site]
    return tuple(block_input(layer) if s == "<input>" else f"layers.{layer}.{s}" for s in _LAYER_INPUTS[site])


def parse_layers(text: str, n_layers: int) -> range:
    """`--layers a-b` (inclusive) or `--layers a` as a range of layer indices within the model."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None:
        raise BadInput(f"--layers {text!r} is not a layer or a range; write e.g. --layers 2 or --layers 0-3")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first > last or last >= n_layers:
        raise BadInput(f"--layers {text!r} is outside the model's layers 0-{n_layers - 1}")
    return range(first, last + 1)


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
        kinds = ", ".join((*MODEL_SITES, *LAYER_SITES))
        raise BadInput(f"--sites {pattern!r} matches no site; site names are {kinds} (globs allowed)")
    return chosen
