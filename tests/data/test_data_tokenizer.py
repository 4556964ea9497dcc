"""Tokenizers: lossless round trips for any text, the EOT separator, and verified loading."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.cli import main
from stack.data.prepare import prepare_corpus
from stack.data.sft_prepare import prepare_sft
from stack.data.tokenizer import (
    BPE_MIN_VOCAB,
    BPE_TRAIN_RUN,
    LONG_RUN,
    BpeTokenizer,
    ByteTokenizer,
    load_tokenizer,
    runs_cut,
    train_bpe,
)
from tests.support.paths import DATA

SAMPLE = [
    "def add(a, b):\n    return a + b\n",
    "Grüße aus Köln — naïve café, 東京, emoji 🙂 and tabs\t\tend\n",
    "the quick brown fox jumps over the lazy dog " * 20,
]


@cache
def bpe() -> BpeTokenizer:
    """One small BPE for the whole module (hypothesis forbids function-scoped fixtures)."""
    return train_bpe(SAMPLE * 5, 400)


@settings(max_examples=150)
@given(st.text())
def test_byte_round_trip_is_lossless(text: str) -> None:
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150)
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


@settings(max_examples=150)
@given(st.lists(st.text(alphabet=st.sampled_from("ab \n\u00e9"), max_size=700), max_size=3))
def test_the_trainer_gets_every_character_once_and_no_run_longer_than_its_bound(texts: list[str]) -> None:
    """runs_cut: the pieces are the texts, in order; none holds a run (of non-space or of space)
    longer than BPE_TRAIN_RUN; a text without such a run is given whole."""
    pieces = list(runs_cut(texts))
    assert "".join(pieces) == "".join(texts)
    assert all(LONG_RUN.search(piece) is None or len(piece) == BPE_TRAIN_RUN for piece in pieces)
    assert not any(re.search(rf"\S{{{BPE_TRAIN_RUN + 1}}}|\s{{{BPE_TRAIN_RUN + 1}}}", p) for p in pieces)
    for text in texts:
        if LONG_RUN.search(text) is None and text:
            assert text in pieces


def test_a_long_unbroken_line_trains_no_token_longer_than_the_bound() -> None:
    """One pre-token per unbroken run made the trainer's cost explode (a
    300 KB line of ACGT: minutes, deaf to Ctrl-C; a 3 MB line of one letter: 13 minutes). Cut to
    BPE_TRAIN_RUN, a line of one letter merges up to runs of that length and no further, and the
    text still round-trips (uncut, the merges doubled 'a' to 16384 letters)."""
    line = "a" * 20_000
    tok = train_bpe(["some words first\n", line], 300)
    longest = max(len(tok.decode([i])) for i in range(tok.vocab_size - 1))
    assert longest == BPE_TRAIN_RUN
    assert tok.decode(tok.encode(line)) == line


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


# -- GATE-DATA-007 check round_trip: what prepare stores decodes to the documents' text ------------

CHAT = DATA / "chat_small.jsonl"


def _prefix_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: train_bpe's byte-level pre-tokenizer adds a prefix space, so every stored
    document begins with a space token its text does not have."""
    from tokenizers import pre_tokenizers

    real = pre_tokenizers.ByteLevel

    class PrefixSpace:
        alphabet = staticmethod(real.alphabet)

        def __new__(cls, add_prefix_space: bool = False, **options: Any) -> Any:
            return real(add_prefix_space=True, **options)

    monkeypatch.setattr(pre_tokenizers, "ByteLevel", PrefixSpace)


