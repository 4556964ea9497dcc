"""The bindings of the mixture-of-experts gates (GATE-ARCH-001 … 004, and GATE-ARCH-012).

Each gate's rule is its judge in contracts/judges/arch.py; here the stack measures and hands the
numbers over. The checks run only when the model has experts: a dense model never records them,
which is why no run kind requires them (spec/run_kinds.yaml) and a record judges them when present.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.model.config import ModelConfig
from stack.model.feedforward import FeedForward
from stack.model.moe import AUX_TERMS, MoE

PROBE_TOKENS = 64


def configured_coefficients(config: ModelConfig) -> dict[str, float]:
    """Each auxiliary term's coefficient as the config names it (GATE-ARCH-001's statement), read
    here rather than from the model, whose `aux_losses` pairs terms and coefficients itself."""
    return {"load_balance": config.moe_balance_coef, "router_z": config.moe_z_coef}


class AuxGradients:
    """What a step's backward hands each auxiliary term, against what it hands the task's loss.

    Hooks on the task's loss and on every MoE layer's term receive ∂L/∂(that tensor), L being what
    the loop back-propagates (scaled by the fp16 loss scaler and divided by grad_accum, both
    factors of every hook alike). For L = task + c·mean over layers of the term, the layers' sum
    over the task's is c: the coefficient the loss actually applied, measured on the graph the
    optimizer's gradients came from, whatever code assembled it. A term that does not require
    a gradient (a frozen router) adds a constant: it has no derivative to measure.
    """

    def __init__(self, device: torch.device, moe: bool) -> None:
        self._sums = torch.zeros(1 + len(AUX_TERMS) if moe else 0, device=device)
        self.watched: set[str] = set()

    def _add(self, index: int) -> Callable[[torch.Tensor], None]:
        def add(gradient: torch.Tensor) -> None:
            self._sums[index] += gradient.detach().float()

        return add

    def watch(self, task_loss: torch.Tensor, model: nn.Module) -> None:
        """Hook one micro-batch's task loss and its MoE terms, before its backward."""
        task_loss.register_hook(self._add(0))
        for index, name in enumerate(AUX_TERMS, start=1):
            for module in model.modules():
                term = module.aux.get(name) if isinstance(module, MoE) else None
                if term is not None and term.requires_grad:
                    term.register_hook(self._add(index))
                    self.watched.add(name)

    def sums(self) -> torch.Tensor:
        """The gradients received, summed over micro-batches: the task's, then each term's."""
        return self._sums

    def derivatives(self, sums: list[float]) -> dict[str, float | None]:
        """Each term's gradient over the task loss's (`sums` read back from `sums()`); None for a
        term with nothing to differentiate."""
        task = sums[0]
        return {
            name: (sums[i] / task if task else float("inf")) if name in self.watched else None
            for i, name in enumerate(AUX_TERMS, start=1)
        }


def defined_terms(moes: Iterable[MoE]) -> torch.Tensor:
    """Each auxiliary term as its definition gives it (stack.model.moe's docstring), recomputed from
    the router logits each MoE layer's last forward produced, and averaged over the layers as the
    model averages its own: load balancing and then the z-loss (AUX_TERMS' order).

    Written apart from MoE.forward on purpose, from the logits alone: a forward that computes a
    term otherwise (the mean of the chosen probabilities for P_e, assignments counted per token,
    the z-loss unsquared) reports a value the training loss adds up faithfully, so only this
    second derivation from the router's own output shows that the term is not the one defined.
    """
    per_layer = []
    for moe in moes:
        assert moe.router_logits is not None, "a MoE layer is judged after its forward"
        logits = moe.router_logits.float()
        if not logits.shape[0]:  # no token reached it: both terms 0 by definition (stack.model.moe)
            per_layer.append(logits.new_zeros(len(AUX_TERMS)))
            continue
        probs = logits.softmax(dim=-1)
        chosen = probs.topk(moe.top_k, dim=-1).indices
        assignments = torch.nn.functional.one_hot(chosen, moe.n_experts).sum(dim=(0, 1))
        share = assignments.to(probs.dtype) / chosen.numel()
        balance = moe.n_experts * torch.dot(share, probs.mean(dim=0))
        z_loss = logits.logsumexp(dim=-1).square().mean()
        per_layer.append(torch.stack([balance, z_loss]))
    return torch.stack(per_layer).mean(dim=0)


