"""GATE-TRAIN-007's check dropout: a configured LoRA dropout acts where it is meant to, on what A reads.

A LoRA adapter computes s·B·A·dropout(x). A dropout that is never drawn (the adapter hands A its
input as it came) trains a model without the regularisation the run states, a little differently,
and every other check replays the same absent dropout: the mode checks ask only whether the model
was in training mode, and the inference comparison draws its dropout from the same code. So the
dropout is measured where it acts, from two places the adapter's own code does not report on:

* what each adapter was handed: its `adapter` method is wrapped for the block (per module, so the
  fused projections of stack.model.projection call it as they always do), recording its input x;
* what its A consumed: a torch function mode sees every `F.linear` whose weight is that adapter's
  `lora_A`, and records the input it was given.

The forward is the step's own loss on the step's last micro-batch, in training mode with autograd
on, as a training step computes it, its dropout drawn from forked generators (the run's random
streams are left as they were, stack.train.consumption.in_mode); it runs at GATE-TRAIN-007's
probes (the first step of every invocation and every evaluation), so the steps between cost
nothing more. With lora.dropout p > 0, dropout's signature must show: of the elements of x that
are not 0, the share A read as 0 is p within the spec's binomial bound (`dropout_sigmas` standard
deviations of a Binomial(n, p)), and every element A read that is not 0 is x / (1 − p) within
`dropout_scale_ulps` units of the input dtype's epsilon (torch's dropout rounds the scale and the
product, one unit each at most); an element of x that is 0 stays 0. With p = 0, A reads exactly x.
Every adapter handed an input must have its A read exactly as many inputs of the same shape. The
model has no other dropout (GPT's attention and residual paths draw none), so LoRA's is the one
measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from contracts.derive.training import finite_or_text
from contracts.gates import Outcome, gate_require, measure
from stack.model.lora import LoRALinear, adapters
from stack.train.consumption import in_mode


@dataclass
class AdapterReads:
    """Per adapter (by module path), the inputs it was handed and the inputs its A consumed, in order."""

    handed: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    consumed: dict[str, list[torch.Tensor]] = field(default_factory=dict)


class _ConsumedByA(TorchFunctionMode):
    """Records the input of every `F.linear` whose weight is one of the watched A matrices."""

    def __init__(self, owners: dict[int, str], reads: AdapterReads) -> None:
        super().__init__()
        self.owners, self.reads = owners, reads

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self.owners.get(id(weight))
            if name is not None:
                self.reads.consumed[name].append(args[0].detach())
        return func(*args, **kwargs)


def _handed(name: str, wrapper: LoRALinear, reads: AdapterReads) -> Callable[[torch.Tensor], Any]:
    """The wrapper's own `adapter`, recording each input it is handed first."""
    own = type(wrapper).adapter.__get__(wrapper)

    def adapter(x: torch.Tensor) -> Any:
        reads.handed[name].append(x.detach())
        return own(x)

    return adapter


@contextmanager
def adapter_reads(model: torch.nn.Module) -> Iterator[AdapterReads]:
    """Inside the block, what every unmerged adapter of `model` was handed and what its A consumed."""
    watched = [(name, w) for name, w in adapters(model) if not w.merged]
    reads = AdapterReads({name: [] for name, _ in watched}, {name: [] for name, _ in watched})
    owners = {id(w.lora_A): name for name, w in watched}
    for name, wrapper in watched:
        wrapper.adapter = _handed(name, wrapper, reads)  # type: ignore[method-assign]
    try:
        with _ConsumedByA(owners, reads):
            yield reads
    finally:
        for _, wrapper in watched:
            del wrapper.adapter


def _pair_measured(x: torch.Tensor, read: torch.Tensor, p: float) -> tuple[int, int, float]:
    """(elements of x not 0, of them read as 0, the largest distance of what A read from x / (1 − p)
    in units of the dtype's epsilon there: a survivor's relative error, or ∞ where x is 0 and the read
    is not)."""
    x64, read64 = x.double(), read.double()
    nonzero = x64 != 0
    zeroed = nonzero & (read64 == 0)
    want = x64 / (1.0 - p)
    kept = nonzero & ~zeroed
    eps = torch.finfo(x.dtype).eps
    error = ((read64 - want).abs() / (want.abs() * eps))[kept]
    worst = float(error.max()) if error.numel() else 0.0
    if bool((~nonzero & (read64 != 0)).any()):
        worst = float("inf")
    return int(nonzero.sum()), int(zeroed.sum()), worst


def dropout_measured(reads: AdapterReads, p: float) -> dict[str, Any]:
    """GATE-TRAIN-007's check dropout over one forward's `reads`: the configured rate `p`, the adapters
    handed an input, those whose A did not read as many inputs of the same shapes, the nonzero input
    elements, how many of them A read as 0, and the worst survivor's distance from x / (1 − p)."""
    elements = zeroed = unread = 0
    worst = 0.0
    handed = {name: inputs for name, inputs in reads.handed.items() if inputs}
    for name, inputs in handed.items():
        consumed = reads.consumed.get(name, [])
        if len(consumed) != len(inputs) or any(
            a.shape != b.shape for a, b in zip(inputs, consumed, strict=False)
        ):
            unread += 1
            continue
        for x, read in zip(inputs, consumed, strict=True):
            n, z, error = _pair_measured(x, read, p)
            elements, zeroed, worst = elements + n, zeroed + z, max(worst, error)
    return {
        "dropout_p": p,
        "dropout_adapters": len(handed),
        "dropout_unread": unread,
        "dropout_elements": elements,
        "dropout_zeroed": zeroed,
        "dropout_scale_error": finite_or_text(worst),
    }


def measure_dropout(loss_of: Callable[[], Any], model: torch.nn.Module, p: float) -> dict[str, Any]:
    """`loss_of()` once in training mode with autograd on, as a training step computes it (dropout
    drawn from forked generators), its adapters' reads measured (`dropout_measured`)."""
    with in_mode(model, training=True), torch.enable_grad(), adapter_reads(model) as reads:
        loss_of()
    return dropout_measured(reads, p)


def _dropout_outcome(measured: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-TRAIN-007", measured, step=step, holds="the adapters' dropout acts on what A reads")


@gate_require("GATE-TRAIN-007", _dropout_outcome)
def check_dropout(measured: dict[str, Any], step: int) -> None:
    """At a probe of a run with adapters: what each adapter's A read is its input under the run's
    dropout, by its signature (`dropout_measured`)."""
