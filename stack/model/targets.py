"""The matrices a surgery or a LoRA adapter may target, named by the trace site each one produces.

A matrix takes the name of the site its output is observed at (docs/trace.md), so the trace and
the surgery share one vocabulary: `layers.<i>.q`, `k`, `v`, `attn_out` (attn.o), `ffn_gate`,
`ffn_up`, `ffn_out` (ffn.down), and the model-level `embed` and `logits` (lm_head). A tied model
has one tensor behind `embed` and `logits`; choosing either chooses that tensor once, with both of
its state-dict names, so a surgery cannot treat the two halves differently.

`--targets GLOB` matches the full or the short name, or the matrix's Hugging Face name (`q_proj`,
`o_proj`, `down_proj`, `layers.1.q_proj`: one table of the three vocabularies, stack.model.names);
`--layers A-B` keeps only the matrices of those blocks (the model-level ones belong to no block
and are dropped by it). A selection that matches nothing is bad input, so a typo cannot make a
surgery that does nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from contracts.errors import BadInput
from stack.model import names
from stack.model.gpt import GPT


@dataclass(frozen=True)
class Target:
    """One matrix to operate on: its site name, every state-dict key that holds it, the tensor."""

    site: str
    keys: tuple[str, ...]
    weight: nn.Parameter

    @property
    def short(self) -> str:
        """The site without its layer: `ffn_up` for `layers.2.ffn_up`."""
        return self.site.rsplit(".", 1)[-1]


def _candidates(model: GPT, modules: dict[str, nn.Module]) -> list[tuple[str, int | None, str]]:
    """(site, layer, module path) of every matrix the model has, in forward order.

    A block without a dense feed-forward (a mixture-of-experts block) has no ffn_* matrix to
    name, so those are not offered rather than looked up and missed.
    """
    embed, logits = names.MODEL
    found: list[tuple[str, int | None, str]] = [(embed.site, None, embed.module)]
    for layer in range(len(model.layers)):
        found += [
            (f"layers.{layer}.{m.site}", layer, f"layers.{layer}.{m.module}")
            for m in names.BLOCK
            if f"layers.{layer}.{m.module}" in modules
        ]
    return [*found, (logits.site, None, logits.module)]


def select_targets(model: GPT, pattern: str, layers: str | None = None) -> list[Target]:
    """The matrices whose site matches `pattern` (in `layers`, when given), each tensor once."""
    chosen = names.parse_layers(layers, len(model.layers)) if layers else None
    modules = dict(model.named_modules())
    candidates = _candidates(model, modules)
    targets: list[Target] = []
    for site, layer, path in candidates:
        if chosen is not None and (layer is None or layer not in chosen):
            continue
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names.aliases(site, path)):
            continue
        weight = modules[path].weight
        if any(t.weight is weight for t in targets):
            continue  # the tied head: already chosen as `embed`
        targets.append(Target(site, keys_of(model, weight), weight))
    if not targets:
        listed = ", ".join(dict.fromkeys(site.rsplit(".", 1)[-1] for site, _, _ in candidates))
        raise BadInput(
            f"--targets {pattern!r}{f' in --layers {layers}' if layers else ''} matches no matrix; "
            f"this model's matrices are named {listed} (or by their Hugging Face names: q_proj, k_proj, "
            "v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head; globs allowed, e.g. 'ffn_*' or "
            "'layers.1.q'; a mixture-of-experts block has no ffn_* matrix)"
        )
    return targets


def keys_of(model: GPT, weight: nn.Parameter) -> tuple[str, ...]:
    """Every state-dict key whose tensor is `weight` (two for a tied embedding)."""
    return tuple(
        f"{name}.weight"
        for name, module in model.named_modules(remove_duplicate=False)
        if getattr(module, "weight", None) is weight
    )
