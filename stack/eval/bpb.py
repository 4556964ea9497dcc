"""Bits per byte over the whole text (GATE-EVAL-003): a tokenizer cannot flatter the score by dropping bytes,
nor the windowing by skipping tokens.

Bits per byte compares models with different tokenizers only if the numerator is the NLL of every
token of the text and the denominator is the text itself. Three things could shrink it quietly: a
tokenizer that loses characters (scored text is then shorter than the text), windows that leave
tokens out of the sum (a stride longer than a window's targets, a dropped last window), and a
denominator taken from something other than the text's UTF-8 bytes. The first is refused by
`check_round_trip`. For the other two, every token carries its position in the text through the
windowing to the sum (`_nll_sum`), which counts the positions of the targets it sums
(`ScoredPositions`); `check_scored` then requires those to be positions 1..N−1, each once, each
predicted from the token before it, and the score to be that sum over the text's bytes.

A sum that is not the NLL of those targets (a mean taken for a sum, a batch left out of the total)
agrees with every count above. So each batch's scoring forward tapes the ids and targets it scored
and the logits it scored them on (stack.model.consumed), one bounded tape per batch, and the NLL
it returns is held, batch by batch and in total, to contracts.likelihood's float64 sum over that
tape (`TapedNll`); and the score to contracts.likelihood's bits per byte of that sum over the
UTF-8 bytes of the text the scored tokens decode to (GATE-EVAL-003, check nll).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.likelihood import (
    bits_per_byte_of,
    positions_sha256,
    predicted_positions_sha256,
    summed_nll,
    utf8_bytes,
)
from stack.model.consumed import Consumed, mode_of, record, recording
from stack.model.consumed import kept as kept_logits


class Tokenizer(Protocol):
    """What evaluation needs of a tokenizer: text to ids and back."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def _round_trip_outcome(text: str, decoded: str) -> Outcome:
    if decoded == text:  # the common case stays one comparison, even for a large held-out text
        measured = {"missing_chars": 0, "extra_chars": 0, "first_difference": None, "chars": len(text)}
    else:
        measured = {
            "missing_chars": sum((Counter(text) - Counter(decoded)).values()),
            "extra_chars": sum((Counter(decoded) - Counter(text)).values()),
            "first_difference": next(
                (i for i, (a, b) in enumerate(zip(text, decoded, strict=False)) if a != b),
                min(len(text), len(decoded)),
            ),
            "chars": len(text),
        }
    return measure("GATE-EVAL-003", measured, holds="the tokenizer round-trips the text")


@gate_ensure(
    "GATE-EVAL-003", lambda tokenizer, text, result: _round_trip_outcome(text, tokenizer.decode(result))
)
def check_round_trip(tokenizer: Tokenizer, text: str) -> list[int]:
    """The token ids of `text`, refused unless they decode back to exactly `text`."""
    return tokenizer.encode(text)


def bits_per_byte(total_nll_nats: float, text: str) -> float:
    """Total negative log-likelihood (nats) over the UTF-8 bytes of the whole `text`, in bits."""
    return bits_per_byte_of(total_nll_nats, len(text.encode("utf-8")))


class ScoredPositions:
    """Which positions of the text's tokens the NLL sum took as targets, and how often, counted on
    the device where the sum reads them; and how many targets were not predicted from the token
    just before them."""

    def __init__(self, tokens: int, device: torch.device | str) -> None:
        self.counts = torch.zeros(tokens, dtype=torch.int64, device=device)
        self.misaligned = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, targets: torch.Tensor, contexts: torch.Tensor) -> None:
        """The positions (B, L) of a batch's targets, and of the input token each is predicted from."""
        flat = targets.flatten()
        self.counts.index_add_(0, flat, torch.ones_like(flat))
        self.misaligned += (targets != contexts + 1).sum()

    def measured(self) -> dict[str, Any]:
        """The counts GATE-EVAL-003 judges, and the sha256 of the scored positions in ascending order
        (a position scored twice appears twice) beside that of 1..N−1 (contracts.likelihood)."""
        counts = self.counts.cpu()
        every = torch.arange(len(counts))
        return {
            "tokens": len(counts),
            "scored_targets": int(counts.sum()),
            "missing_positions": int((counts[1:] == 0).sum()),
            "repeated_positions": int((counts - 1).clamp(min=0).sum()),
            "first_token_scored": int(counts[0]),
            "misaligned_targets": int(self.misaligned),
            "scored_positions_sha256": positions_sha256(torch.repeat_interleave(every, counts).numpy()),
            "predicted_positions_sha256": predicted_positions_sha256(len(counts)),
        }


