"""GATE-TRAIN-005's `drawn` and `context` checks: samples are drawn as their settings name, from
the model's logits for the text sampled so far. The training monitor's samples are held to them
(monitor.temperature, monitor.top_k), and so are `stack sample`'s (its temperature, top-k, top-p
and repetition penalty, past the model's context included).

A monitor judges what the model says, and a user reads what `stack sample` prints, so the samples
must come from the distribution the settings name (`Sampler`, written out here apart from
stack.model.generate): the repetition penalty on the logits of tokens already in the context,
the temperature (0: the largest logit), the top_k largest, then the most likely tokens whose
probability reaches top_p, in that order. A sampler that drops the temperature, cuts before it
scales, or penalises the wrong way still emits text that reads, and nothing else would notice.

So every draw is replayed. While the model generates, a forward hook on its head keeps the last
position's logits of each call (what each draw was made from), and the generator's state is kept
from before the first draw. Afterwards a generator started from that state draws, call for call,
`torch.multinomial` of the distribution `Sampler` writes out from the same logits and the same
context; a sampler that draws from that distribution draws the same tokens, bit for bit, and one
that draws from another one differs wherever the two distributions order the generator's draws
differently.

How often they do depends on the logits: a young model's are nearly flat, and a temperature
changes little there. So each round also samples, by the very call the model is sampled with
(GPT's `generate`, the same settings), a decoder of spread logits (`SpreadLogits`): rows from
nearly flat, where a top-k cut decides, to peaked, where the temperature and top-p do, PROBE_ROWS
rows of PROBE_TOKENS draws over at most PROBE_VOCAB ids, replayed the same way. The replay costs
a softmax over the vocabulary per sampled token, the probe's 1024 draws a few hundred thousand
elements, once per sampling.

The replay takes the logits as given. Whether they are the model's for the text being sampled
is the `context` check: a draw's context is the prompt and every earlier draw, each at its
position (what the KV cache stands for), and past the model's context the window
`context_windows` writes out (a prompt that fills the context is read from its newest half; once
the text fills it, its newest half is the prompt of the next chunk). One plain forward of each
window, without a cache, must give the head the logits every draw of it was made from, within
context_logits_rtol of its largest logit.

The replay starts from the state the generator held before the first draw, whatever it was: a
generator seeded with another seed than the one stated replays just as well. So a tally that
states the seed its draws were to start from (`stack sample`'s --seed, the monitor's seed of the
round, contracts.seeds.monitor_seed) holds that kept state, by sha256, to the state a generator
freshly seeded with it holds (contracts.seeds.seeded_state_sha256): the `seeded` check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from contracts.gates import Outcome, gate_require, measure
from contracts.seeds import seeded_state_sha256, state_sha256
from stack.model.checks import relative_deviation
from stack.model.config import ModelConfig
from stack.model.generate import NothingToDraw, generate_long
from stack.model.gpt import GPT
from stack.model.kv_cache import KVCache


@dataclass(frozen=True)
class Sampler:
    """What a sampler is to draw from, given the logits of the last position and the tokens of the
    context so far: CTRL's repetition penalty (a seen token's logit divided by it when positive,
    multiplied when not), the temperature (0 draws nothing: the largest logit), the top_k largest
    logits (ties with the k-th kept), then the tokens at least as likely as the least likely of
    the fewest most likely ones whose probability reaches top_p."""

    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def scaled(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The logits (B, vocab) in float32 after the penalty and the temperature (if not greedy)."""
        scaled = logits.float()
        if self.repetition_penalty != 1.0:
            repeated = torch.zeros_like(scaled, dtype=torch.bool).scatter(1, seen, True)
            penalised = torch.where(
                scaled > 0, scaled / self.repetition_penalty, scaled * self.repetition_penalty
            )
            scaled = torch.where(repeated, penalised, scaled)
        return scaled if self.temperature == 0 else scaled / self.temperature

    def probabilities(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The distribution (B, vocab) a draw is made from, in float32 as drawn; temperature > 0."""
        scaled = self.scaled(logits, seen)
        if self.top_k is not None:
            kth = scaled.topk(min(self.top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
            scaled = torch.where(scaled >= kth, scaled, torch.full_like(scaled, float("-inf")))
        if self.top_p is not None:
            probs = torch.softmax(scaled, dim=-1)
            ordered = probs.sort(dim=-1, descending=True).values
            needed = ordered.cumsum(dim=-1) - ordered < self.top_p  # the mass before each is short of p
            least = torch.where(needed, ordered, torch.full_like(ordered, math.inf)).min(dim=-1, keepdim=True)
            scaled = torch.where(probs >= least.values, scaled, torch.full_like(scaled, float("-inf")))
        return torch.softmax(scaled, dim=-1)

    def draw(self, logits: torch.Tensor, seen: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The token (B, 1) the settings draw from `logits` after `seen`, with `generator`."""
        if self.temperature == 0:
            return self.scaled(logits, seen).argmax(dim=-1, keepdim=True)
        return torch.multinomial(self.probabilities(logits, seen), 1, generator=generator)

    def settings(self) -> dict[str, Any]:
        """The settings by the names generation takes them and GATE-TRAIN-005's record holds them."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass(frozen=True)
class Window:
    """One chunk of a generation: the draws text[first : first + count], each made after the text
    from `start` up to it."""

    start: int
    first: int
    count: int


def context_windows(prompt: int, tokens: int, ctx: int) -> list[Window]:
    """The windows `tokens` draws after a prompt of `prompt` tokens are made in, for a model of
    context `ctx`, as `stack sample` documents them: a chunk reads the whole text while it is
    shorter than the context, else its newest ctx // 2 tokens, and draws until its window fills
    the context (a generation within the context is one window from the start)."""
    windows, length = [], prompt
    while length < prompt + tokens:
        start = 0 if length < ctx else length - ctx // 2
        count = min(prompt + tokens - length, ctx - (length - start))
        windows.append(Window(start, length, count))
        length += count
    return windows


@dataclass
class Draws:
    """One generation's draws as the head produced their logits: what `watching_draws` keeps."""

    generator_state: torch.Tensor
    generator_device: torch.device
    logits: list[torch.Tensor] = field(default_factory=list)
    # Draws asked for and never made: the sampler kept no token to draw from (NothingToDraw)
    undrawn: int = 0

    def mismatched(self, text: torch.Tensor, windows: list[Window], sampler: Sampler) -> int:
        """How many draws of `text` (B, prompt + n: the prompt and the tokens sampled, in `windows`)
        a generator replayed from the kept state draws otherwise from `sampler`'s distribution of the
        same logits after the same context; a draw the head made no logits for counts as differing."""
        replay = torch.Generator(device=self.generator_device)
        replay.set_state(self.generator_state)
        differing = torch.zeros((), dtype=torch.int64, device=text.device)
        missing = 0
        for window in windows:
            for t in range(window.first, window.first + window.count):
                index = t - windows[0].first
                if index >= len(self.logits):
                    missing += text.shape[0]
                    continue
                expected = sampler.draw(self.logits[index], text[:, window.start : t], replay)
                differing += (expected != text[:, t : t + 1]).sum()
        return int(differing) + missing

    def context_deviation(self, model: nn.Module, text: torch.Tensor, windows: list[Window]) -> float:
        """How far the logits each draw was made from are from the logits one plain forward of its
        window of the sampled text gives at the same position, in units of that forward's largest
        |logit| (the worst window's).

        Replaying a draw checks the sampler given its logits; this checks that the logits were the
        model's for the text sampled so far (the prompt and every earlier draw, at their positions,
        within the window the context leaves). A decoder that loses its KV cache, restarts its
        positions or keeps another part of the text gives the head other logits, which sample just
        as fluently. Both sides are forwards of the same weights, so they differ by rounding only;
        a draw without logits counts as infinitely far.
        """
        drawn = sum(window.count for window in windows)
        if drawn == 0:
            return 0.0
        if len(self.logits) < drawn:
            return math.inf
        worst, index = 0.0, 0
        for window in windows:
            plain, _ = model(text[:, window.start : window.first + window.count - 1])
            start = window.first - window.start - 1
            expected = plain[:, start : start + window.count].float()
            kept = torch.stack(self.logits[index : index + window.count], dim=1).float()
            worst = max(worst, relative_deviation(kept, expected))
            index += window.count
        return worst


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


@contextmanager
def counting_undrawn(draws: Draws, asked: int) -> Iterator[None]:
    """For a generation of `asked` draws: a sampler that stops with nothing to draw from leaves
    them all in `draws.undrawn`, for GATE-TRAIN-005 to count as not drawn as configured, instead
    of an internal error that names no setting."""
    try:
        yield
    except NothingToDraw:
        draws.undrawn = asked


def sample_watched(
    model: nn.Module, idx: torch.Tensor, tokens: int, sampler: Sampler, generator: torch.Generator
) -> tuple[Draws, torch.Tensor | None]:
    """`tokens` tokens after each row of `idx`, sampled by the model's own `generate` with
    `sampler`'s settings, (B, tokens), and what each draw was made from; None for the tokens when
    the sampler had nothing to draw from (`Draws.undrawn`)."""
    out = None
    with watching_draws(model, generator) as draws, counting_undrawn(draws, idx.shape[0] * tokens):
        out = model.generate(idx, tokens, **sampler.settings(), generator=generator)
    return draws, None if out is None else out[:, idx.shape[1] :]


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
    """A sampling round's draws against their replays under the settings they were to be drawn
    with: the model's samples (`draws`) and the spread probe's (`probe_draws`); and, where the round
    states the `seed` its draws start from, the generator state its first generation started from."""

    sampler: Sampler
    seed: int | None = None
    first: Draws | None = None
    draws: int = 0
    mismatched_draws: int = 0
    probe_draws: int = 0
    mismatched_probe_draws: int = 0
    context_logits_deviation: float = 0.0
    # The ids each generation drew, a row per sample: what the texts the monitor scores must decode
    sampled: list[list[int]] = field(default_factory=list)

    def add_undrawn(self, draws: Draws) -> bool:
        """Count a generation that stopped with nothing to draw from: every draw it was asked for
        differs from the replay, which always has a token to draw. True when it stopped so."""
        self.draws += draws.undrawn
        self.mismatched_draws += draws.undrawn
        return draws.undrawn > 0

    def add(self, draws: Draws, drawn: torch.Tensor | None, model: nn.Module, idx: torch.Tensor) -> None:
        """One generation from `model` after the prompt `idx`: its sampled tokens (B, n) against their
        replay, and the logits they were drawn from against a plain forward of each window."""
        if self.first is None:
            self.first = draws
        if self.add_undrawn(draws) or drawn is None:
            return
        self.sampled += drawn.tolist()
        text = torch.cat((idx, drawn), dim=1)
        windows = context_windows(idx.shape[1], drawn.shape[1], model.config.ctx)
        self.draws += drawn.numel()
        self.mismatched_draws += draws.mismatched(text, windows, self.sampler)
        deviation = draws.context_deviation(model, text, windows)
        self.context_logits_deviation = max(self.context_logits_deviation, deviation)

    def add_probe(self, draws: Draws, prompt: torch.Tensor, drawn: torch.Tensor | None) -> None:
        """The spread probe's sampled tokens (B, n) after `prompt` against their replay."""
        if draws.undrawn or drawn is None:
            self.probe_draws += draws.undrawn
            self.mismatched_probe_draws += draws.undrawn
            return
        self.probe_draws += drawn.numel()
        windows = context_windows(prompt.shape[1], drawn.shape[1], prompt.shape[1] + drawn.shape[1])
        self.mismatched_probe_draws += draws.mismatched(
            torch.cat((prompt, drawn), dim=1), windows, self.sampler
        )

    def measured(self) -> dict[str, Any]:
        """GATE-TRAIN-005's `drawn` and `context` values, with every setting the draws were replayed
        under, and with a stated seed the `seeded` values."""
        return {
            **self.sampler.settings(),
            "draws": self.draws,
            "mismatched_draws": self.mismatched_draws,
            "probe_draws": self.probe_draws,
            "mismatched_probe_draws": self.mismatched_probe_draws,
            "context_logits_deviation": self.context_logits_deviation,
            **(self.seeded() if self.seed is not None else {}),
        }

    def seeded(self) -> dict[str, Any]:
        """The `seeded` check's values: the seed stated, the device of the generator the first
        generation drew with, the sha256 of the state it started from, and that of a generator of
        that device freshly seeded with the seed (contracts.seeds)."""
        assert self.seed is not None
        device = None if self.first is None else self.first.generator_device.type
        return {
            "seed": self.seed,
            "generator_device": device,
            "generator_state_sha256": None
            if self.first is None
            else state_sha256(self.first.generator_state),
            "seeded_state_sha256": None if device is None else seeded_state_sha256(self.seed, device),
        }


def _drawn_outcome(tally: DrawTally, step: int | None) -> Outcome:
    return measure("GATE-TRAIN-005", tally.measured(), step=step, holds="the samples are drawn as configured")


@gate_require("GATE-TRAIN-005", _drawn_outcome)
def check_drawn(tally: DrawTally, step: int | None) -> None:
    """Refuse samples that were not drawn from the distribution their settings name, or not from
    the model's logits for the text sampled so far (`step` None: `stack sample`'s)."""


def prompt_outcome(expected: list[int], continued: list[int]) -> Outcome:
    """GATE-TRAIN-005's prompt check of `stack sample`: the ids the generation continued (what it
    returns before the tokens it drew) against the prompt the record names, encoded by the
    checkpoint's tokenizer (`expected`)."""
    differing = sum(a != b for a, b in zip(expected, continued, strict=False))
    measured = {
        "prompt_tokens": len(expected),
        "prompt_tokens_differing": differing + abs(len(expected) - len(continued)),
    }
    return measure("GATE-TRAIN-005", measured, holds="the generation continued the prompt given")


@gate_require("GATE-TRAIN-005", prompt_outcome)
def check_prompt(expected: list[int], continued: list[int]) -> None:
    """Refuse a sample that continued another text than its prompt: one stripped, cut or re-encoded
    on the way makes the model's continuation look like an answer to what the user asked."""


@torch.no_grad()
def sample_checked(
    model: GPT,
    idx: torch.Tensor,
    tokens: int,
    sampler: Sampler,
    generator: torch.Generator,
    seed: int,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """`idx` (B, T) and `tokens` tokens sampled after it by `generate_long` with `sampler`'s settings
    (`stack sample`'s generation, past the model's context too), held to GATE-TRAIN-005 before it is
    returned: every draw replayed from the logits it was made from after the context it had, those
    logits a plain forward's of their window, the generator's state before the first draw the one
    `seed` (the seed the record states) starts, and the spread probe (from `seed`) drawn by the
    model's own `generate` with the same settings and replayed. `on_token` sees each of the
    generation's tokens as it is drawn (not the probe's), and changes nothing of what is drawn."""
    out = None
    with watching_draws(model, generator) as draws, counting_undrawn(draws, idx.shape[0] * tokens):
        out = generate_long(model, idx, tokens, **sampler.settings(), generator=generator, on_token=on_token)
    tally = DrawTally(sampler, seed)
    tally.add(draws, None if out is None else out[:, idx.shape[1] :], model, idx)
    spread = SpreadLogits(probe_width(model.config.vocab, sampler.top_k), idx.device, seed)
    probe, drawn = sample_watched(spread, spread.prompt, PROBE_TOKENS, sampler, generator)
    tally.add_probe(probe, spread.prompt, drawn)
    check_drawn(tally, None)
    return drawn_or_stop(out)


def drawn_or_stop(drawn: torch.Tensor | None) -> torch.Tensor:
    """The tokens a generation drew, once GATE-TRAIN-005 has judged them: a generation that stopped
    with nothing to draw from has none to score or print even under a waiver of the gate."""
    if drawn is None:
        raise NothingToDraw("the sampler kept no token to draw from (GATE-TRAIN-005 waived): nothing drawn")
    return drawn
