"""Sampling with a KV cache: one prefill over the prompt, then one token per step.

Each new token is drawn from the last position's logits after, in this order, the repetition
penalty, the temperature, top-k and top-p; `torch.multinomial` with the caller's generator makes
the draw reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from contracts.errors import BadInput
from stack.model.config import ModelConfig
from stack.model.kv_cache import KVCache
from stack.model.projection import stacked_weights


class Decoder(Protocol):
    """What sampling needs of a model (stack.model.gpt.GPT is one): its shapes, its embedding (the
    cache takes its dtype) and a forward that reads and fills a KV cache."""

    config: ModelConfig
    embed: nn.Embedding

    def __call__(self, idx: torch.Tensor, *, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class NothingToDraw(RuntimeError):
    """A row's logits kept no token after the top-k and top-p cuts: there is nothing to draw from.

    Every cut as documented keeps at least one token, so this is a sampler that broke its own rule.
    `torch.multinomial` would stop on the empty row with a message about inf and nan naming no
    setting; raised here instead, it lets GATE-TRAIN-005's replay count the draws that were asked
    for and never made (stack.model.sampling_checks), so the run halts on the gate.
    """


def _check_sampling(
    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float
) -> None:
    if temperature < 0:
        raise BadInput(f"temperature {temperature} is negative; use 0 for greedy or a positive value")
    if top_k is not None and top_k < 1:
        raise BadInput(f"top_k {top_k} must be at least 1 (or None for no cut)")
    if top_p is not None and not 0 < top_p <= 1:
        raise BadInput(f"top_p {top_p} must be in (0, 1] (or None for no cut)")
    if repetition_penalty <= 0:
        raise BadInput(f"repetition_penalty {repetition_penalty} must be positive; 1.0 turns it off")


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: the logits of tokens already in `seen` move towards less likely."""
    previous = logits.gather(1, seen)
    previous = torch.where(previous > 0, previous / penalty, previous * penalty)
    return logits.scatter(1, seen, previous)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits outside the k largest of each row become -inf."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)


def sample_next(
    logits: torch.Tensor,
    seen: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token id per row, (B, 1), from last-position logits (B, vocab)."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        logits = penalise_repeats(logits, seen, repetition_penalty)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    drawable = torch.isfinite(logits).any(dim=-1)  # rows a model's bad logits left empty are not the cuts'
    if top_k is not None:
        logits = keep_top_k(logits, top_k)
    if top_p is not None:
        logits = keep_top_p(logits, top_p)
    if (drawable & ~torch.isfinite(logits).any(dim=-1)).any():
        raise NothingToDraw(f"the top-k {top_k} / top-p {top_p} cuts kept no token of a row")
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


@torch.no_grad()
def generate(
    model: Decoder,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """idx (B, T) followed by max_new_tokens tokens sampled from `model`, using a KV cache.

    `on_token` sees each drawn token (B, 1) as soon as it is drawn, and touches neither the draws
    nor the generator: a long `stack sample` shows its progress by it and keeps what was drawn when
    it is interrupted."""
    _check_sampling(temperature, top_k, top_p, repetition_penalty)
    if max_new_tokens < 0:
        raise BadInput(f"max_new_tokens {max_new_tokens} is negative")
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise BadInput(f"the prompt must be (batch, time) with at least one token; got {tuple(idx.shape)}")
    if idx.shape[1] + max_new_tokens > model.config.ctx:
        raise BadInput(
            f"prompt of {idx.shape[1]} + {max_new_tokens} new tokens exceeds ctx {model.config.ctx}; "
            "shorten the prompt or ask for fewer tokens"
        )
    length = idx.shape[1] + max_new_tokens
    cache = KVCache(model.config, idx.shape[0], idx.device, model.embed.weight.dtype, length)
    # A forward per token: each projection group's stacked weight is made once for the whole call.
    with stacked_weights():
        logits, _ = model(idx, cache=cache)
        out = idx
        for step in range(max_new_tokens):
            token = sample_next(
                logits[:, -1],
                out,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                generator=generator,
            )
            out = torch.cat((out, token), dim=1)
            if on_token is not None:
                on_token(token)
            if step + 1 < max_new_tokens:  # the last token needs no forward of its own
                logits, _ = model(token, cache=cache)
    return out


@torch.no_grad()
def generate_long(model: Decoder, idx: torch.Tensor, max_new_tokens: int, **sampling: object) -> torch.Tensor:
    """Like `generate`, but past the model's context: once the window is full, its newest half
    becomes the prompt of the next chunk, so the model never sees more than `ctx` tokens. The
    sampling options, `on_token` included, go to every chunk's `generate`."""
    ctx = model.config.ctx
    out, remaining = idx, max_new_tokens
    while remaining > 0:
        window = out[:, -(ctx // 2) :] if out.shape[1] >= ctx else out
        chunk = min(remaining, ctx - window.shape[1])
        grown = generate(model, window, chunk, **sampling)  # type: ignore[arg-type]
        out = torch.cat((out, grown[:, window.shape[1] :]), dim=1)
        remaining -= chunk
    return out