def _first_byte_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The byte tokenizer's batch encoder leaves out each document's first byte."""
    real = ByteTokenizer.encode_documents
    monkeypatch.setattr(
        ByteTokenizer, "encode_documents", lambda self, docs: [ids[1:] for ids in real(self, docs)]
    )


@pytest.mark.gate("GATE-DATA-007")
@pytest.mark.parametrize(("plant", "tokenizer"), [(_prefix_space, "bpe"), (_first_byte_lost, "byte")])
def test_a_tokenizer_that_does_not_round_trip_what_prepare_stores_stops_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Any,
    tokenizer: str,
) -> None:
    """Exit 3 naming the gate, nothing published: prepare, training and evaluating the held-out split
    would all read the same stored ids and agree with them."""
    plant(monkeypatch)
    argv = ["prepare", str(_corpus(tmp_path)), "--out", str(tmp_path / "data"), "--tokenizer", tokenizer]
    code = main([*argv, *(["--vocab-size", "300"] if tokenizer == "bpe" else []), "--val-fraction", "0.25"])
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-007" in err and "do not decode to their text" in err, err
    assert not (tmp_path / "data").exists()


@pytest.mark.gate("GATE-DATA-007")
def test_a_prefix_space_in_fine_tuning_examples_stops_the_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same BPE on prompt-completion examples (joined as TRL joins them, no template marker to
    miss): each example's ids decoded against the text it renders to."""
    _prefix_space(monkeypatch)
    records = [json.loads(line)["messages"][-2:] for line in CHAT.read_text().splitlines()]
    path = tmp_path / "pc.jsonl"
    lines = [
        json.dumps({"prompt": user["content"], "completion": answer["content"]}) for user, answer in records
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(GateViolation, match=r"GATE-DATA-007.*do not decode to their text"):
        prepare_sft(
            [path], tmp_path / "sft", fmt="prompt-completion", tokenizer="bpe", vocab_size=300, pack_len=96
        )


@pytest.mark.holds("GATE-DATA-007")
def test_an_honest_bpe_round_trips_every_document_it_stores(tmp_path: Path) -> None:
    """Every document of a corpus below round_trip_bytes is decoded again, every held-out one."""
    with recording(Ledger()) as ledger:
        manifest = prepare_corpus([_corpus(tmp_path)], tmp_path / "data", tokenizer="bpe", vocab_size=300)
    measured = ledger.results["GATE-DATA-007"].measured
    documents = manifest.totals["train"].documents + manifest.totals["heldout"].documents
    assert measured["round_trip_documents"] == documents and measured["round_trip_failed"] == 0
    assert (
        measured["heldout_checked"] == manifest.totals["heldout"].documents
        and measured["round_trip_rate"] == 1.0
    )


def _round_trip(**values: Any) -> dict[str, Any]:
    base = {
        "tokenizer": "bpe",
        "gives_back_probe": True,
        "round_trip_documents": 40,
        "round_trip_failed": 0,
        "heldout_documents": 4,
        "heldout_checked": 4,
        "round_trip_rate": 1.0,
        "input_bytes": 1000,
    }
    return {**base, **values}


@pytest.mark.gate("GATE-DATA-007")
def test_the_sample_is_every_held_out_document_and_round_trip_bytes_of_the_rest() -> None:
    """The share drawn at round_trip_bytes over the corpus's bytes holds, a hair below it fires; a
    held-out document left unchecked fires; a failure fires for the stack's own tokenizers and one
    that gives back the probe, and is recorded for a pretrained one that normalises."""
    budget = load_spec().threshold("GATE-DATA-007", "round_trip_bytes")
    corpus = int(budget * 3)
    rate = min(1.0, budget / corpus)
    assert judge("GATE-DATA-007", _round_trip(input_bytes=corpus, round_trip_rate=rate)) == []
    assert judge("GATE-DATA-007", _round_trip(input_bytes=corpus, round_trip_rate=rate * (1 - 1e-9)))
    assert judge("GATE-DATA-007", _round_trip(heldout_checked=3))
    assert judge("GATE-DATA-007", _round_trip(round_trip_failed=1))
    assert judge("GATE-DATA-007", _round_trip(round_trip_failed=1, tokenizer="hf"))
    assert (
        judge("GATE-DATA-007", _round_trip(round_trip_failed=1, tokenizer="hf", gives_back_probe=False)) == []
    )


def test_a_prompt_writes_special_tokens_and_a_corpus_document_does_not(tmp_path: Path) -> None:
    """`encode_prompt` (what a user types) makes a chat marker its special id, as transformers
    does; `encode` and `encode_documents` (corpus text) keep it text, so a document cannot smuggle
    one in. The stack's own tokenizers' one special is the end-of-text separator's name."""
    from stack.data.tokenizer import PretrainedTokenizer
    from tests.support.hf_fixtures import qwen2_tokenizer

    hf = PretrainedTokenizer.from_dir(qwen2_tokenizer(tmp_path / "qwen"))
    marker = hf.special_tokens["<|im_start|>"]
    text = "<|im_start|>user\nhi<|im_end|>"
    assert hf.encode_prompt(text)[0] == marker and hf.special_tokens["<|im_end|>"] in hf.encode_prompt(text)
    assert marker not in hf.encode(text) and marker not in hf.encode_documents([text.encode()])[0].tolist()
    assert hf.encode_prompt("plain words") == hf.encode("plain words")
    byte = ByteTokenizer()
    assert byte.encode_prompt("a<|endoftext|>b") == [97, byte.eot_id, 98]
    assert byte.eot_id not in byte.encode("a<|endoftext|>b")
    bpe = train_bpe(["a b c <|endoftext|> d e"] * 20, BPE_MIN_VOCAB + 20)
    assert bpe.encode_prompt("a<|endoftext|>") == [*bpe.encode("a"), bpe.eot_id]
