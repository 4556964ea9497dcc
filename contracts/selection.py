"""Which matrices a surgery's command line selects: `--targets GLOB` and `--layers A-B`, by the rule
docs/surgery.md states, apart from the stack's selection (stack.model.targets, stack.model.names).

A selection computed by the code under test shares its bugs: `--layers 0-1` parsed as range(0, 1)
leaves layer 1 out, says so as "outside --layers 0-1", and a GATE-LASER-003 that held the
matrices changed to that selection's own list would pass it. So the rule lives here once more,
from the command line's words and the model's [model] table alone, and GATE-LASER-003's check
selection holds the surgery's targets to it, at run time and in the checker (from the record's
argv and config.toml):

* the model's matrices are its 2-D weights (contracts.model_shape.parameter_shapes), each tensor
  once, a tied head one tensor with the embedding (both state-dict keys);
* a matrix is named for the trace site its output is observed at (`embed`, `logits`,
  `layers.<i>.q` … `ffn_out`, `q2`, `k2`), else by its module path (`layers.<i>.router`,
  `layers.<i>.moe.expert<e>.up`); a glob matches the full name, the part after `layers.<i>.`, or
  a dense matrix's Hugging Face name (`q_proj`, `layers.1.q_proj`, `embed_tokens`, `lm_head`);
* `--layers A-B` is every block from A to B, both included (`--layers A` the one block), and then
  keeps only the matrices of those blocks; a model-level matrix is in no block.

`stack trace --layers A-B --sites GLOB` selects trace sites by the same block rule (`trace_sites`):
a model-level site (embed, final_norm, logits) is in no block and stays; a glob matches a site's
full name or its kind (the part after `layers.<i>.`). GATE-TRACE-002's check selection holds the
sites a trace report keeps to it. `site_widths` gives the last axis of each site the [model] table
decides, by which the checker holds a trace's site shapes and counts to its checkpoint.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.model_shape import DEFAULTS, HF_NAMES, parameter_shapes, routed_blocks

# A block module's path → the trace site its output is observed at (the rest keep their path).
MODULE_SITES = {
    "attn.q": "q",
    "attn.k": "k",
    "attn.v": "v",
    "attn.o": "attn_out",
    "ffn.gate": "ffn_gate",
    "ffn.up": "ffn_up",
    "ffn.down": "ffn_out",
    "attn.q2": "q2",
    "attn.k2": "k2",
}
# The trace sites a block's matrices are observed at.
KINDS = frozenset(MODULE_SITES.values())
# The model-level matrices: module → (name, Hugging Face short name).
MODEL_MATRICES = {"embed": ("embed", "embed_tokens"), "lm_head": ("logits", "lm_head")}
SITE_HF = {site: hf for hf, site in HF_NAMES.items()} | dict(MODEL_MATRICES.values())


def matrix_tensors(model: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Each 2-D weight of the model a [model] table describes, as the state-dict keys that hold it, in
    module order: a tied head is the embedding's tensor, `embed.weight` and `lm_head.weight`."""
    tied = model.get("tie_embeddings", DEFAULTS["tie_embeddings"])
    keys = [key for key, shape in parameter_shapes(model).items() if len(shape) == 2]
    return [("embed.weight", "lm_head.weight") if key == "embed.weight" and tied else (key,) for key in keys]


def matrix_name(key: str) -> str:
    """The name of the matrix a state-dict key holds (`layers.2.attn.o.weight` → `layers.2.attn_out`)."""
    path = key.removesuffix(".weight")
    if path in MODEL_MATRICES:
        return MODEL_MATRICES[path][0]
    head, _, rest = path.partition(".")
    layer, _, module = rest.partition(".")
    if head == "layers" and layer.isdigit():
        return f"layers.{layer}.{MODULE_SITES.get(module, module)}"
    return path


def layer_of(name: str) -> int | None:
    """The block of a matrix name, None for a model-level one."""
    parts = name.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() else None


def aliases(name: str) -> list[str]:
    """Every name a glob may match for the matrix: the name, its kind (after `layers.<i>.`), and a
    dense or model-level matrix's Hugging Face short name, alone and within its layer."""
    layer = layer_of(name)
    kind = name.split(".", 2)[2] if layer is not None else name
    found = [name, kind]
    if kind in SITE_HF:
        found.append(SITE_HF[kind])
        if layer is not None:
            found.append(f"layers.{layer}.{SITE_HF[kind]}")
    return found


