"""`--tokenizer hf:DIR`: a pretrained Hugging Face tokenizer prepares data, trains and samples.

The tokenizers are built offline in both styles real models ship (tests/support/hf_fixtures.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from stack.cli import main
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader
from stack.data.shards import open_split
from stack.data.tokenizer import PretrainedTokenizer
from stack.data.verify import verify_data_dir
from tests.support.hf_fixtures import llama2_tokenizer, llama3_tokenizer
from tests.support.train_support import smoke_args, train, write_corpus

STYLES = {"llama3": llama3_tokenizer, "llama2": llama2_tokenizer}


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in STYLES.items()}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_prepare_with_a_pretrained_tokenizer_records_it_and_ends_documents_with_its_eos(
    style: str, tokenizer_dirs: dict[str, Path], tmp_path: Path
) -> None:
    source = tokenizer_dirs[style]
    data = tmp_path / "data"
    prepare_corpus([write_corpus(tmp_path / "in")], data, tokenizer=f"hf:{source}", val_fraction=0.25)
    manifest = load_manifest(data)
    tokenizer = PretrainedTokenizer.from_dir(source)
    entry = manifest.tokenizer
    assert entry.name == "hf" and entry.eot_token == tokenizer.eot_token
    assert entry.sha256 == hashlib.sha256((source / "tokenizer.json").read_bytes()).hexdigest()
    assert (data / entry.path).read_bytes() == (source / "tokenizer.json").read_bytes()
    assert entry.vocab_size == tokenizer.vocab_size
    verify_data_dir(data, batch_size=2, seq_len=16)
    tokens = np.concatenate([np.asarray(s.tokens) for s in open_split(data, manifest, "train")])
    assert int((tokens == tokenizer.eot_id).sum()) == manifest.totals["train"].documents
    assert tokens.max() < tokenizer.vocab_size
    batch = TokenReader(data, batch_size=2, seq_len=16, seed=0).next_batch()
    assert batch.shape == (2, 17)


def test_an_eos_string_in_the_text_is_text_not_a_separator(tokenizer_dirs: dict[str, Path]) -> None:
    """A document holding the literal end-of-sequence string must not split itself in two."""
    for source in tokenizer_dirs.values():
        tokenizer = PretrainedTokenizer.from_dir(source)
        ids = tokenizer.encode(f"before {tokenizer.eot_token} after")
        assert tokenizer.eot_id not in ids
        assert tokenizer.decode(ids) == f"before {tokenizer.eot_token} after"


@settings(max_examples=60)
@given(text=st.text(max_size=80))
def test_a_byte_level_pretrained_tokenizer_round_trips_any_text(
    tokenizer_dirs: dict[str, Path], text: str
) -> None:
    """Byte-level BPE (Llama 3 style) loses nothing; GATE-EVAL-003 would catch one that does."""
    tokenizer = PretrainedTokenizer.from_dir(tokenizer_dirs["llama3"])
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_a_model_trains_and_samples_on_data_prepared_with_a_pretrained_tokenizer(
    tokenizer_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    prepare_corpus(
        [write_corpus(tmp_path / "in")], data, tokenizer=f"hf:{tokenizer_dirs['llama3']}", val_fraction=0.25
    )
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    state = json.loads(sorted((run / "checkpoints").glob("step-*"))[-1].joinpath("state.json").read_text())
    assert state["tokenizer"]["name"] == "hf" and state["tokenizer"]["eot_token"] == "<|end_of_text|>"
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "The gate", "--tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("The gate")


def test_a_directory_without_the_files_a_tokenizer_needs_is_one_line(
    tokenizer_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(write_corpus(tmp_path / "in", documents=10))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", corpus, "--out", str(tmp_path / "a"), "--tokenizer", f"hf:{empty}"]) == 2
    assert "needs a Hugging Face directory with a tokenizer.json" in capsys.readouterr().err
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "tokenizer.json").write_bytes((tokenizer_dirs["llama3"] / "tokenizer.json").read_bytes())
    assert main(["prepare", corpus, "--out", str(tmp_path / "b"), "--tokenizer", f"hf:{no_config}"]) == 2
    err = capsys.readouterr().err  # nothing beside it names an eos: the line says where to add one
    assert "names no end-of-sequence token" in err and "copy tokenizer_config.json from" in err
    with pytest.raises(BadInput, match="--vocab-size applies to --tokenizer bpe"):
        prepare_corpus([corpus], tmp_path / "c", tokenizer=f"hf:{tokenizer_dirs['llama3']}", vocab_size=500)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_directory_of_an_older_tokenizer_is_refused_with_the_conversion_that_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GPT-2-style directory keeps vocab.json and merges.txt, no tokenizer.json: the refusal names
    the files and the transformers call that writes tokenizer.json from them, and after that call
    the directory prepares."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    older = tmp_path / "gpt2-style"
    older.mkdir()
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, special_tokens=["<|endoftext|>"])
    backend.train_from_iterator(["a few words of text to learn merges from, " * 20], trainer=trainer)
    backend.model.save(str(older))
    config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    (older / "tokenizer_config.json").write_text(json.dumps(config))
    corpus = str(write_corpus(tmp_path / "in", documents=10))
    argv = ["prepare", corpus, "--out", str(tmp_path / "data"), "--tokenizer", f"hf:{older}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "it holds an older tokenizer's vocab.json and merges.txt" in err and "save_pretrained" in err
    AutoTokenizer.from_pretrained(str(older)).save_pretrained(str(older))  # the call the line names
    assert main(argv) == 0


# Where the special tokens are named, as transformers resolves them (stack.data.hf_specials):
# tokenizer_config.json; special_tokens_map.json over it only without added_tokens_decoder.
ADDED = {"__type": "AddedToken", "content": "<|begin_of_text|>", "special": True}
LAYOUTS = {
    "config": ({"eos_token": "<|end_of_text|>", "bos_token": "<|begin_of_text|>"}, None),
    "map-only": ({}, {"eos_token": "<|end_of_text|>", "bos_token": {"content": "<|begin_of_text|>"}}),
    "map-over-config": ({"eos_token": "<|begin_of_text|>"}, {"eos_token": "<|end_of_text|>"}),
    "config-with-decoder": (
        {"eos_token": "<|end_of_text|>", "bos_token": ADDED, "added_tokens_decoder": {}},
        {"eos_token": "<|begin_of_text|>"},
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_special_tokens_are_read_where_transformers_reads_them(
    layout: str, tokenizer_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """An eos only in special_tokens_map.json is not refused, for transformers reads it. Each
    layout resolves to the named tokens AutoTokenizer gives, and documents end with its eos."""
    from transformers import AutoTokenizer

    from stack.data.hf_specials import SPECIAL_NAMES, special_tokens

    config, mapped = LAYOUTS[layout]
    directory = tmp_path / layout
    directory.mkdir()
    (directory / "tokenizer.json").write_bytes((tokenizer_dirs["llama3"] / "tokenizer.json").read_bytes())
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if mapped is not None:
        (directory / "special_tokens_map.json").write_text(json.dumps(mapped), encoding="utf-8")
    users = AutoTokenizer.from_pretrained(str(directory))
    named = {k: v for k, v in users.special_tokens_map.items() if k in SPECIAL_NAMES}
    assert special_tokens(directory) == named
    assert PretrainedTokenizer.from_dir(directory).eot_token == users.eos_token
