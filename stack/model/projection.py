"""Several linear projections of one input as one matrix product, each still a module of its own.

A block projects its normed input three times for attention (q, k, v; five with differential
attention) and twice for the feed-forward (gate, up). As separate modules that is three small
matrix products where one wide one would do, three casts of the input under autocast, and, in
the backward, three input gradients summed in fp32 by separate kernels. Measured on an H100 at
12 × 768 under bf16 autocast (docs/gpu.md, "The model against a hand-written GPT"), those costs
are a large part of what separate projections lose against a hand-written GPT that fuses them.

`project` runs the projections as one product over their stacked weights, then hands each its
slice. The modules stay what the rest of the stack knows: the home of their weights under their
own state-dict keys (checkpoints, imports, surgery and LoRA targets name them) and trace sites —
each module's forward hooks run on its slice, in the modules' order, exactly as `Module.__call__`
would run them, so a hook sees what it would see on a module of its own and may replace it
(ablation, patching).

A LoRA wrapper joins the product with its base weight and adds its adapter's term to its slice
(the `adapter` method), so adapted and bare models compute their base part by the same product
(GATE-LORA-001 compares them element for element). Any other module, or one with hooks this
cannot honour (pre-hooks, backward hooks, hooks with keyword arguments, global hooks), makes the
whole group run module by module, one product each.

Stacking the weights is a copy of them, made again for every forward: in training it is part of
the graph (the backward splits the stacked weight's gradient back to the modules), and next to a
batch's products it is small. Decoding runs a forward per token, each a product of one row, and
there the copy is not small: about a quarter of a token's time at GPT-2 small's shape on one CPU
core; nor in an activation-patching run, dozens of forwards of one short prompt. So inside
`stacked_weights()` (which `generate` and `stack.trace.patch.patch_runs` enter) a forward without
a graph keeps each group's stacked weight and bias, and uses them again while every member's
tensors are the same ones, unchanged (their in-place version and their data); the copy, as much
memory as the stacked weights, is freed when the block ends. The kept weight is the same `torch.cat` of the
same tensors, so the product, and every bit of the model's output, is what it would be without.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

# A LoRA wrapper's `adapter`: its term on the input, or None where it adds none. Named here, so that
# the cast below is a string, not a type built again for every module of every forward.
Adapter = Callable[[torch.Tensor], Any]


def _global_hooks() -> bool:
    """Whether any hook is registered for every module (nn.modules.module.register_module_*)."""
    return any(
        getattr(torch_module, name)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def _joins(module: nn.Module) -> bool:
    """Whether `module` can run as a slice of a shared product: a plain nn.Linear or a LoRA wrapper,
    with no hook but plain forward hooks."""
    linear = type(module) is nn.Linear or callable(getattr(module, "adapter", None))
    return (
        linear
        and not module._forward_pre_hooks
        and not module._forward_hooks_with_kwargs
        and not module._backward_hooks
        and not module._backward_pre_hooks
    )


def _hooked(module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """`output` after `module`'s forward hooks, run as Module.__call__ runs them: in registration
    order, each given the module, its input and the output so far, a returned tensor replacing it."""
    for hook in module._forward_hooks.values():
        replaced = hook(module, (x,), output)
        if replaced is not None:
            output = replaced
    return output


# A group's stacked (weight, bias), kept with the members' tensors and their states it was made of.
Stacked = tuple[torch.Tensor, torch.Tensor | None]
_Kept = tuple[tuple[torch.Tensor | None, ...], tuple[tuple[int, int], ...], Stacked]
# Inside `stacked_weights()`, the groups' stacked weights by their members' tensors' ids; None outside.
_KEPT: ContextVar[dict[tuple[int, ...], _Kept] | None] = ContextVar("stacked_weights", default=None)


@contextmanager
def stacked_weights() -> Iterator[None]:
    """Forwards without a graph inside keep each group's stacked weight and bias while its members'
    are unchanged, instead of stacking them again every forward (the module docstring says why);
    what was kept is freed when the block ends."""
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


def _stack(weights: list[torch.Tensor], biases: list[torch.Tensor | None]) -> Stacked:
    """The group's weights as one, and its biases as one (None when no member has a bias; zeros
    for the slice of a member without one)."""
    if all(b is None for b in biases):
        bias = None
    else:
        bias = torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)]
        )
    return torch.cat(weights), bias


def _states(tensors: tuple[torch.Tensor | None, ...]) -> tuple[tuple[int, int], ...] | None:
    """Each of `tensors`' in-place version and where its data lies ((-1, 0) for None): a write into
    it changes the first, `.data =` the second. None where a tensor keeps no version (one made in
    inference mode), which cannot be kept then."""
    try:
        return tuple((-1, 0) if t is None else (t._version, t.data_ptr()) for t in tensors)
    except RuntimeError:
        return None


def _stacked(weights: list[torch.Tensor], biases: list[torch.Tensor | None]) -> Stacked:
    """`_stack` of the group, kept inside `stacked_weights()` for forwards without a graph: the kept
    one is used again only for the same tensors (held by the entry, so no other can take their
    ids) in the same states, and any change to a weight or bias makes it again. A compiled forward
    stacks them in its graph and never reads what is kept (reading the context variable would
    break its graph at every group)."""
    if torch.compiler.is_compiling():
        return _stack(weights, biases)
    kept = _KEPT.get()
    if kept is None or torch.is_grad_enabled():
        return _stack(weights, biases)
    members = (*weights, *biases)
    states = _states(members)
    if states is None:
        return _stack(weights, biases)
    key = tuple(map(id, members))
    entry = kept.get(key)
    if entry is not None and entry[1] == states and all(map(operator.is_, entry[0], members)):
        return entry[2]
    stacked = _stack(weights, biases)
    kept[key] = (members, states, stacked)
    return stacked


def project(x: torch.Tensor, modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """Each module's output on `x`, computed as one product when every module can join it.

    Every slice handed on is a view of the one product, whatever adapters or hooks there are: on
    the CPU an elementwise kernel may round a strided view's last elements otherwise than a
    contiguous copy's (the vectorised loop's tail), so a layout that changed with an adapter or
    a trace hook would change the model's bits. An adapter's term is therefore added in place.
    """
    if _global_hooks() or not all(_joins(m) for m in modules):
        return [m(x) for m in modules]
    weights = [cast(torch.Tensor, m.weight) for m in modules]
    biases = [cast(torch.Tensor | None, m.bias) for m in modules]
    fused = F.linear(x, *_stacked(weights, biases))
    widths = [w.shape[0] for w in weights]
    start = 0
    for module, width in zip(modules, widths, strict=True):
        adapter = cast("Adapter | None", getattr(module, "adapter", None))
        term = adapter(x) if adapter is not None else None
        if term is not None:
            fused.narrow(-1, start, width).add_(term)
        start += width
    parts = fused.split(widths, dim=-1)  # after every in-place term: views, in the modules' order
    return [_hooked(module, x, part) for module, part in zip(modules, parts, strict=True)]
