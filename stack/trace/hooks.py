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

from stack.model.depth_router import DepthRoutedBlock
from stack.model.diff_attention import DiffAttention
from stack.model.gpt import GPT
from stack.model.moe import MoE
from stack.trace.sites import block_input

Visitor = Callable[[str, torch.Tensor], torch.Tensor | None]


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
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def visit(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """The visitor's answer for a site, each replacement kept with what it replaced."""
        replacement = self._visitor(name, tensor)
        if replacement is not None:
            self.replaced.append(Replacement(name, tensor.detach(), replacement.detach().clone()))
        return replacement

    def __enter__(self) -> SiteHooks:
        model = self.model
        self._output(model.embed, "embed")
        for i, layer in enumerate(model.layers):
            prefix = f"layers.{i}."
            self._feed(layer, block_input(i))
            self._output(layer.attn_norm, prefix + "attn_norm")
            self._output(layer.attn.q, prefix + "q")
            self._output(layer.attn.k, prefix + "k")
            self._output(layer.attn.v, prefix + "v")
            for kind in ("q_norm", "k_norm"):
                norm = getattr(layer.attn, kind, None)
                if norm is not None:
                    self._output(norm, prefix + kind)
            if isinstance(layer.attn, DiffAttention):
                self._output(layer.attn.q2, prefix + "q2")
                self._output(layer.attn.k2, prefix + "k2")
                self._output(layer.attn.head_norm, prefix + "attn_head_norm")
            if isinstance(layer, DepthRoutedBlock):
                self._output(layer.router, prefix + "router")
            self._output(layer.attn, prefix + "attn_out")
            self._input(layer.ffn_norm, prefix + "attn_residual")
            self._output(layer.ffn_norm, prefix + "ffn_norm")
            if isinstance(layer.feed_forward, MoE):
                self._mixture(layer.feed_forward, prefix)
            else:
                self._output(layer.ffn.gate, prefix + "ffn_gate")
                self._output(layer.ffn.up, prefix + "ffn_up")
                self._output(layer.ffn.swiglu.act, prefix + "ffn_silu")
                self._output(layer.ffn.swiglu, prefix + "ffn_swiglu")
                self._output(layer.ffn, prefix + "ffn_out")
            self._output(layer, prefix + "output")
        self._feed(model.final_norm, block_input(len(model.layers)))
        self._output(model.final_norm, "final_norm")
        self._output(model.lm_head, "logits")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _mixture(self, moe: MoE, prefix: str) -> None:
        """The sites of a mixture-of-experts feed-forward, in the order its forward computes them."""
        self._output(moe.router, prefix + "moe.router")
        for e, expert in enumerate(moe.experts):
            self._input(expert, f"{prefix}moe.expert{e}.input")
            self._output(expert, f"{prefix}moe.expert{e}")
        if moe.shared is not None:
            self._output(moe.shared, prefix + "moe.shared")
        self._output(moe, prefix + "moe_out")

    def _output(self, module: nn.Module, name: str) -> None:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            return self.visit(name, output)

        self._handles.append(module.register_forward_hook(hook))

    def _input(self, module: nn.Module, name: str) -> None:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if self.visit(name, args[0]) is not None:
                raise ValueError(f"{name} can be observed but not replaced")

        self._handles.append(module.register_forward_pre_hook(hook))

    def _feed(self, module: nn.Module, source: str) -> None:
        if self.feed is None:
            return

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (self.feed[source].to(args[0].dtype), *args[1:])  # type: ignore[index]

        self._handles.append(module.register_forward_pre_hook(hook))
