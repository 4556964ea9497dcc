"""What the tracer derives from a model's modules, derived once per structure instead of per forward.

Which module each trace site hooks (stack.trace.hooks) and which module recomputes each site for
GATE-TRACE-002's identities (stack.trace.site_identity) follow from the model's modules alone.
Reading them by attribute is slow in Python (every `layer.attn.q` goes through
nn.Module.__getattr__), and on the `small` preset it was about a tenth of what a traced forward
adds to the plain one, paid again by every forward of the same model: a calibration, a bisection,
a patching run.

`kept` keeps each derived value with the structure it was derived from, and derives it again when
the structure differs: every submodule by identity in a fixed order (a module replaced, added,
removed or moved changes it), with its training mode, a dropout's rate and a `forward` set on the
instance (each changes what a module computes, which the derived values may depend on: a LoRA
adapter's dropout decides whether a product check can stand in for it). The structure holds its
modules, so no module it names can be freed and another take its place.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TypeVar

from torch import nn

Structure = tuple[object, ...]
T = TypeVar("T")

_KEPT: weakref.WeakKeyDictionary[nn.Module, dict[Hashable, tuple[Structure, object]]] = (
    weakref.WeakKeyDictionary()
)


def structure(model: nn.Module) -> Structure:
    """Every submodule of `model` (not `model` itself, which the cache is keyed by) depth first,
    each with its training mode, its dropout rate if it is a dropout, and the `forward` set on the
    instance if any; an empty slot (a submodule registered as None) as None."""
    found: list[object] = []
    pending = list(model._modules.values())
    while pending:
        module = pending.pop()
        if module is None:
            found.append(None)
            continue
        rate = module.p if isinstance(module, nn.modules.dropout._DropoutNd) else None
        found.append((module, module.training, rate, module.__dict__.get("forward")))
        pending += module._modules.values()
    return tuple(found)


def kept(model: nn.Module, key: Hashable, derive: Callable[[], T]) -> T:
    """`derive()` for `model` under `key`, derived again only when the model's `structure` changed
    since it was last derived."""
    now = structure(model)
    table = _KEPT.setdefault(model, {})
    entry = table.get(key)
    if entry is not None and entry[0] == now:
        return entry[1]  # type: ignore[return-value]
    value = derive()
    table[key] = (now, value)
    return value
