"""Tokenizers: lossless round trips for any text, the EOT separator, and verified loading."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from stack.data.prepare import prepare_corpus
from stack.data.tokenizer import BPE_MIN_VOCAB, BpeTokenizer, ByteTokenizer, load_tokenizer, train_bpe

SAMPLE = [
    "def add(a, b):\n    return a + b\n",
    "Grüße aus Köln — naïve café, 東京, emoji 🙂 and tabs\t\tend\n",
    "the quick brown fox jumps over the lazy dog " * 20,
]


@cache
def bpe() -> BpeTokenizer:
    """One small BPE for the whole module (hypothesis forbids function-scoped fixtures)."""
    return train_bpe(SAMPLE * 5, 400)


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_byte_round_trip_is_lossless(text: str) -> None:
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_bpe_round_trip_is_lossless(text: str) -> None:
    tok = bpe()
    assert tok.decode(tok.encode(text)) == text


def test_vocab_counts_the_separator_and_encode_never_emits_it() -> None:
    for tok in (ByteTokenizer(), bpe()):
        assert tok.eot_id == tok.vocab_size - 1
        ids = tok.encode("<|endoftext|> text that looks like a separator")
        assert tok.eot_id not in ids
        assert max(ids) < tok.eot_id
        assert tok.decode([*tok.encode("a"), tok.eot_id, *tok.encode("b")]) == "ab"
    assert ByteTokenizer().vocab_size == 257


def test_bpe_compresses_and_is_deterministic() -> None:
    text = SAMPLE[2]
    assert len(bpe().encode(text)) < len(ByteTokenizer().encode(text)) / 2
    assert train_bpe(SAMPLE * 5, 400).sha256 == bpe().sha256


def test_bpe_vocab_below_minimum_is_bad_input() -> None:
    with pytest.raises(BadInput, match="too small for bpe"):
        train_bpe(SAMPLE, BPE_MIN_VOCAB - 1)


def test_byte_decode_replaces_bytes_that_are_not_utf8() -> None:
    assert ByteTokenizer().decode([0xFF, ord("a")]) == "\ufffda"
    with pytest.raises(ValueError, match=r"ids are 0\.\.256"):
        ByteTokenizer().decode([300])


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for number, text in enumerate(SAMPLE * 4):
        (root / f"doc{number}.txt").write_text(f"{number}: {text}", encoding="utf-8")
    return root


def test_load_tokenizer_matches_the_one_prepare_used(tmp_path: Path) -> None:
    corpus, data = _corpus(tmp_path), tmp_path / "data"
    manifest = prepare_corpus([corpus], data, tokenizer="bpe", vocab_size=300, val_fraction=0.0)
    tok = load_tokenizer(data)
    entry = manifest.tokenizer
    assert (tok.name, tok.sha256, tok.vocab_size) == ("bpe", entry.sha256, entry.vocab_size)
    assert tok.decode(tok.encode(SAMPLE[1])) == SAMPLE[1]
    prepare_corpus([corpus], tmp_path / "byte", val_fraction=0.0)
    assert load_tokenizer(tmp_path / "byte").name == "byte"


def test_altered_tokenizer_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_corpus([_corpus(tmp_path)], data, tokenizer="bpe", vocab_size=300, val_fraction=0.0)
    path = data / "tokenizer.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"Ġ', '"G', 1), encoding="utf-8")
    with pytest.raises(BadInput, match=r"tokenizer\.json does not match the sha256"):
        load_tokenizer(data)