def aux_terms(
    config: ModelConfig, values: list[float], derivatives: dict[str, float | None], defined: list[float]
) -> dict[str, dict[str, float | None]]:
    """GATE-ARCH-001's `terms`: each term's configured coefficient, its value (the step's mean), the
    derivative the back-propagated loss took of it, and its value as defined (`defined_terms`)."""
    coefficients = configured_coefficients(config)
    return {
        name: {
            "coefficient": coefficients[name],
            "value": value,
            "defined": by_definition,
            "derivative": derivatives[name],
        }
        for name, value, by_definition in zip(AUX_TERMS, values, defined, strict=True)
    }


@gate_require(
    "GATE-ARCH-001",
    lambda objective, ce, terms, step: measure(
        "GATE-ARCH-001",
        {"objective": objective, "ce": ce, "terms": terms},
        step=step,
        holds="the auxiliary losses are in the training loss",
    ),
)
def check_aux_in_loss(
    objective: float, ce: float, terms: dict[str, dict[str, float | None]], step: int
) -> None:
    """The loss the step back-propagated is the cross-entropy plus every weighted auxiliary term,
    each weighted by its configured coefficient, and each term is the one defined.

    `terms` maps each auxiliary loss to {"coefficient", "value", "defined", "derivative"}; the
    values are the step's means over its micro-batches, so the judge can recompute the sum from
    the record, `defined` the same means recomputed from the router logits (`defined_terms`), and
    the derivative is what the backward applied (`AuxGradients`).
    """


