"""Forward hooks that show every site's tensor to a visitor, in forward order.

The model's sub-modules are named for the sites (stack/model/layers.py), so every site but one
is a module's output: `ffn_silu` is that of `ffn.swiglu.act`, the SiLU the product applies to the
gate (a model that computes it otherwise leaves the site unobserved, and GATE-TRACE-002 says so),
and `attn_residual` is read as the input of `ffn_norm` (Block hands the residual stream to it
unchanged).

A visitor may return a tensor to use in place of the one it was shown (ablation, and the
planted bug of GATE-TRACE-001's falsifier); returning None leaves the forward untouched. Every
replacement is kept in `replaced` (the site, what the forward computed there, what took its place),
so what a forward overwrote is measured where the hook did it, not taken from the caller's request
(GATE-PATCH-002's check `cells`). The
residual stream at `attn_residual` is only observed: replacing the ffn_norm input would not
replace the stream, so a substitute there is refused.

The architecture options show the sites of their layout (stack.trace.sites): a mixture of
experts (stack/model/moe.py) its router's output, each expert's input (observed only, like the
residual stream) and output, the shared expert's output and the mixture's output as `moe_out`,
in place of the ffn sites; differential attention its `q2`, `k2` and `head_norm` outputs; q/k
head norms (`qk_norm`) their `q_norm` and `k_norm` outputs; a mixture-of-depths block its router's
output.

`feed` implements shadow mode: block i (and final_norm) receive the given tensor as input
instead of the previous block's output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stack.model.depth_router import DepthRoutedBlock
from stack.model.diff_attention import DiffAttention
from stack.model.gpt import GPT
from stack.model.moe import MoE
from stack.trace.sites import block_input
from stack.trace.structure import kept

Visitor = Callable[[str, torch.Tensor], torch.Tensor | None]
# Where a site is read: the SiteHooks method that places its hook (`_output`, `_input`, or `_feed`
# for a block input under shadow mode), the module and the site's name.
Place = tuple[str, nn.Module, str]


class _Placed:
    """One hook put straight into a module's table of forward hooks or pre-hooks, under the next
    key of torch's own handles (so no handle of torch's can take it), and taken out by `remove`.
    What Module.register_forward_hook does, without the handle of weak references it makes for
    each: a traced forward places and removes about eighty hooks, and those handles were more than
    the placing itself."""

    __slots__ = ("hooks", "key")

    def __init__(self, hooks: dict[int, Callable[..., Any]], hook: Callable[..., Any]) -> None:
        self.hooks, self.key = hooks, RemovableHandle.next_id
        RemovableHandle.next_id += 1
        hooks[self.key] = hook

    def remove(self) -> None:
        self.hooks.pop(self.key, None)


def _sites(model: GPT) -> list[Place]:
    """Every site of `model` in forward order, where its hook goes (kept per model structure:
    stack.trace.structure)."""
    places: list[Place] = [("_output", model.embed, "embed")]
    for i, layer in enumerate(model.layers):
        prefix = f"layers.{i}."
        places.append(("_feed", layer, block_input(i)))
        places.append(("_output", layer.attn_norm, prefix + "attn_norm"))
        places += [("_output", getattr(layer.attn, kind), prefix + kind) for kind in ("q", "k", "v")]
        for kind in ("q_norm", "k_norm"):
            norm = getattr(layer.attn, kind, None)
            if norm is not None:
                places.append(("_output", norm, prefix + kind))
        if isinstance(layer.attn, DiffAttention):
            places.append(("_output", layer.attn.q2, prefix + "q2"))
            places.append(("_output", layer.attn.k2, prefix + "k2"))
            places.append(("_output", layer.attn.head_norm, prefix + "attn_head_norm"))
        if isinstance(layer, DepthRoutedBlock):
            places.append(("_output", layer.router, prefix + "router"))
        places.append(("_output", layer.attn, prefix + "attn_out"))
        places.append(("_input", layer.ffn_norm, prefix + "attn_residual"))
        places.append(("_output", layer.ffn_norm, prefix + "ffn_norm"))
        if isinstance(layer.feed_forward, MoE):
            places += _mixture(layer.feed_forward, prefix)
        else:
            ffn = layer.ffn
            places.append(("_output", ffn.gate, prefix + "ffn_gate"))
            places.append(("_output", ffn.up, prefix + "ffn_up"))
            places.append(("_output", ffn.swiglu.act, prefix + "ffn_silu"))
            places.append(("_output", ffn.swiglu, prefix + "ffn_swiglu"))
            places.append(("_output", ffn, prefix + "ffn_out"))
        places.append(("_output", layer, prefix + "output"))
    places.append(("_feed", model.final_norm, block_input(len(model.layers))))
    places.append(("_output", model.final_norm, "final_norm"))
    places.append(("_output", model.lm_head, "logits"))
    return places


def _mixture(moe: MoE, prefix: str) -> list[Place]:
    """The sites of a mixture-of-experts feed-forward, in the order its forward computes them."""
    places: list[Place] = [("_output", moe.router, prefix + "moe.router")]
    for e, expert in enumerate(moe.experts):
        places.append(("_input", expert, f"{prefix}moe.expert{e}.input"))
        places.append(("_output", expert, f"{prefix}moe.expert{e}"))
    if moe.shared is not None:
        places.append(("_output", moe.shared, prefix + "moe.shared"))
    places.append(("_output", moe, prefix + "moe_out"))
    return places


@dataclass(frozen=True)
class Replacement:
    """One site a hook overwrote: the tensor the forward computed there and the one it went on with."""

    name: str
    computed: torch.Tensor
    written: torch.Tensor


class SiteHooks:
    """A context manager that hooks every site of `model` for the duration of a `with` block."""

    def __init__(self, model: GPT, visit: Visitor, feed: Mapping[str, torch.Tensor] | None = None) -> None:
        self.model, self._visitor, self.feed = model, visit, feed
        self.replaced: list[Replacement] = []
        self._handles: list[_Placed | RemovableHandle] = []

    def visit(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """The visitor's answer for a site, each replacement kept with what it replaced."""
        replacement = self._visitor(name, tensor)
        if replacement is not None:
            self.replaced.append(Replacement(name, tensor.detach(), replacement.detach().clone()))
        return replacement

    def __enter__(self) -> SiteHooks:
        for place, module, name in kept(self.model, "sites", lambda: _sites(self.model)):
            getattr(self, place)(module, name)  # by name: a test that plants a fault replaces one
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _output(self, module: nn.Module, name: str) -> None:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            return self.visit(name, output)

        self._handles.append(_Placed(module._forward_hooks, hook))

    def _input(self, module: nn.Module, name: str) -> None:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if self.visit(name, args[0]) is not None:
                raise ValueError(f"{name} can be observed but not replaced")

        self._handles.append(_Placed(module._forward_pre_hooks, hook))

    def _feed(self, module: nn.Module, source: str) -> None:
        if self.feed is None:
            return

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (self.feed[source].to(args[0].dtype), *args[1:])  # type: ignore[index]

        self._handles.append(_Placed(module._forward_pre_hooks, hook))
