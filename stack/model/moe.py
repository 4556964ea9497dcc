"""The mixture-of-experts feed-forward: a router picks top-k SwiGLU experts per token.

Module names are the trace vocabulary, as in layers.py: `moe.router` (its output is the router
logits), `moe.expert0` … `moe.expert{E-1}` (each sees exactly the tokens routed to it, as its
input, and returns what it computed for them) and `moe.shared`, the optional expert every token
passes through. A bisection can therefore name `layers.2.moe.expert3`.

Routing is the renormalised top-k of a softmax (Mixtral's): the probabilities of the k chosen
experts are divided by their sum, so each token's expert weights add to one. There is no
capacity factor: every token reaches all k of its experts, none is dropped.

Two auxiliary losses come out of every forward, kept on the module for the training loop:

* load balancing, Switch Transformer's convention: `E · Σ_e f_e · P_e`, where `f_e` is the
  fraction of the step's token-to-expert assignments that went to expert e and `P_e` the mean
  router probability of e. It is 1.0 when routing is uniform; a router collapsed onto the same
  k experts for every token gives E/k (each token's k assignments go to k different experts, so
  no f_e exceeds 1/k): E only for top-1.
* router z-loss (ST-MoE): the mean over tokens of `logsumexp(router logits)²`, which keeps the
  logits small enough for the softmax to stay precise in low precision.

A mixture no token reaches (inside a depth-routed block that routed none of a batch's tokens: its
capacity of a short sequence, or none above its threshold) has nothing to balance: both terms
are 0 there, not the NaN of a mean over no tokens, which would make the whole loss NaN.
"""

from __future__ import annotations

import torch
from torch import nn

from stack.model.config import ModelConfig
from stack.model.feedforward import FeedForward

# Names of the auxiliary losses, in the order the metrics line lists them.
AUX_TERMS = ("load_balance", "router_z")


class MoE(nn.Module):
    """Routed SwiGLU experts (plus an optional shared one) in place of the dense feed-forward."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_experts, self.top_k = config.moe_experts, config.moe_top_k
        self.router = nn.Linear(config.d_model, self.n_experts, bias=False)
        for e in range(self.n_experts):
            self.add_module(f"expert{e}", FeedForward(config))
        self.shared = FeedForward(config) if config.moe_shared_expert else None
        # Filled by every forward: the auxiliary losses (with their graph), the router logits they
        # came from (detached: GATE-ARCH-001 recomputes the terms from them by their definitions)
        # and the per-expert assignment counts, which the training loop reads for the routing-balance gate.
        self.aux: dict[str, torch.Tensor] = {}
        self.router_logits: torch.Tensor | None = None
        self.routed = torch.zeros(self.n_experts, dtype=torch.long)

    @property
    def experts(self) -> tuple[FeedForward, ...]:
        """The routed experts, in index order."""
        return tuple(getattr(self, f"expert{e}") for e in range(self.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits = self.router(tokens)
        probs = torch.softmax(logits.float(), dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = top_p / top_p.sum(-1, keepdim=True)
        out = torch.zeros_like(tokens)
        made = tokens.dtype  # the dtype a dense FeedForward returns here: its last projection's
        for e, expert in enumerate(self.experts):
            # Every expert runs, on zero rows if none chose it, so each always has a gradient
            # (data-parallel training needs every parameter used in every step).
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            y = expert(tokens[rows])
            made = y.dtype
            # Under autocast y is bf16/fp16 while the residual stream stays fp32: the experts'
            # weighted outputs are summed in out's (fp32) dtype.
            out = out.index_add(0, rows, (y * weights[rows, slot, None].to(y.dtype)).to(out.dtype))
        if self.shared is not None:
            out = out + self.shared(tokens)
        # A mixture stands in for the dense feed-forward, so it returns what that returns: under
        # autocast the autocast dtype, not the fp32 of its sum. A mixture-of-depths block writes
        # the feed-forward's output into a tensor of that dtype, and index_put refuses another.
        out = out.to(made)
        counts = torch.bincount(top_i.flatten(), minlength=self.n_experts)
        if tokens.shape[0]:
            fraction = counts.to(probs.dtype) / top_i.numel()
            self.aux = {
                "load_balance": self.n_experts * (fraction * probs.mean(0)).sum(),
                "router_z": torch.logsumexp(logits.float(), dim=-1).pow(2).mean(),
            }
        else:  # no token reached the mixture: zero, on the router's graph (a mean of none is NaN)
            self.aux = {name: logits.float().sum() for name in AUX_TERMS}  # a node each
        self.router_logits = logits.detach()
        self.routed = self.routed.to(counts.device) + counts.detach()
        return out.reshape(shape)

    def reset_routed(self) -> None:
        """Start counting assignments afresh (the loop does so before each evaluation window)."""
        self.routed = torch.zeros_like(self.routed)


def feed_forwards(module: nn.Module) -> tuple[FeedForward, ...]:
    """The SwiGLU feed-forwards inside a block's feed-forward: itself, or every expert of a MoE."""
    if isinstance(module, MoE):
        return module.experts + ((module.shared,) if module.shared is not None else ())
    assert isinstance(module, FeedForward)
    return (module,)


def routers(module: nn.Module) -> tuple[nn.Linear, ...]:
    """The router of a MoE feed-forward; none for a dense one."""
    return (module.router,) if isinstance(module, MoE) else ()


def weighted_aux(terms: dict[str, tuple[float, torch.Tensor]]) -> torch.Tensor | float:
    """Σ coefficient · value over the terms whose coefficient is > 0: what the training loss adds."""
    return sum((coef * value for coef, value in terms.values() if coef > 0), 0.0)