def _nll_sum(
    model: torch.nn.Module, windows: torch.Tensor, device: torch.device | str, scored: ScoredPositions
) -> float:
    """Summed NLL (nats) of tokens 1.. of each row given the tokens before it.

    `windows` (B, L + 1, 2) holds each token's id and its position in the text. The ids the sum
    takes as targets and their positions are one slice, so `scored` counts exactly what was summed;
    the ids read, the targets and the logits scored are taped (`TapedNll` holds the sum to them).
    """
    windows = windows.to(device)
    (input_ids, input_positions), (target_ids, target_positions) = (
        windows[:, :-1].unbind(-1),
        windows[:, 1:].unbind(-1),
    )
    logits, _ = model(input_ids, None)
    nll = F.cross_entropy(logits.float().flatten(0, 1), target_ids.flatten(), reduction="none")
    scored.add(target_positions, input_positions)
    record(
        Consumed(input_ids, target_ids, None, logits.dtype, mode=mode_of(model), logits=kept_logits(logits))
    )
    return float(nll.double().sum())


# Logit elements (float64) the recomputation of one taped scoring reads at a time: 32 MiB, however
# long the window or large the vocabulary.
TAPED_CHUNK_ELEMENTS = 1 << 22


def taped_sum(consumed: Consumed) -> float:
    """contracts.likelihood.summed_nll of one taped scoring, row by row in chunks of positions, so
    the float64 copy of a large vocabulary's logits stays bounded; NaN for a scoring taped without
    its logits (no stated sum matches that)."""
    logits, targets = consumed.logits, consumed.targets
    if logits is None:
        return math.nan
    step = max(1, TAPED_CHUNK_ELEMENTS // logits.shape[-1])
    return math.fsum(
        summed_nll(logits[row, start : start + step], targets[row, start : start + step])
        for row in range(logits.shape[0])
        for start in range(0, logits.shape[1], step)
    )


class TapedNll:
    """Each batch's stated NLL against contracts.likelihood's float64 sum over what its forward
    taped: the total of those sums, and the largest relative difference of any batch, kept as the
    batches are scored, so no batch's logits outlive it."""

    def __init__(self) -> None:
        self.total = 0.0
        self.deviation = 0.0
        self.widest = 0  # the most tokens one row of a taped scoring read (check window)

    def add(self, stated: float, tape: list[Consumed]) -> None:
        """One batch: the NLL its sum returned, and the scorings taped while it was computed (a batch
        whose tape holds no logits, or a NaN, differs infinitely)."""
        taped = math.fsum(taped_sum(consumed) for consumed in tape)
        self.widest = max(self.widest, *(consumed.inputs.shape[-1] for consumed in tape))
        self.total += taped
        off = abs(stated - taped)
        relative = off / abs(taped) if taped else (math.inf if off else 0.0)
        self.deviation = max(self.deviation, math.inf if math.isnan(relative) else relative)


def _taped_nll_sum(
    model: torch.nn.Module,
    windows: torch.Tensor,
    device: torch.device | str,
    scored: ScoredPositions,
    taped: TapedNll,
) -> float:
    """`_nll_sum` of one batch under a tape of its own, held to the tape by `taped`."""
    with recording(keep_logits=True) as tape:
        stated = _nll_sum(model, windows, device, scored)
    taped.add(stated, tape)
    return stated


def scored_measured(
    scored: ScoredPositions,
    text: str,
    result: dict[str, Any],
    nll_nats: float,
    taped: TapedNll,
    decoded: str,
    context: int,
) -> dict[str, Any]:
    """What GATE-EVAL-003 judges of a scoring: the positions the sum took, the count the result
    claims, the NLL summed, and the score against the UTF-8 bytes of `text`, counted here; (check
    nll) the NLL the forwards' tapes give, the worst batch's difference from it, and the UTF-8 bytes
    of the text the scored tokens decode to (`decoded`), counted by contracts.likelihood; and (check
    window) the widest window the scoring forwards taped against the `context` the evaluation
    states it scored at."""
    return {
        **scored.measured(),
        "predicted_tokens": result["predicted_tokens"],
        "nll_nats": nll_nats,
        "loss": result["loss"],
        "bits_per_byte": result["bits_per_byte"],
        "bytes": result["bytes"],
        "text_bytes": len(text.encode("utf-8")),
        "nll_taped": taped.total,
        "nll_batch_deviation": taped.deviation,
        "bytes_decoded": utf8_bytes(decoded),
        "window_tokens": taped.widest,
        "context": context,
    }


def _scored_outcome(measured: dict[str, Any]) -> Outcome:
    return measure(
        "GATE-EVAL-003", measured, holds="every token after the first is scored once, over every byte"
    )


@gate_require("GATE-EVAL-003", lambda measured: _scored_outcome(measured))
def check_scored(measured: dict[str, Any]) -> None:
    """Refuse a score whose sum skipped, repeated or misaligned a token, or whose bytes are not the text's."""


def text_windows(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of `tokens` (N, 2) that score each token after the first once: the full ones
    (n, seq_len + 1, 2), seq_len + 1 tokens with stride seq_len, and the rest (1, r, 2), the last
    window overlapping the full ones by one token (r < 2 when nothing is left to score)."""
    n_full = (len(tokens) - 1) // seq_len
    if not n_full:
        return tokens.new_empty((0, seq_len + 1, 2)), tokens.unsqueeze(0)
    full = tokens[: n_full * seq_len + 1].unfold(0, seq_len + 1, seq_len).transpose(1, 2)
    return full, tokens[n_full * seq_len :].unsqueeze(0)


def evaluate_text(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    text: str,
    seq_len: int,
    batch_size: int,
    device: torch.device | str,
    context: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Held-out loss and bits per byte of `text`, every token scored exactly once.

    The text is tokenised under the round-trip check, cut into windows of seq_len + 1 tokens with
    stride seq_len (each window predicts its last seq_len tokens from the ones before), batched
    batch_size at a time; a shorter final window is scored on its own. The first token of the text
    has no context and is not predicted, so the NLL covers tokens[1:] while bits per byte divides
    by every byte of the text: a slight overestimate, on the conservative side. GATE-EVAL-003
    judges the positions the sum took and the score's bytes (`check_scored`) before it is returned,
    and the NLL of every batch against the logits its forward taped (`TapedNll`), and the widest
    window those forwards read against `context`, the context the caller states the text is scored
    at (its record's seq_len; seq_len when None): of a text of N tokens, min(context, N − 1).

    `progress(done, total)`, when given, hears after each batch how many of the text's windows
    have been scored.

    Returns loss (mean nats per predicted token), bits_per_byte, tokens (of the text),
    predicted_tokens (tokens − 1) and bytes (UTF-8 bytes of the text).
    """
    ids = check_round_trip(tokenizer, text)
    if len(ids) < 2:
        raise BadInput(f"the evaluation text has {len(ids)} token(s); at least 2 are needed to score one")
    # (N, 2): each token's id and its position, which travel together into the sum.
    tokens = torch.stack([torch.tensor(ids, dtype=torch.long), torch.arange(len(ids))], dim=-1)
    full, rest = text_windows(tokens, seq_len)
    total, taped = 0.0, TapedNll()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            scored = ScoredPositions(len(ids), device)
            batches = [*(full.split(batch_size) if len(full) else ()), *([rest] if rest.shape[1] > 1 else [])]
            windows, done = sum(len(batch) for batch in batches), 0
            for batch in batches:
                total += _taped_nll_sum(model, batch, device, scored, taped)
                done += len(batch)
                if progress is not None:
                    progress(done, windows)
    finally:
        model.train(was_training)
    predicted = len(ids) - 1
    result = {
        "loss": total / predicted,
        "bits_per_byte": bits_per_byte(total, text),
        "tokens": len(ids),
        "predicted_tokens": predicted,
        "bytes": len(text.encode("utf-8")),
    }
    stated = seq_len if context is None else context
    check_scored(scored_measured(scored, text, result, total, taped, tokenizer.decode(ids), stated))
    return result