def parse_layers(text: str, n_layers: int) -> list[int]:
    """`A-B` (both included) or `A` as the blocks it names; [] when it names none of the model's."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None:
        return []
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    return list(range(first, last + 1)) if first <= last < n_layers else []


def option(argv: Sequence[str], flag: str) -> str | None:
    """The value the last `flag VALUE` or `flag=VALUE` of a command line gives (argparse also takes a
    flag's unambiguous prefix, `--lay 0-1`), None when it gives none."""
    found = None
    for at, word in enumerate(argv):
        name, equals, value = word.partition("=")
        if not (name.startswith("--") and len(name) > 2 and flag.startswith(name)):
            continue
        if equals:
            found = value
        elif at + 1 < len(argv):
            found = argv[at + 1]
    return found


def selected(model: Mapping[str, Any], patterns: Sequence[str], layers: str | None) -> list[str]:
    """The state-dict keys, sorted, of every matrix of the model that one of `patterns` names (by any
    of its names' aliases) and, with `layers`, that lies in one of the blocks it names."""
    blocks = None if layers is None else set(parse_layers(layers, int(model["n_layers"])))
    chosen = []
    for keys in matrix_tensors(model):
        names = [matrix_name(key) for key in keys]
        named = any(
            fnmatch.fnmatchcase(alias, p) for name in names for alias in aliases(name) for p in patterns
        )
        in_blocks = blocks is None or any(layer_of(name) in blocks for name in names)
        if named and in_blocks:
            chosen += keys
    return sorted(chosen)


def selected_by(argv: Sequence[str], model: Mapping[str, Any]) -> list[str]:
    """What a surgery's command line (`--targets GLOB`, optionally `--layers A-B`) selects of the model."""
    targets = option(argv, "--targets")
    return [] if targets is None else selected(model, [targets], option(argv, "--layers"))


def trace_sites(traced: Sequence[str], layers: str | None, pattern: str | None, n_layers: int) -> list[str]:
    """The sites of `traced` (a forward's site names, in order) that `stack trace --layers` and
    `--sites` keep: a block site only in a block `layers` names, any site only where `pattern`
    matches its full name or its kind."""
    blocks = None if layers is None else set(parse_layers(layers, n_layers))
    chosen = []
    for name in traced:
        layer = layer_of(name)
        kind = name.split(".", 2)[2] if layer is not None else name
        if blocks is not None and layer is not None and layer not in blocks:
            continue
        if pattern is not None and not any(fnmatch.fnmatchcase(n, pattern) for n in (name, kind)):
            continue
        chosen.append(name)
    return chosen


# The block sites on the residual stream, d_model wide: the norms' outputs, the residual and the output.
RESIDUAL_SITES = ("attn_norm", "attn_residual", "ffn_norm", "output")


def site_widths(model: Mapping[str, Any]) -> dict[str, int]:
    """The width (last axis) of each trace site of a model a [model] table describes whose rows are
    the prompt's tokens: embed, final_norm and each block's residual sites d_model, logits the
    vocabulary, a projection's site its matrix's rows (contracts.model_shape: k and v n_kv_heads ×
    head_dim), ffn_silu and ffn_swiglu ffn_gate's. A depth-routed block, whose sites hold only its
    routed tokens, and a mixture's expert sites are not given."""
    d = int(model["d_model"])
    widths = {"embed": d, "final_norm": d, "logits": int(model["vocab"])}
    routed = set(routed_blocks(model))
    for key, shape in parameter_shapes(model).items():
        name = matrix_name(key)
        layer = layer_of(name)
        if len(shape) == 2 and layer is not None and layer not in routed and name.split(".", 2)[2] in KINDS:
            widths[name] = shape[0]
    for layer in (i for i in range(int(model["n_layers"])) if i not in routed):
        widths |= {f"layers.{layer}.{kind}": d for kind in RESIDUAL_SITES}
        gate = widths.get(f"layers.{layer}.ffn_gate")
        if gate is not None:
            widths |= {f"layers.{layer}.{kind}": gate for kind in ("ffn_silu", "ffn_swiglu")}
    return widths
