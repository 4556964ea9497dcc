"""GATE-TRAIN-005's `drawn` and `context` checks: the coherence monitor's samples are drawn as the
run configures, from the model's logits for the text sampled so far.

The monitor judges what the model says, so its samples must come from the distribution its
settings name: softmax(logits / temperature) over the top_k largest logits. A sampler that drops
the temperature, or the cut, still emits text that scores, and nothing else would notice.

So every draw the monitor makes is replayed. While it generates, a forward hook on the model's
head keeps the last position's logits of each call (what each draw was made from), and the
generator's state is kept from before the first draw. Afterwards a generator started from that
state draws, call for call, `torch.multinomial` of the reference distribution written out here
from the run's settings; a sampler that draws from that distribution draws the same tokens, bit
for bit, and one that draws from another one differs wherever the two distributions order the
generator's draws differently.

How often they do depends on the logits: a young model's are nearly flat, and a temperature
changes little there. So each round also samples, by the very call the monitor samples the model
with (GPT's `generate`, the run's settings), a decoder of spread logits (`SpreadLogits`): rows
from nearly flat, where a top-k cut decides, to peaked, where the temperature does, PROBE_ROWS
rows of PROBE_TOKENS draws over at most PROBE_VOCAB ids, replayed the same way. The monitor's
replay costs a softmax over the vocabulary per sampled token, the probe's 1024 draws a few
hundred thousand elements, at the monitor's cadence only.

The replay takes the logits as given. Whether they are the model's for the text being sampled
(the prompt and every earlier draw, each at its position: what the KV cache stands for) is the
`context` check: one plain forward of each sample, without a cache, must give the head the logits
every draw was made from, within context_logits_rtol of its largest logit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from contracts.gates import gate_require, measure
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.kv_cache import KVCache


def reference_probabilities(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """softmax(logits / temperature) over the top_k largest logits of each row (ties with the k-th
    kept), in float32 as the sampler draws from; temperature > 0."""
    scaled = logits.float() / temperature
    if top_k is not None:
        kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
        scaled = torch.where(scaled >= kth, scaled, torch.full_like(scaled, float("-inf")))
    return torch.softmax(scaled, dim=-1)


@dataclass
class Draws:
    """One generation's draws as the head produced their logits: what `watching_draws` keeps."""

    generator_state: torch.Tensor
    generator_device: torch.device
    logits: list[torch.Tensor] = field(default_factory=list)

    def mismatched(self, drawn: torch.Tensor, temperature: float, top_k: int | None) -> int:
        """How many of `drawn` (B, n), the tokens sampled, a generator replayed from the kept state
        draws otherwise from the reference distribution of the same logits."""
        replay = torch.Generator(device=self.generator_device)
        replay.set_state(self.generator_state)
        differing = torch.zeros((), dtype=torch.int64, device=drawn.device)
        for t, logits in enumerate(self.logits[: drawn.shape[1]]):
            probabilities = reference_probabilities(logits, temperature, top_k)
            expected = torch.multinomial(probabilities, 1, generator=replay)
            differing += (expected != drawn[:, t : t + 1]).sum()
        missing = drawn.shape[1] - min(len(self.logits), drawn.shape[1])  # a draw from no head call
        return int(differing) + missing * drawn.shape[0]

    def context_deviation(self, model: nn.Module, idx: torch.Tensor, drawn: torch.Tensor) -> float:
        """How far the logits each draw was made from are from the logits one plain forward of the
        sampled text gives at the same positions, in units of that forward's largest |logit|.

        Replaying a draw checks the sampler given its logits; this checks that the logits were the
        model's for the text sampled so far (the prompt and every earlier draw, at their positions).
        A decoder that loses its KV cache, restarts its positions or sees another prefix gives the
        head other logits, which sample just as fluently. Both sides are float32 forwards of the
        same weights, so they differ by rounding only; a draw without logits counts as infinitely
        far.
        """
        n = drawn.shape[1]
        if n == 0:
            return 0.0
        if len(self.logits) < n:
            return math.inf
        text = torch.cat((idx, drawn), dim=1)[:, :-1]
        plain, _ = model(text)
        start = idx.shape[1] - 1
        expected = plain[:, start : start + n].float()
        kept = torch.stack(self.logits[:n], dim=1).float()
        scale = expected.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
        return float((kept - expected).abs().max() / scale)


