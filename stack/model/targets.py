"""The matrices a surgery or an adapter may touch: every 2-D weight of the model, each by one name.

A matrix is named for the trace site its output is observed at (docs/trace.md), so the trace, the
surgery and LoRA share one vocabulary:

* model level: `embed`, and `logits` (lm_head);
* in block i, `layers.<i>.<kind>`: `q`, `k`, `v`, `attn_out` (attn.o), `ffn_gate`, `ffn_up`,
  `ffn_out` (ffn.down); with differential attention `q2` and `k2`; in a mixture-of-depths block
  its `router`; in a mixture of experts `moe.router`, and each expert's matrices by their module
  path, `moe.expert<e>.gate`, `.up`, `.down` (and `moe.shared.*`), since an expert's projections
  have no trace site of their own.

Every 2-D weight of the model has such a name, whatever options built it, so `--targets '*'` is
every matrix the model has, and a surgery can never pass over a part of the model silently: a
`Selection` holds the matrices chosen *and* every one left out with the reason (not matched,
outside `--layers`, the tied head taken once as `embed`), which each command prints and records.

A tied model has one tensor behind `embed` and `logits`; choosing either chooses that tensor
once, with both of its state-dict names, so a surgery cannot treat the two halves differently.
`--targets GLOB` matches the full name, the kind (the name after `layers.<i>.`), or the matrix's
Hugging Face name (`q_proj`, `o_proj`, `down_proj`, `layers.1.q_proj`: one table of the three
vocabularies, stack.model.names); `--layers A-B` keeps only the matrices of those blocks. A
selection that matches nothing is bad input, so a typo cannot make a surgery that does nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contracts.errors import BadInput
from contracts.model_shape import not_matched, tied_to
from contracts.wording import first_few
from stack.model import names as vocabulary
from stack.model.gpt import GPT

# The block matrices of the architecture options that stack.model.names (the dense model's table,
# shared with the Hugging Face export) does not hold, by the trace site their output feeds; every
# other block module keeps its path (router, moe.router, moe.expert0.up, …).
OPTION_SITES = {"attn.q2": "q2", "attn.k2": "k2"}
SHOWN = 6  # names listed per reason in a printed summary before "and N more"


@dataclass(frozen=True)
class Target:
    """One matrix to operate on: its name, every state-dict key that holds it, the tensor."""

    site: str
    keys: tuple[str, ...]
    weight: nn.Parameter

    @property
    def short(self) -> str:
        """The name without its layer: `ffn_up` for `layers.2.ffn_up`, `moe.expert1.gate` for
        `layers.0.moe.expert1.gate`; a model-level name is its own."""
        return kind_of(self.site)


@dataclass(frozen=True)
class Skipped:
    """A matrix of the model left out of a selection, and why."""

    name: str
    reason: str
    parameters: int


@dataclass(frozen=True)
class Selection:
    """The matrices chosen, and every other matrix of the model with the reason it was left out."""

    targets: tuple[Target, ...]
    skipped: tuple[Skipped, ...]

    def as_record(self) -> dict[str, Any]:
        """What a command records: the names touched, those skipped with their reasons, and the
        share of the model's matrix parameters the touched ones hold."""
        touched = sum(t.weight.numel() for t in self.targets)
        total = touched + sum(s.parameters for s in self.skipped)
        return {
            "touched": [t.site for t in self.targets],
            "skipped": [{"matrix": s.name, "reason": s.reason} for s in self.skipped],
            "parameter_share": touched / total if total else 0.0,
        }


