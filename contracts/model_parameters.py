"""The named parameters a resolved configuration implies: every tensor of the model and of its LoRA
adapters, with its shape and whether the run trains it (GATE-MODEL-003's check structure).

A model built otherwise than its config names can still compute a consistent forward: a mixture
whose shared expert was never created, an untied model built tied (no `lm_head`), the
mixture-of-depths router on the wrong block, adapters on fewer matrices than `lora.targets` names.
GATE-MODEL-003's reference is written out from the model's own modules, so a tensor that was never
created is never missed there, and a model missing such a tensor trains to its last step with
every in-run gate green. So the tensors a config implies are written out here once more, from
the `[model]` and `[lora]` tables alone, apart from stack/model's construction:

* the model's parameters are contracts.model_shape.parameter_shapes' (a tied head once, as
  `embed.weight`; each option's modules by the rule written there, the depth-routed blocks by
  `routed_blocks`), every one trained by a run without `[lora]`;
* a run with `[lora]` adapts the matrices its `targets` select by contracts.selection's rule (the
  comma-separated globs, each matching a matrix's name, its kind or its Hugging Face name), but
  the embedding, which is no projection, and a tied head, which is the embedding's tensor (the
  stack refuses either where it is named, and a glob passes over it): each adapted matrix's weight
  `<path>.weight` (out × in) gains `<path>.lora_A` (r × in) and `<path>.lora_B` (out × r), which
  train, and every base parameter is frozen.

The stack measures its model's `named_parameters()` at step 0 against `implied_parameters` of the
run's resolved config (stack.model.structure), and the integrity check derives the record's stated
list from its config.toml by the same function (contracts.derive.restated). The same selection,
by matrix name (`lora_touched`, `lora_skipped`), is what the checker holds a LoRA run's stated
matrices, counts and checkpoint sizes to, and a merge of its adapters to the modules they are on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.model_shape import BLOCK_MATRICES, DEFAULTS, dense, not_matched, parameter_shapes, tied_to
from contracts.selection import matrix_name, selected

# The matrices no adapter wraps: the embedding, and a tied head with it (one tensor).
NOT_ADAPTED = frozenset({"embed.weight", "lm_head.weight"})


def _patterns(targets: str) -> list[str]:
    """`lora.targets`' comma-separated globs."""
    return [part.strip() for part in targets.split(",")]


def _tied(model: Mapping[str, Any]) -> bool:
    """Whether the head is the embedding's tensor (a glob that selects one selects both)."""
    return bool(model.get("tie_embeddings", DEFAULTS["tie_embeddings"]))


def lora_adapted(model: Mapping[str, Any], targets: str) -> list[str]:
    """The state-dict keys (`<path>.weight`) of the matrices `lora.targets` adapts, sorted: those its
    comma-separated globs select (contracts.selection.selected), less the embedding and the head
    it is tied to; an untied head is a projection like any other."""
    refused = NOT_ADAPTED if _tied(model) else {"embed.weight"}
    return sorted(set(selected(model, _patterns(targets), None)) - refused)


def lora_touched(model: Mapping[str, Any], targets: Any) -> list[str] | None:
    """The matrices a LoRA run on `lora.targets` adapts (`lora_adapted`), by name in module order
    (contracts.selection.matrix_name: `layers.0.q`, `layers.1.moe.expert0.up`, `logits` for an
    untied head); None for targets that are no string."""
    if not isinstance(targets, str):
        return None
    adapted = set(lora_adapted(model, targets))
    return [matrix_name(key) for key in parameter_shapes(model) if key in adapted]


def lora_skipped(model: Mapping[str, Any], targets: Any) -> list[dict[str, str]] | None:
    """Every matrix a LoRA run on `lora.targets` leaves without an adapter, with the reason, in the
    order stack.model.targets' selection lists them (module order, a tied head right after the
    embedding it is), on a dense model whose targets select no embedding (which the stack passes
    over with a reason of its own); None otherwise."""
    touched = lora_touched(model, targets)
    if touched is None or not dense(model) or "embed.weight" in selected(model, _patterns(targets), None):
        return None
    unmatched = not_matched("lora.targets", _patterns(targets))
    tied = _tied(model)
    head = (
        []
        if "logits" in touched
        else [{"matrix": "logits", "reason": tied_to("embed") if tied else unmatched}]
    )
    blocks = [f"layers.{i}.{kind}" for i in range(int(model["n_layers"])) for kind in BLOCK_MATRICES]
    return [
        {"matrix": "embed", "reason": unmatched},
        *(head if tied else []),
        *({"matrix": name, "reason": unmatched} for name in blocks if name not in touched),
        *([] if tied else head),
    ]


def implied_parameters(
    model: Mapping[str, Any], lora: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """name → {"shape": [...], "trainable": bool} of every parameter the model a `[model]` table
    describes holds, with the adapters a `[lora]` table (its `targets` and `r`) adds; None: no LoRA."""
    shapes = parameter_shapes(model)
    adapted = set() if lora is None else set(lora_adapted(model, str(lora["targets"])))
    r = 0 if lora is None else int(lora["r"])
    found: dict[str, dict[str, Any]] = {}
    for name, shape in shapes.items():
        found[name] = {"shape": list(shape), "trainable": lora is None}
        if name in adapted:
            path, (fan_out, fan_in) = name.removesuffix(".weight"), shape
            found[f"{path}.lora_A"] = {"shape": [r, fan_in], "trainable": True}
            found[f"{path}.lora_B"] = {"shape": [fan_out, r], "trainable": True}
    return found