@contextmanager
def watching_draws(model: nn.Module, generator: torch.Generator) -> Iterator[Draws]:
    """For the block: `generator`'s state now, and the last position's logits of every call of
    `model.lm_head` (each decoding call makes one, and each draw reads the latest)."""
    draws = Draws(generator.get_state(), generator.device)

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        draws.logits.append(output[:, -1].detach())

    handle = model.lm_head.register_forward_hook(keep)
    try:
        yield draws
    finally:
        handle.remove()


# The spread probe: rows of logits, and draws from each (one prefill, then decoding steps).
PROBE_ROWS = 256
PROBE_TOKENS = 4
# The rows' logits are N(0, 1) times scales spaced evenly in log from nearly flat to peaked.
PROBE_SCALES = (0.01, 4.0)
# Ids per row: the model's vocabulary up to this many, and always more than twice the top-k cut, so
# the cut decides on the flat rows; a wider row would cost a 50 k vocabulary's softmax for nothing.
PROBE_VOCAB = 1024


def probe_width(vocab: int, top_k: int | None) -> int:
    """The spread rows' ids: the model's `vocab`, at most PROBE_VOCAB or twice top_k and one more."""
    return min(vocab, max(PROBE_VOCAB, 2 * (top_k or 0) + 1))


class SpreadLogits(nn.Module):
    """A decoder whose every call gives fresh logits N(0, scale²) per row, the rows' scales from
    PROBE_SCALES' flat end to its peaked one. They leave through `lm_head` (an identity), where
    `watching_draws` reads a model's logits, and it samples by GPT's own `generate`, so the monitor
    can draw from it by the very call it draws from the model with."""

    def __init__(self, vocab: int, device: torch.device, seed: int) -> None:
        """`vocab` ids per row (`probe_width`), the logits drawn on `device` from `seed`."""
        super().__init__()
        self.config = ModelConfig(
            vocab=vocab, d_model=2, n_layers=1, n_heads=1, n_kv_heads=1, ffn_hidden=2, ctx=PROBE_TOKENS + 1
        )
        self.embed = nn.Embedding(1, 1, device=device)  # its dtype is the (unused) cache's
        self.lm_head = nn.Identity()
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.scales = torch.logspace(*(math.log10(s) for s in PROBE_SCALES), PROBE_ROWS, device=device)
        self.prompt = torch.zeros(PROBE_ROWS, 1, dtype=torch.long, device=device)

    def forward(self, idx: torch.Tensor, *, cache: KVCache) -> tuple[torch.Tensor, None]:
        noise = torch.randn(
            (*idx.shape, self.config.vocab), generator=self.generator, device=self.scales.device
        )
        return self.lm_head(noise * self.scales[: idx.shape[0], None, None]), None

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """GPT.generate, looked up when called: the method the monitor samples the model by."""
        return GPT.generate(self, *args, **kwargs)


@dataclass
class DrawTally:
    """A sampling round's draws against their replays: the monitor's samples (`draws`) and the
    spread probe's (`probe_draws`), with the settings they were replayed under."""

    temperature: float
    top_k: int | None
    draws: int = 0
    mismatched_draws: int = 0
    probe_draws: int = 0
    mismatched_probe_draws: int = 0
    context_logits_deviation: float = 0.0

    def add(self, draws: Draws, drawn: torch.Tensor, model: nn.Module, idx: torch.Tensor) -> None:
        """One generation of the monitor from `model` after the prompt `idx`: its sampled tokens (B,
        n) against their replay, and the logits they were drawn from against a plain forward."""
        self.draws += drawn.numel()
        self.mismatched_draws += draws.mismatched(drawn, self.temperature, self.top_k)
        deviation = draws.context_deviation(model, idx, drawn)
        self.context_logits_deviation = max(self.context_logits_deviation, deviation)

    def add_probe(self, draws: Draws, drawn: torch.Tensor) -> None:
        """The spread probe's sampled tokens (B, n) against their replay."""
        self.probe_draws += drawn.numel()
        self.mismatched_probe_draws += draws.mismatched(drawn, self.temperature, self.top_k)

    def measured(self) -> dict[str, Any]:
        """GATE-TRAIN-005's `drawn` values."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "draws": self.draws,
            "mismatched_draws": self.mismatched_draws,
            "probe_draws": self.probe_draws,
            "mismatched_probe_draws": self.mismatched_probe_draws,
            "context_logits_deviation": self.context_logits_deviation,
        }


@gate_require(
    "GATE-TRAIN-005",
    lambda tally, step: measure(
        "GATE-TRAIN-005", tally.measured(), step=step, holds="the samples are drawn as configured"
    ),
)
def check_drawn(tally: DrawTally, step: int) -> None:
    """Refuse to score samples that were not drawn from the distribution the run configures."""