class ReceivedTokens:
    """The tokens each MoE layer's forwards were handed while the counter is open, counted by a
    forward pre-hook on the layer, apart from the layer's own assignment counts (`MoE.routed`).

    A window's assignments must add up to these tokens × top_k exactly (GATE-ARCH-002 and -012,
    check total): counts overwritten by each forward instead of accumulated (the last batch of
    sixteen judged as the window), or counts not reset before it, show there, where the routing
    is counted, whatever the shares look like. A model without experts hooks nothing.
    """

    def __init__(self, model: nn.Module) -> None:
        self._layers = {name: m for name, m in model.named_modules() if isinstance(m, MoE)}
        self.tokens = dict.fromkeys(self._layers, 0)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _counter(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def count(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self.tokens[name] += int(inputs[0].shape[:-1].numel())

        return count

    def __enter__(self) -> ReceivedTokens:
        self._handles = [m.register_forward_pre_hook(self._counter(n)) for n, m in self._layers.items()]
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _shares_outcome(routed: dict[str, list[int]], received: dict[str, int], top_k: int, step: int) -> Outcome:
    measured = {"routed": routed, "routed_tokens": received, "top_k": top_k}
    return measure("GATE-ARCH-002", measured, step=step, holds="every expert receives its share of tokens")


@gate_require("GATE-ARCH-002", _shares_outcome)
def check_expert_shares(
    routed: dict[str, list[int]], received: dict[str, int], top_k: int, step: int
) -> None:
    """Each expert's share of the evaluation window's assignments is within the floor and the cap,
    and the window's assignments are every token its layer received × top_k (check total).

    `routed` maps each MoE layer to its per-expert assignment counts, `received` to the tokens its
    forwards were handed in the window (`ReceivedTokens`); the record keeps them, so a WARN says
    which experts starved.
    """


def _collapse_outcome(
    windows: list[dict[str, list[int]]], received: dict[str, int], top_k: int, balance_coef: float, step: int
) -> Outcome:
    measured = {"windows": windows, "routed_tokens": received, "top_k": top_k, "balance_coef": balance_coef}
    return measure("GATE-ARCH-012", measured, step=step, holds="the router has not collapsed")


@gate_require("GATE-ARCH-012", _collapse_outcome)
def check_router_collapse(
    windows: list[dict[str, list[int]]], received: dict[str, int], top_k: int, balance_coef: float, step: int
) -> None:
    """Stop a run whose router collapsed: an expert routed nothing in the latest evaluation window,
    or taking nearly every token (or nearly none) in each of the last windows GATE-ARCH-012 names;
    and one whose latest window's assignments are not every token its layers received × top_k
    (check total: a collapse judged on part of the window is no judgement of it).

    `windows` are the evaluation windows' counts, oldest first, the latest last; `received` the
    tokens each layer was handed in the latest (`ReceivedTokens`); `balance_coef` is the
    load-balancing loss's weight, which the message's fix names.
    """


def routed_counts(model: nn.Module) -> dict[str, list[int]]:
    """Per MoE layer, the assignments each expert received since the counts were last reset."""
    return {name: m.routed.tolist() for name, m in model.named_modules() if isinstance(m, MoE)}


def reset_routed(model: nn.Module) -> None:
    """Reset every MoE layer's assignment counts (the start of an evaluation window)."""
    for module in model.modules():
        if isinstance(module, MoE):
            module.reset_routed()


def _deviation(actual: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    diff = (actual.double() - reference.double()).abs().max().item()
    return {"max_abs_diff": diff, "ref_absmax": reference.double().abs().max().item()}


def _draw(modules: Iterable[nn.Module], generator: torch.Generator) -> None:
    """Each linear weight of `modules` ~ N(0, 1/fan_in): activations, and router logits, of order 1."""
    for module in modules:
        for linear in (m for m in module.modules() if isinstance(m, nn.Linear)):
            nn.init.normal_(linear.weight, std=linear.in_features**-0.5, generator=generator)


def _swiglu(ffn: FeedForward, x: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) · up x) in float64 from the expert's weights alone."""
    gate, up = x @ ffn.gate.weight.double().T, x @ ffn.up.weight.double().T
    return (gate * torch.sigmoid(gate) * up) @ ffn.down.weight.double().T


def reference_mixture(moe: MoE, x: torch.Tensor, top_k: int) -> torch.Tensor:
    """The mixture stack.model.moe's docstring defines, in float64 from `moe`'s weights alone: per
    token, the softmax of the router's logits, its `top_k` experts (the configured number, not the
    module's), their probabilities divided by their sum, and the sum of each chosen expert's SwiGLU
    output times its weight (plus the shared expert's output, when there is one)."""
    tokens = x.reshape(-1, x.shape[-1]).double()
    probs = torch.softmax(tokens @ moe.router.weight.double().T, dim=-1)
    chosen = probs.topk(top_k, dim=-1)
    weights = chosen.values / chosen.values.sum(dim=-1, keepdim=True)
    outputs = torch.stack([_swiglu(expert, tokens) for expert in moe.experts], dim=1)  # (N, E, d)
    picked = outputs[torch.arange(len(tokens))[:, None], chosen.indices]  # (N, k, d)
    out = (weights[..., None] * picked).sum(dim=1)
    if moe.shared is not None:
        out = out + _swiglu(moe.shared, tokens)
    return out.reshape(x.shape)


def shown_mixtures(config: ModelConfig) -> list[ModelConfig]:
    """The mixtures GATE-ARCH-003 writes out: the configured one, and where it cannot show the
    weighting (one expert, or every expert chosen) one of the same width with more experts than
    its top_k ≥ 2, where choosing, weighting and renormalising all act."""
    shown = [config]
    if not config.moe_experts > config.moe_top_k >= 2:
        top_k = max(config.moe_top_k, 2)
        shown.append(
            config.model_copy(update={"moe_top_k": top_k, "moe_experts": max(config.moe_experts, top_k + 1)})
        )
    return shown


def _mixture_name(config: ModelConfig) -> str:
    shared = " + shared" if config.moe_shared_expert else ""
    experts = f"{config.moe_experts} expert{'s' if config.moe_experts != 1 else ''}"
    return f"{experts}, top {config.moe_top_k}{shared}"


def _arch003(result: dict[str, Any]) -> Outcome:
    """A GATE-ARCH-003 verdict of one check's values (the mixtures, or the one-expert probe)."""
    return measure("GATE-ARCH-003", result, holds="the mixture computes its definition")


@gate_ensure("GATE-ARCH-003", lambda result: _arch003({"mixtures": result}))
@torch.no_grad()
def check_defined_mixtures(config: ModelConfig, generator: torch.Generator) -> dict[str, dict[str, float]]:
    """Each mixture of `shown_mixtures`, built by MoE and run in float64, against `reference_mixture`
    of its weights at the top_k its config names (not the module's own): a module that routes to
    another number of experts than configured is off its definition here, before any probe that
    builds a mixture of other settings runs it."""
    mixtures = {}
    for shown in shown_mixtures(config):
        mixture = MoE(shown).double()
        _draw([mixture], generator)
        tokens = torch.randn(2, PROBE_TOKENS, config.d_model, generator=generator, dtype=torch.float64)
        reference = reference_mixture(mixture, tokens, shown.moe_top_k)
        mixtures[_mixture_name(shown)] = _deviation(mixture(tokens), reference)
    return mixtures


@gate_ensure("GATE-ARCH-003", _arch003)
@torch.no_grad()
def check_single_expert(moe: MoE, dense: FeedForward, x: torch.Tensor) -> dict[str, float]:
    """The one-expert, top-1 mixture `moe` (holding `dense`'s weights) against `dense` on `x`."""
    return _deviation(moe(x), dense(x))


def check_mixtures(config: ModelConfig, *, seed: int = 0) -> dict[str, Any]:
    """A one-expert, top-1 mixture computes what the dense feed-forward with its weights computes,
    and each mixture of `shown_mixtures` what `reference_mixture` writes out from its weights.

    With one expert the router gives every token weight exactly 1, so any difference is a routing
    or combining bug (tokens sent to the wrong rows, a scale applied twice), which a many-expert
    model would hide among its other errors; with more experts than the top_k ≥ 2 each token picks,
    the choosing and the weighting act too (weights not renormalised, the wrong experts picked,
    the shared expert left out). The mixtures run in float64, so the router's choices are the
    reference's and only float rounding is left between them. The one-expert probe is drawn first
    and run last: the configured mixtures are judged before it (GATE-ARCH-003), so a module
    that ignores its configured top_k stops the run there rather than crash inside the probe.
    """
    generator = torch.Generator().manual_seed(seed)
    single = config.model_copy(update={"moe_experts": 1, "moe_top_k": 1, "moe_shared_expert": False})
    dense = FeedForward(config)
    _draw([dense], generator)
    moe = MoE(single)
    moe.expert0.load_state_dict(copy.deepcopy(dense.state_dict()))
    x = torch.randn(2, PROBE_TOKENS, config.d_model, generator=generator)
    mixtures = check_defined_mixtures(config, generator)
    return {**check_single_expert(moe, dense, x), "mixtures": mixtures}


def _sha256(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def expert_hashes(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """Per expert (and router, and shared expert): the sha256 of the weights given and of those held.

    The given tensors are cast to the held dtype first, so a bf16 file loaded into an fp32
    model compares what the load produced; an expert whose tensors the state dict lacks has
    `given` None.
    """
    found: dict[str, dict[str, str | None]] = {}
    for name, moe in model.named_modules():
        if not isinstance(moe, MoE):
            continue
        for part, module in moe.named_children():
            prefix = f"{name}.{part}."
            held = dict(module.state_dict(prefix=prefix))
            given = [state_dict.get(key) for key in held]
            found[f"{name}.{part}"] = {
                "given": None
                if any(g is None for g in given)
                else _sha256([g.to(h.dtype) for g, h in zip(given, held.values(), strict=True)]),
                "held": _sha256(list(held.values())),
            }
    return found


@gate_ensure("GATE-ARCH-004", lambda result: result)
def check_expert_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> Outcome:
    """After a load, every expert holds exactly the weights it was given (GATE-ARCH-004)."""
    return measure(
        "GATE-ARCH-004",
        {"experts": expert_hashes(model, state_dict)},
        holds="every expert holds its saved weights",
    )
