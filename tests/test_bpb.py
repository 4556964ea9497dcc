"""Bits per byte scores every token once and divides by every byte; a lossy tokenizer is refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import BadInput, GateViolation
from stack.eval.bpb import bits_per_byte, check_round_trip, evaluate_text

GATE = "GATE-EVAL-003"
TEXT = "Held-out text with a few non-ASCII characters: naïve café, π ≈ 3.14159, 日本語.\n" * 3


class ByteTokenizer:
    """UTF-8 bytes as token ids: round-trips every text."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8")


class AsciiOnlyTokenizer(ByteTokenizer):
    """The gate's origin: characters it cannot encode are silently dropped."""

    def encode(self, text: str) -> list[int]:
        return super().encode(text.encode("ascii", errors="ignore").decode("ascii"))


class BigramLM(nn.Module):
    """A stand-in with the stack's model interface; each prediction depends on one token only."""

    def __init__(self, vocab: int = 256) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.head(self.embed(idx))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def test_a_round_tripping_tokenizer_passes() -> None:
    assert check_round_trip(ByteTokenizer(), TEXT) == list(TEXT.encode("utf-8"))


@pytest.mark.gate(GATE)
def test_a_tokenizer_that_drops_characters_is_refused() -> None:
    """Plant the origin's tokenizer, which drops non-ASCII characters and would flatter bits per byte."""
    dropped = sum(not ch.isascii() for ch in TEXT)
    with pytest.raises(GateViolation) as info:
        check_round_trip(AsciiOnlyTokenizer(), TEXT)
    assert info.value.measured == {
        "missing_chars": dropped,
        "extra_chars": 0,
        "first_difference": TEXT.index("ï"),
        "chars": len(TEXT),
    }


@pytest.mark.gate(GATE)
def test_evaluation_refuses_a_lossy_tokenizer() -> None:
    with pytest.raises(GateViolation):
        evaluate_text(BigramLM(), AsciiOnlyTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")


def test_bits_per_byte_divides_by_utf8_bytes_not_characters() -> None:
    text = "π≈3"  # 3 characters, 6 bytes
    assert bits_per_byte(math.log(2) * 6, text) == pytest.approx(1.0)


def test_bits_per_byte_of_empty_text_is_undefined() -> None:
    with pytest.raises(ValueError, match="empty"):
        bits_per_byte(1.0, "")


def _reference_nll(model: BigramLM, text: str) -> float:
    """Total NLL of tokens[1:] from one forward pass over the whole text, through the model's own loss."""
    ids = torch.tensor(ByteTokenizer().encode(text))
    with torch.no_grad():
        _, loss = model(ids[None, :-1], ids[None, 1:])
    return float(loss) * (len(ids) - 1)


@pytest.mark.parametrize(
    ("seq_len", "batch_size"),
    [(16, 4), (7, 3), (1, 64), (len(TEXT.encode("utf-8")) - 1, 2), (1000, 1)],
    ids=["batches", "short-final-window", "one-token-windows", "exact-fit", "longer-than-text"],
)
def test_every_token_is_scored_once(seq_len: int, batch_size: int) -> None:
    """However the text is windowed and batched, the summed NLL is the whole text's, once."""
    model = BigramLM()
    result = evaluate_text(model, ByteTokenizer(), TEXT, seq_len=seq_len, batch_size=batch_size, device="cpu")
    n_bytes = len(TEXT.encode("utf-8"))
    total = _reference_nll(model, TEXT)
    assert (result["tokens"], result["predicted_tokens"], result["bytes"]) == (n_bytes, n_bytes - 1, n_bytes)
    assert result["loss"] * result["predicted_tokens"] == pytest.approx(total, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5)


def test_evaluation_restores_training_mode() -> None:
    model = BigramLM().train()
    evaluate_text(model, ByteTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")
    assert model.training


def test_a_one_token_text_cannot_be_scored() -> None:
    with pytest.raises(BadInput, match="at least 2"):
        evaluate_text(BigramLM(), ByteTokenizer(), "x", seq_len=16, batch_size=4, device="cpu")