def kind_of(name: str) -> str:
    """`layers.3.moe.expert1.up` → `moe.expert1.up`; `embed` → `embed`."""
    parts = name.split(".", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() else name


def _name(path: str) -> str:
    """The matrix name of the module at `path` (see the module docstring)."""
    site = vocabulary.site_of(path)
    if site is not None:
        return site
    parts = path.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers":
        return f"layers.{parts[1]}.{OPTION_SITES.get(parts[2], parts[2])}"
    return path


def aliases(name: str) -> tuple[str, ...]:
    """Every name a pattern may match for the matrix `name`: the name, its kind, and, for a matrix
    of the dense model's table, its Hugging Face short name, alone and within its layer
    (`q_proj`, `layers.2.q_proj`)."""
    kind = kind_of(name)
    found = [name, kind]
    matrix = next((m for m in (*vocabulary.BLOCK, *vocabulary.MODEL) if m.site == kind), None)
    if matrix is not None:
        found.append(matrix.hf_short)
        layer = _layer(name)
        if layer is not None:
            found.append(f"layers.{layer}.{matrix.hf_short}")
    return tuple(dict.fromkeys(found))


def _layer(name: str) -> int | None:
    parts = name.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "layers" else None


def matrices(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every 2-D weight of the model, each tensor once, in module order.

    A LoRA wrapper is its base projection's module (its `weight` is the base's); the adapter's own
    `lora_A` and `lora_B` are not weights of the model and are not offered.
    """
    found: list[tuple[str, nn.Parameter]] = []
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and all(w is not weight for _, w in found):
            found.append((_name(path), weight))  # type: ignore[arg-type]
    return found


def keys_of(model: nn.Module, weight: nn.Parameter) -> tuple[str, ...]:
    """Every state-dict key whose tensor is `weight` (two for a tied embedding)."""
    return tuple(
        f"{name}.weight"
        for name, module in model.named_modules(remove_duplicate=False)
        if getattr(module, "weight", None) is weight
    )


def _tied_names(model: nn.Module, weight: nn.Parameter) -> list[str]:
    """The names of every module holding `weight` (embed and logits for a tied head)."""
    return [
        _name(path)
        for path, module in model.named_modules(remove_duplicate=False)
        if getattr(module, "weight", None) is weight
    ]


def matches(name: str, pattern: str) -> bool:
    """Whether a glob names this matrix, by its full name, its kind or its Hugging Face name. Not the
    full Hugging Face path: `*attn*` would then match q, k and v through `self_attn`, where it has
    always meant `attn_out`."""
    return any(fnmatch.fnmatchcase(alias, pattern) for alias in aliases(name))


def select(
    model: GPT,
    patterns: list[str],
    layers: str | None = None,
    option: str = "--targets",
    refusal: Callable[[str], str | None] = lambda _name: None,
) -> Selection:
    """The matrices any of `patterns` names (in `layers`, when given), each tensor once.

    `refusal(name)` says why a matrix may not be chosen by the caller (LoRA: an embedding is no
    projection), or None: a pattern that is exactly such a name is bad input, a glob passes over
    it, recording the reason. Every pattern must match some matrix.
    """
    chosen = vocabulary.parse_layers(layers, len(model.layers)) if layers else None
    every = matrices(model)
    all_names = [n for _, weight in every for n in _tied_names(model, weight)]
    for pattern in patterns:
        if not any(matches(name, pattern) for name in all_names):
            raise BadInput(_no_match(pattern, option, all_names))
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for name, weight in every:
        names = _tied_names(model, weight)  # embed and logits for a tied head: one tensor
        named = [p for p in patterns if any(matches(n, p) for n in names)]
        label = next((n for n in names if any(matches(n, p) for p in named)), name)
        layer = _layer(label)
        reason = None
        if not named:
            reason = not_matched(option, patterns)
        elif chosen is not None and (layer is None or layer not in chosen):
            reason = (
                f"outside --layers {layers}" if layer is not None else "in no block (--layers keeps blocks)"
            )
        elif (why := refusal(label)) is not None:
            if any(not any(c in p for c in "*?[") for p in named):  # named, not reached by a glob
                raise BadInput(why)
            reason = why
        if reason is None:
            targets.append(Target(label, keys_of(model, weight), weight))
        else:
            skipped.append(Skipped(label, reason, weight.numel()))
        skipped += [Skipped(n, tied_to(label), 0) for n in names if n != label]
    if not targets:
        raise BadInput(f"{option} {','.join(patterns)!r} leaves no matrix: " + _grouped(skipped)[0])
    return Selection(tuple(targets), tuple(skipped))


def select_targets(model: GPT, pattern: str, layers: str | None = None) -> list[Target]:
    """The matrices `pattern` names (in `layers`, when given), each tensor once."""
    return list(select(model, [pattern], layers).targets)


def _no_match(pattern: str, option: str, names: list[str]) -> str:
    kinds = ", ".join(dict.fromkeys(re.sub(r"expert\d+", "expert<e>", kind_of(name)) for name in names))
    # LoRA's --set lora.targets takes a list ('q,v'); a surgery's --targets one glob ('*attn*').
    listed = " (one pattern: a comma list such as 'q,k,v' is LoRA's form)" if "," in pattern else ""
    return (
        f"{option} {pattern!r} matches no matrix{listed}; this model's matrices are named {kinds} (or by "
        "their Hugging Face names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
        "lm_head; globs on the full name or the part after layers.<i>., e.g. 'ffn_*', 'layers.1.q', "
        "'moe.expert*', or '*' for every matrix)"
    )


def _grouped(skipped: list[Skipped] | tuple[Skipped, ...]) -> list[str]:
    """One phrase per reason: `reason: name, name, … and N more`."""
    by_reason: dict[str, list[str]] = {}
    for s in skipped:
        by_reason.setdefault(s.reason, []).append(s.name)
    lines = []
    for reason, names in by_reason.items():
        lines.append(f"{len(names)} ({reason}): {first_few(names, SHOWN)}")
    return lines


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What a command prints about its selection, from what it recorded (`Selection.as_record`)."""
    touched, skipped = record["touched"], record["skipped"]
    head = (
        f"touched {len(touched)} matrices ({record['parameter_share']:.1%} of the model's matrix "
        f"parameters); skipped {len(skipped)}"
    )
    rows = [Skipped(s["matrix"], s["reason"], 0) for s in skipped]
    return [head, *(f"  skipped {line}" for line in _grouped(rows))]
