"""Mixture-of-depths blocks (Raposo et al. 2024): a router picks the tokens a block computes.

With `mod_every = n`, blocks n−1, 2n−1, … (every other block for n = 2) are `DepthRoutedBlock`s.
The router (`router`, a d_model → 1 linear; its output is the trace site) scores each token; a
routed token leaves the block as

    x + w · (a + f),   a = attn(attn_norm(x)),  f = ffn(ffn_norm(x + a)),  w = sigmoid(score),

which is the ordinary block's x + a + f with both residual branches scaled by w, the product
through which the router receives its gradient (top-k itself has none). Every other token leaves
the block bit for bit as it came in. Routed tokens attend only to routed tokens.

Training and inference route differently, because top-k over a sequence reads the future:

* training (module in train mode, no KV cache): the top ⌊C·T⌋ scores of each sequence, C =
  mod_capacity; only those tokens are gathered, keep their positions (RoPE angles and order)
  and run through the block, so the block costs C of the dense one;
* inference (eval mode, or any forward with a KV cache: evaluation, sampling, export checks):
  a token is routed when its score exceeds `route_threshold`, a buffer that every training
  forward sets to a score that splits that batch's tokens, all sequences pooled, into the top
  ⌊C·N⌋ and the rest (halfway between its (⌊C·N⌋ + 1)-th largest score and the next one up,
  `split_score`, so no token sits on it). The decision reads the token alone, so it is causal,
  and the same in a batch as in one decoding step (GATE-TRAIN-005 compares the two); every token
  then runs through attention with the unrouted keys masked (`key_mask`) and only routed tokens
  keep the result. This is the paper's documented alternative to an auxiliary predictor: it adds
  no loss term, and the routed fraction at inference approximates C rather than equalling it.

The threshold is taken from the last training batch alone, not a moving average: the router's
scores drift as it trains, and an average over past batches lags them (with momentum 0.9 a
demo-size model routed about 1.7 C of held-out tokens). What remains is one step of drift and
one batch's sampling error; GATE-ARCH-014 measures the routed fraction on the held-out batches of
every evaluation (`inference_counts`) against C.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from stack.model.config import ModelConfig
from stack.model.kv_cache import LayerCache
from stack.model.layers import Attention, Block

# The buffer of a routed block's inference threshold (saved with the weights, no parameter).
THRESHOLD = "route_threshold"


def capacity_tokens(capacity: float, length: int) -> int:
    """⌊C·T⌋: how many of a sequence's T tokens a routed block computes in training."""
    return math.floor(capacity * length)


def split_score(scores: torch.Tensor, capacity: float) -> torch.Tensor:
    """A score that exactly ⌊C·N⌋ of the N `scores` exceed (ties aside; −∞ when ⌊C·N⌋ = N): the
    midpoint between the (⌊C·N⌋ + 1)-th largest score s and the smallest score above s.

    Not s itself: a token's score at a routed first block is its embedding's alone, so every later
    occurrence of the token that scored s would sit on the threshold, and one forward's rounding
    (a batch, a single decoding step) would route it while another's would not. Halfway to the
    next score up, every occurrence of a token lies a whole half-gap from it. Where the two scores
    are adjacent floats and the midpoint rounds onto one of them, s is kept: exactly ⌊C·N⌋ still
    exceed it. A token tied with s stays below, as it would with s.
    """
    flat = scores.detach().reshape(-1)
    k = capacity_tokens(capacity, flat.numel())
    if k == flat.numel():
        return flat.new_tensor(float("-inf"))
    split = flat.topk(k + 1).values[k]
    above = flat[flat > split]
    if above.numel() == 0:
        return split
    middle = (split + above.min()) / 2
    return middle if bool(split < middle < above.min()) else split


