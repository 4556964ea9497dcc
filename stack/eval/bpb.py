"""Bits per byte over the whole text (GATE-EVAL-003): a tokenizer cannot flatter the score by dropping bytes.

Bits per byte compares models with different tokenizers only if the denominator is the text
itself. Two things could shrink it quietly: a tokenizer that loses characters (scored text is
then shorter than the text), and a denominator taken from the tokens rather than the text. The
first is refused by `check_round_trip`; the second cannot happen because `bits_per_byte` takes
the text, not a count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from contracts.derive.reports import bits_per_byte_of
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure


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


def _nll_sum(model: torch.nn.Module, windows: torch.Tensor, device: torch.device | str) -> float:
    """Summed NLL (nats) of tokens 1.. of each row given the tokens before it."""
    windows = windows.to(device)
    logits, _ = model(windows[:, :-1], None)
    targets = windows[:, 1:]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return float(nll.double().sum())


def evaluate_text(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    text: str,
    seq_len: int,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, Any]:
    """Held-out loss and bits per byte of `text`, every token scored exactly once.

    The text is tokenised under the round-trip check, cut into windows of seq_len + 1 tokens with
    stride seq_len (each window predicts its last seq_len tokens from the ones before), batched
    batch_size at a time; a shorter final window is scored on its own. The first token of the text
    has no context and is not predicted, so the NLL covers tokens[1:] while bits per byte divides
    by every byte of the text: a slight overestimate, on the conservative side.

    Returns loss (mean nats per predicted token), bits_per_byte, tokens (of the text),
    predicted_tokens (tokens − 1) and bytes (UTF-8 bytes of the text).
    """
    ids = check_round_trip(tokenizer, text)
    if len(ids) < 2:
        raise BadInput(f"the evaluation text has {len(ids)} token(s); at least 2 are needed to score one")
    tokens = torch.tensor(ids, dtype=torch.long)
    n_full = (len(ids) - 1) // seq_len
    rest = tokens[n_full * seq_len :]
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if n_full:
                full = tokens[: n_full * seq_len + 1].unfold(0, seq_len + 1, seq_len)
                total += sum(_nll_sum(model, batch, device) for batch in full.split(batch_size))
            if len(rest) > 1:
                total += _nll_sum(model, rest.unsqueeze(0), device)
    finally:
        model.train(was_training)
    predicted = len(ids) - 1
    return {
        "loss": total / predicted,
        "bits_per_byte": bits_per_byte(total, text),
        "tokens": len(ids),
        "predicted_tokens": predicted,
        "bytes": len(text.encode("utf-8")),
    }