class DepthRoutedBlock(Block):
    """A pre-norm block that computes only the tokens its router picks (module docstring)."""

    def __init__(self, config: ModelConfig, attn: Attention | None = None) -> None:
        super().__init__(config, attn)
        self.capacity = config.mod_capacity
        self.router = nn.Linear(config.d_model, 1, bias=False)
        self.register_buffer(THRESHOLD, torch.zeros(()))
        # Which tokens the last forward routed, (B, T) bool: what the capacity and skip gates read.
        self.routed = torch.zeros(0, 0, dtype=torch.bool)
        # (routed, seen) tokens of the inference forwards since the last reset: GATE-ARCH-014's counts.
        self.inference_counts = torch.zeros(2, dtype=torch.long)
        # The scores of the training batch that last set the threshold: what GATE-ARCH-008 holds it to.
        self.split_scores: torch.Tensor | None = None
        self.causal = False  # route by the threshold in training mode too (`causal_routing`)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        docs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        scores = self.router(x).squeeze(-1)
        if self.training and cache is None and not self.causal:
            return self._forward_top_k(x, scores, cos, sin, docs)
        return self._forward_causal(x, scores, cos, sin, cache, start, docs)

    def select(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """(B, k) positions of each sequence's k largest scores, in position order (causality)."""
        return scores.topk(k, dim=-1).indices.sort(dim=-1).values

    def weight(self, scores: torch.Tensor) -> torch.Tensor:
        """The router weight w = sigmoid(score) that scales a routed token's residual branches."""
        return torch.sigmoid(scores)

    def merge(self, x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x with the routed rows (B, k, d) replaced by y: the rest stay x, bit for bit."""
        return x.scatter(1, rows, y)

    def _branches(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None,
        start: int,
        docs: torch.Tensor | None,
        key_mask: torch.Tensor | None = None,
        computed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """a + f of the module docstring; with `computed` (B, T) the ffn runs on those tokens only."""
        a = self.attn(self.attn_norm(x), cos, sin, cache, start, docs, key_mask)
        h = x + a
        if computed is None or torch.compiler.is_exporting():
            # An exported graph has no data-dependent shapes: the feed-forward runs on every token
            # and `_forward_causal` keeps only the routed rows, the same numbers per routed token.
            return a + self.feed_forward(self.ffn_norm(h))
        y = self.feed_forward(self.ffn_norm(h[computed]))
        # In the feed-forward's own dtype (under autocast it need not be attention's): the rows it
        # did not compute are zeros of that dtype, and the sum promotes as the dense block's does.
        f = y.new_zeros(a.shape)
        f[computed] = y
        return a + f

    def _forward_top_k(
        self,
        x: torch.Tensor,
        scores: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        docs: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, length, width = x.shape
        k = capacity_tokens(self.capacity, length)
        idx = self.select(scores, k)
        self.routed = torch.zeros(batch, length, dtype=torch.bool, device=x.device).scatter(1, idx, True)
        if k == 0:  # the feed-forward still reports this forward, on no token (a mixture's terms 0)
            self.feed_forward(x.new_zeros(0, width))
            return x
        self.split_scores = scores.detach()
        with torch.no_grad():  # the inference threshold of the weights that scored this batch
            self.route_threshold.copy_(split_score(scores, self.capacity))
        rows = idx[..., None].expand(-1, -1, width)
        chosen = x.gather(1, rows)
        # The chosen tokens keep their positions: RoPE angles (B, 1, k, D/2) and document ids gathered.
        cos_k, sin_k = cos[idx].unsqueeze(1), sin[idx].unsqueeze(1)
        docs_k = docs.gather(1, idx) if docs is not None else None
        branches = self._branches(chosen, cos_k, sin_k, None, 0, docs_k)
        w = self.weight(scores.gather(1, idx))[..., None].to(branches.dtype)
        return self.merge(x, rows, chosen + w * branches)

    def _forward_causal(
        self,
        x: torch.Tensor,
        scores: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache | None,
        start: int,
        docs: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        routed = scores > self.route_threshold.to(scores.dtype)
        self.routed = routed
        counted = torch.stack([routed.sum(), torch.tensor(routed.numel(), device=routed.device)])
        self.inference_counts = self.inference_counts.to(routed.device) + counted
        keys = routed
        if cache is not None:  # earlier tokens' routing, for the keys they left in the cache
            if cache.routed is None:
                cache.routed = torch.zeros(batch, cache.k.shape[2], dtype=torch.bool, device=x.device)
            cache.routed[:, start : start + length] = routed
            keys = cache.routed[:, : start + length]
        positions = torch.arange(keys.shape[1], device=x.device)
        own = positions[None, :] == (start + torch.arange(length, device=x.device))[:, None]
        # Every query sees the routed keys and itself, so no row is empty; unrouted rows are dropped.
        key_mask = keys[:, None, :] | own
        branches = self._branches(x, cos, sin, cache, start, docs, key_mask, computed=routed)
        w = self.weight(scores)[..., None].to(branches.dtype)
        return torch.where(routed[..., None], x + w * branches, x)

    def reset_counts(self) -> None:
        """Start counting inference routing afresh (the loop does so before each evaluation)."""
        self.inference_counts = torch.zeros_like(self.inference_counts)


def depth_routed_blocks(model: nn.Module) -> list[tuple[str, DepthRoutedBlock]]:
    """(name, block) of every mixture-of-depths block of `model`, in layer order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, DepthRoutedBlock)]


@contextlib.contextmanager
def causal_routing(model: nn.Module) -> Iterator[None]:
    """Every mixture-of-depths block of `model` routes each token by its threshold alone for the
    duration, in training mode too (the threshold is then read, never set).

    For scores of whole sequences that must not depend on what else a row holds: top-k routing
    gives a preference row's tokens a share of ⌊C·T⌋ that its padding and its other completion
    change, so DPO scores policy and reference this way, as the model generates.
    """
    blocks = [block for _, block in depth_routed_blocks(model)]
    for block in blocks:
        block.causal = True
    try:
        yield
    finally:
        for block in blocks:
            block.causal = False
