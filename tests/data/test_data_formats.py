"""`stack prepare`'s inputs (text, separated text, JSONL, Parquet, CSV) and its bounded-memory streaming.

The same text must give the same documents, ids and split whatever format or layout it comes
in; a document longer than the working set must give the ids of whole-document encoding; a
corpus that does not parse is refused in one line that names the place.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.judges import judge
from stack.artifacts import INDEX_FILE
from stack.data import record_input, table_input, text_input
from stack.data.bpe_sample import BpeSample
from stack.data.corpus import Document, FileRegion, Framing, InputFile, Skipped
from stack.data.formats import Layout
from stack.data.manifest import Manifest, load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.text_input import WHITESPACE, text_documents
from stack.data.tokenizer import BpeTokenizer, ByteTokenizer, Tokenizer, safe_pieces, train_bpe
from stack.data.utf8 import Utf8Stream, repaired
from stack.data.verify import verify_data_dir
from stack.data.working_set import MIN_WORKING_SET, WorkingSet
from tests.support.hf_fixtures import llama3_tokenizer
from tests.support.prepare_support import run_cli
from tests.support.train_support import WORDS, smoke_args, train

SEP = "<|endoftext|>"


def stories(n: int, seed: int = 0) -> list[str]:
    """n distinct documents of word-like lines, without whitespace at either end."""
    rng = random.Random(seed)

    def line() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))

    return [f"story {i}: " + "\n".join(line() for _ in range(12)) + "." for i in range(n)]


def as_files(root: Path, docs: Sequence[str]) -> Path:
    """One file per document: the layout prepare has always read."""
    root.mkdir(parents=True)
    for i, doc in enumerate(docs):
        (root / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return root


def as_separated(root: Path, docs: Sequence[str], between: str = f"\n{SEP}\n") -> Path:
    """One file, TinyStories style: each document followed by the separator on a line of its own."""
    root.mkdir(parents=True)
    (root / "stories.txt").write_text(between.join(docs) + between, encoding="utf-8")
    return root / "stories.txt"


def as_jsonl(root: Path, docs: Sequence[str], **extra: Sequence[object]) -> Path:
    """One JSON object per line: an id, the text, and any `extra` fields."""
    root.mkdir(parents=True)
    lines = [
        json.dumps({"id": i, "text": doc, **{k: v[i] for k, v in extra.items()}})
        for i, doc in enumerate(docs)
    ]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "docs.jsonl"


def as_parquet(root: Path, docs: Sequence[str], **extra: Sequence[object]) -> Path:
    """One row per document in row groups of 16: an id, the text, and any `extra` columns."""
    root.mkdir(parents=True)
    table = pa.table(
        {"id": list(range(len(docs))), "text": list(docs), **{k: list(v) for k, v in extra.items()}}
    )
    pq.write_table(table, root / "docs.parquet", row_group_size=16)
    return root / "docs.parquet"


def as_table(root: Path, docs: Sequence[str], name: str = "docs.csv", **extra: Sequence[object]) -> Path:
    """One row per document under a header, as csv.writer writes it (a multi-line text quoted):
    an id, the text, and any `extra` columns; a `.tsv` name gets tabs."""
    root.mkdir(parents=True)
    delimiter = "\t" if name.endswith(".tsv") else ","
    with open(root / name, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "text", *extra])
        writer.writerows([i, doc, *(v[i] for v in extra.values())] for i, doc in enumerate(docs))
    return root / name


def as_categorical_parquet(root: Path, docs: Sequence[str]) -> Path:
    """Parquet whose text column is dictionary-encoded, as pandas' `category` and Polars'
    categorical columns are saved."""
    root.mkdir(parents=True)
    table = pa.table({"id": list(range(len(docs))), "text": pa.array(list(docs)).dictionary_encode()})
    pq.write_table(table, root / "docs.parquet", row_group_size=16)
    return root / "docs.parquet"


# Each input kind: how to write documents in it, and how prepare is told to read it.
KINDS: dict[str, tuple[Callable[[Path, Sequence[str]], Path], Layout]] = {
    "text": (as_files, Layout()),
    "separated": (as_separated, Layout(doc_sep=SEP)),
    "blank-lines": (lambda root, docs: as_separated(root, docs, "\n\n"), Layout(doc_sep="\n\n")),
    "jsonl": (as_jsonl, Layout()),
    "parquet": (as_parquet, Layout()),
    "parquet-categorical": (as_categorical_parquet, Layout()),
    "csv": (as_table, Layout()),
    "tsv": (lambda root, docs: as_table(root, docs, "docs.tsv"), Layout()),
}


def written(data: Path, manifest: Manifest) -> tuple[list[tuple[str, str]], str]:
    """What prepare wrote, minus the per-file counts: shards by path and sha256, and the index's sha256."""
    return [(s.path, s.sha256) for s in manifest.shards], manifest.documents.sha256


@pytest.fixture(scope="module")
def docs() -> list[str]:
    """Enough documents for a held-out split of 16 batches and a smoke run."""
    return stories(80)


@pytest.fixture(scope="module")
def reference(docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[str, str]], str]:
    """The corpus as one file per document, prepared: what every other layout must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    manifest = prepare_corpus([as_files(root / "in", docs)], root / "data", val_fraction=0.25)
    return written(root / "data", manifest)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_input_kind_prepares_the_same_documents_and_trains(
    kind: str, docs: list[str], reference: tuple[list[tuple[str, str]], str], tmp_path: Path
) -> None:
    write, layout = KINDS[kind]
    data = tmp_path / "data"
    manifest = prepare_corpus([write(tmp_path / "in", docs)], data, val_fraction=0.25, layout=layout)
    assert written(data, manifest) == reference
    stats = manifest.sources["main"]
    assert stats.documents == len(docs) and stats.empty_skipped == stats.invalid_utf8_files == 0
    verify_data_dir(data, batch_size=4, seq_len=32)
    assert train(smoke_args(data, tmp_path / "run")) == 0


def test_the_split_is_a_function_of_content_not_of_files_order_or_format(
    docs: list[str], reference: tuple[list[tuple[str, str]], str], tmp_path: Path
) -> None:
    shuffled = random.Random(1).sample(docs, len(docs))
    inputs = [
        as_jsonl(tmp_path / "a", shuffled[:30]),
        as_parquet(tmp_path / "b", shuffled[30:55]),
        as_separated(tmp_path / "c", shuffled[55:]),
    ]
    data = tmp_path / "data"
    manifest = prepare_corpus(inputs, data, val_fraction=0.25, layout=Layout(doc_sep=SEP))
    index = np.load(data / INDEX_FILE)
    ref_data = tmp_path / "ref"
    ref = prepare_corpus([as_files(tmp_path / "files", docs)], ref_data, val_fraction=0.25)
    ref_index = np.load(ref_data / INDEX_FILE)
    assert sorted(index.tolist()) == sorted(ref_index.tolist())
    assert manifest.totals == ref.totals


# -- pieces: ids of a long document are those of the whole ----------------------------------------

FRAGMENTS = [
    *WORDS[:8],
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    ".",
    ",",
    "'s",
    "'ll",
    "42",
    "é",
    "日本",
    "\u00a0",
    "!?",
]


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """A BPE trained on the fragments the property tests draw from, so its merges cross them."""
    rng = random.Random(0)
    texts = ["".join(rng.choice(FRAGMENTS) for _ in range(300)) for _ in range(200)]
    return train_bpe(texts, 600)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at `cuts` (clipped, deduplicated): the raw blocks a reader might see."""
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@settings(max_examples=200)
@given(
    text=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=120).map("".join),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    size=st.integers(1, 64),
)
def test_a_document_encoded_in_safe_pieces_gets_the_ids_of_the_whole(
    bpe: Tokenizer, text: str, cuts: list[int], size: int
) -> None:
    data = text.encode("utf-8")
    for tokenizer in (bpe, ByteTokenizer()):
        blocks = Utf8Stream().blocks(split_at(data, cuts))
        pieces = list(safe_pieces(blocks, tokenizer.cut_point, size))
        assert b"".join(pieces) == data
        ids = [i for piece in tokenizer.encode_documents(pieces) for i in piece.tolist()]
        assert ids == tokenizer.encode(text)


@settings(max_examples=300)
@given(data=st.binary(max_size=80), cuts=st.lists(st.integers(0, 80), max_size=10))
def test_utf8_repaired_in_blocks_equals_repaired_whole(data: bytes, cuts: list[int]) -> None:
    stream = Utf8Stream()
    blocks = list(stream.blocks(split_at(data, cuts)))
    assert (b"".join(blocks), stream.replaced) == repaired(data)
    for block in blocks:
        block.decode("utf-8")  # every block ends between characters


@settings(max_examples=150)
@given(
    parts=st.lists(st.text(alphabet=st.sampled_from("ab é\n\t|<>"), max_size=30), max_size=8),
    batch_bytes=st.integers(1, 24),
)
def test_separated_text_is_split_alike_across_any_block_border(
    parts: list[str], batch_bytes: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    separator = "<||>"
    path = tmp_path_factory.mktemp("sep") / "t.txt"
    path.write_bytes(separator.join(parts).encode("utf-8"))
    found = []
    for item in text_documents(InputFile("main", path), separator.encode(), batch_bytes, lambda _n: None):
        if isinstance(item, FileRegion):
            found.append(b"".join(Utf8Stream().blocks(item.raw_blocks(batch_bytes))))
        elif isinstance(item, Document):
            found.append(item.data)
    text = separator.join(parts).encode()
    if separator.encode() in text:
        expected = [p.strip(WHITESPACE) for p in text.split(separator.encode())]
    else:  # --doc-sep never occurs: the file is read without it, whole, as one document
        expected = [text] if text.strip(WHITESPACE) else []
    assert found == [e for e in expected if e]


# -- bounded memory -------------------------------------------------------------------------------


def long_document(size: int, seed: int = 0) -> str:
    """One document of about `size` bytes of words, spaces, commas and newlines."""
    rng = random.Random(seed)
    parts, length = [], 0
    while length < size:
        parts += [rng.choice(WORDS), rng.choice([" ", " ", " ", "\n", ", "])]
        length += len(parts[-2]) + len(parts[-1])
    return "".join(parts).strip()


@pytest.mark.parametrize(
    ("kind", "tokenizer"),
    [
        ("text", "byte"),
        ("separated", "byte"),
        ("jsonl", "byte"),
        ("parquet", "byte"),
        ("text", "bpe"),
        ("jsonl", "bpe"),
    ],
)
def test_a_document_larger_than_the_working_set_gives_the_data_of_a_large_working_set(
    kind: str, tokenizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [*stories(12), long_document(MIN_WORKING_SET + 50_000), *stories(4, seed=1)]
    write, layout = KINDS[kind]
    inputs = [write(tmp_path / "in", docs)]
    options = {"tokenizer": tokenizer, "vocab_size": 300 if tokenizer == "bpe" else None, "layout": layout}
    large = prepare_corpus(inputs, tmp_path / "large", val_fraction=0.25, **options)
    calls: list[int] = []
    for cls in (ByteTokenizer, BpeTokenizer):
        encode = cls.encode_documents

        def spy(self: Tokenizer, documents: Sequence[bytes], encode: Callable = encode) -> list[np.ndarray]:
            calls.append(sum(map(len, documents)))
            return encode(self, documents)

        monkeypatch.setattr(cls, "encode_documents", spy)
    small = prepare_corpus(
        inputs, tmp_path / "small", val_fraction=0.25, working_set=MIN_WORKING_SET, **options
    )
    assert written(tmp_path / "small", small) == written(tmp_path / "large", large)
    assert max(calls) <= WorkingSet(MIN_WORKING_SET).batch_bytes < len(docs[12])


def test_a_pretrained_tokenizer_encodes_a_long_document_whole_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An hf tokenizer may normalise, so no cut point is promised: the document is encoded whole."""
    hf = f"hf:{llama3_tokenizer(tmp_path / 'hf')}"
    inputs = [as_files(tmp_path / "in", [*stories(12), long_document(MIN_WORKING_SET + 50_000)])]
    large = prepare_corpus(inputs, tmp_path / "large", tokenizer=hf, val_fraction=0.25)
    with caplog.at_level(logging.WARNING):
        small = prepare_corpus(
            inputs, tmp_path / "small", tokenizer=hf, val_fraction=0.25, working_set=MIN_WORKING_SET
        )
    assert written(tmp_path / "small", small) == written(tmp_path / "large", large)
    assert "no point where the hf tokenizer can cut it safely" in caplog.text


# -- the BPE sample -------------------------------------------------------------------------------


def test_bpe_trains_on_a_seeded_sample_that_ignores_layout(
    docs: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = prepare_corpus(
        [as_files(tmp_path / "files", docs)], tmp_path / "whole", tokenizer="bpe", vocab_size=400
    )
    assert (
        whole.tokenizer.sha256 == train_bpe(docs, 400).sha256
    )  # a sample the size of the corpus is the corpus
    sampled = []
    for name, write in (("jsonl", as_jsonl), ("parquet", as_parquet)):
        order = docs if name == "jsonl" else docs[::-1]
        with caplog.at_level(logging.WARNING):
            manifest = prepare_corpus(
                [write(tmp_path / name, order)],
                tmp_path / f"d-{name}",
                tokenizer="bpe",
                vocab_size=400,
                bpe_sample=8000,
            )
        sampled.append(manifest.tokenizer.sha256)
    assert sampled[0] == sampled[1] != whole.tokenizer.sha256
    assert "bpe trains on a seeded sample of the corpus" in caplog.text
    reseeded = prepare_corpus(
        [as_jsonl(tmp_path / "seed", docs)],
        tmp_path / "d-seed",
        tokenizer="bpe",
        vocab_size=400,
        bpe_sample=8000,
        seed=3,
    )
    assert reseeded.tokenizer.sha256 != sampled[0]


@given(
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=40)), max_size=30),
    st.integers(1, 400),
    st.randoms(use_true_random=False),
    st.integers(1, 4),
)
@settings(max_examples=60)
def test_a_bpe_sample_is_the_same_whatever_the_order_and_the_parts(
    units: list[tuple[int, bytes]], budget: int, rng: random.Random, parts: int
) -> None:
    """The sample is the longest run of units by priority that fits the budget: offered in any order,
    or drawn by parts (a worker's files each) and merged, it is the same."""

    def drawn(order: list[tuple[int, bytes]]) -> BpeSample:
        sample = BpeSample(budget, 0)
        for number, text in order:
            sample.offer(text, number.to_bytes(8, "little"))
        return sample

    whole = drawn(units)
    shuffled = rng.sample(units, len(units))
    merged = BpeSample(budget, 0)
    for part in range(parts):
        merged.merge(drawn(shuffled[part::parts]))
    for other in (drawn(shuffled), merged):
        assert sorted(other._heap) == sorted(whole._heap) and other.offered_units == whole.offered_units


@given(st.binary(max_size=3000) | st.text(max_size=1000).map(lambda t: t.encode()), st.integers(1, 700))
@settings(max_examples=60)
def test_a_file_without_separator_is_cut_into_pieces_that_make_it_up(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, doc_bytes: int
) -> None:
    """Pieces of at most --doc-bytes, cut after a newline or between characters, that put back
    together are the file; whatever the batch size they are read in."""
    # no NUL (a file with one is binary), no CR and no leading byte-order mark: the readers
    # normalise those, which tests/data/test_line_ends.py holds them to
    data = data.replace(b"\0", b"a").replace(b"\r", b"a")
    data = b"a" + data if data.startswith((b"\xef\xbb\xbf", b"%PDF-")) else data  # a PDF is no text
    path = tmp_path_factory.mktemp("cut") / "file.txt"
    path.write_bytes(data)
    for batch_bytes in (64, 1 << 20):
        *found, framing = text_documents(
            InputFile("main", path, "file.txt"), None, batch_bytes, lambda _n: None, doc_bytes
        )
        assert isinstance(framing, Framing)  # the books (GATE-DATA-014): every byte a piece's or framing
        assert sum(f.raw for f in found if not isinstance(f, Skipped)) + sum(framing.removed.values()) == len(
            data
        )
        if not data.strip(WHITESPACE) and len(data) <= min(batch_bytes, doc_bytes):
            assert found == [Skipped("main", "empty", "file.txt")]  # nothing but blanks is no document
            continue
        pieces = [next(f.raw_blocks(1 << 20), b"") if isinstance(f, FileRegion) else f.data for f in found]
        assert all(not f.delimited for f in found)
        if repaired(data)[0] == data:  # valid UTF-8: documents are the bytes, cut between characters
            assert b"".join(pieces) == data
            assert all(len(p) <= doc_bytes or len(p.decode("utf-8")) == 1 for p in pieces)


# -- records: sources, empty and repaired text ----------------------------------------------------


@pytest.mark.parametrize("write", [as_jsonl, as_parquet, as_table])
def test_a_source_field_puts_each_record_in_its_source(
    write: Callable[..., Path], docs: list[str], tmp_path: Path
) -> None:
    sources = ["web" if i % 3 else "code" for i in range(len(docs))]
    manifest = prepare_corpus(
        [write(tmp_path / "in", docs, origin=sources)],
        tmp_path / "data",
        val_fraction=0.25,
        layout=Layout(source_field="origin"),
    )
    assert {name: s.documents for name, s in manifest.sources.items()} == {"code": 27, "main": 0, "web": 53}
    assert manifest.sources["main"].files == 1
    assert {s.source for s in manifest.shards} == {"web", "code"}
    verify_data_dir(tmp_path / "data", batch_size=2, seq_len=16)  # a source without documents reads fine


def test_empty_null_and_invalid_records_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    lines = [
        json.dumps({"text": "a fine record"}),
        "",
        json.dumps({"text": ""}),
        json.dumps({"text": None}),
        '{"text": "lone \\ud800 surrogate"}',
    ]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    manifest = prepare_corpus([root], tmp_path / "data", val_fraction=0)
    stats = manifest.sources["main"]
    assert (stats.files, stats.documents, stats.empty_skipped, stats.invalid_utf8_files) == (2, 3, 2, 2)


def test_items_of_a_separated_file_are_documents_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(f"  \n{SEP}one\n{SEP}{SEP}\n two  \n{SEP}\n")
    items = list(text_documents(InputFile("main", path), SEP.encode(), 1 << 16, lambda _n: None))
    assert [item.data for item in items if isinstance(item, Document)] == [b"one", b"two"]
    path.write_text(f"\n{SEP}\n")
    assert list(text_documents(InputFile("main", path), SEP.encode(), 1 << 16, lambda _n: None)) == [
        Skipped("main", "empty", "t.txt"),
        Framing("main", {"separator": len(SEP), "blank": 2}),
    ]


def test_the_cli_reads_escapes_in_a_separator(
    docs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = as_separated(tmp_path / "in", docs[:10], "\n\n")
    code, _ = run_cli(capsys, "prepare", str(source), "--out", str(tmp_path / "data"), "--doc-sep", "\\n\\n")
    assert code == 0
    assert load_manifest(tmp_path / "data").sources["main"].documents == 10


# -- refusals -------------------------------------------------------------------------------------


def jsonl_file(root: Path, *lines: str) -> Path:
    """A JSONL file of exactly `lines`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    return root / "c.jsonl"


def csv_file(root: Path, text: str) -> Path:
    """A CSV file of exactly `text`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "t.csv").write_text(text)
    return root / "t.csv"


BAD_INPUTS: list[tuple[str, Callable[[Path], Path], tuple[str, ...], str]] = [
    ("not JSON", lambda r: jsonl_file(r, '{"text": "ok"}', "not json"), (), "c.jsonl:2 is not JSON"),
    ("a list", lambda r: jsonl_file(r, "[1, 2]"), (), "c.jsonl:1 is an array, not an object"),
    (
        "no such field",
        lambda r: jsonl_file(r, '{"body": "x", "id": 1}'),
        (),
        "c.jsonl:1 has no field 'text'; its fields are: body, id; pass --text-field NAME",
    ),
    ("a number", lambda r: jsonl_file(r, '{"text": 7}'), (), "field 'text' holds a number, not a string"),
    (
        "a bad source",
        lambda r: jsonl_file(r, '{"text": "x", "src": "no way"}'),
        ("--source-field", "src"),
        "c.jsonl:1: source 'src' is 'no way', not a source name",
    ),
    (
        "no such column",
        lambda r: as_parquet(r, ["x"]),
        ("--text-column", "body"),
        "has no column 'body'; its columns are: id, text; pass --text-column NAME",
    ),
    (
        "not text",
        lambda r: as_parquet(r, ["x"]),
        ("--text-column", "id"),
        "column 'id' holds int64, not text",
    ),
    (
        "not Parquet",
        lambda r: jsonl_file(r, '{"text": "x"}').rename(r / "c.parquet"),
        (),
        "c.parquet cannot be read as Parquet",
    ),
    (
        "no such CSV column",
        lambda r: as_table(r, ["x"]),
        ("--text-field", "review"),
        "docs.csv has no column 'review'; its columns are: id, text; pass --text-column NAME",
    ),
    (
        "a short CSV row",
        lambda r: csv_file(r, 'id,text\n1,"one\ntwo"\n2\n'),
        (),
        "t.csv:4 holds 1 value(s) where the header names 2 columns",
    ),
    ("an open CSV quote", lambda r: csv_file(r, 'id,text\n1,ok\n2,"open\n'), (), "t.csv:3 is not CSV"),
    (
        "a CSV column twice",
        lambda r: csv_file(r, "text,text\na,b\n"),
        (),
        "t.csv: the header names column 'text' 2 times",
    ),
    ("an empty separator", lambda r: as_files(r, ["x"]), ("--doc-sep", ""), "--doc-sep is empty"),
    ("an unknown escape", lambda r: as_files(r, ["x"]), ("--doc-sep", "a\\q"), "has the escape \\q"),
    (
        "a tiny working set",
        lambda r: as_files(r, ["x"]),
        ("--working-set", "64K"),
        "--working-set 65536 bytes",
    ),
]


@pytest.mark.parametrize(("case", "write", "options", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_input_that_does_not_parse_is_refused_in_one_line(
    case: str,
    write: Callable[[Path], Path],
    options: tuple[str, ...],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write(tmp_path / "in")
    code, err = run_cli(capsys, "prepare", str(source), "--out", str(tmp_path / "data"), *options)
    assert code == 2 and message in err, err
    assert not (tmp_path / "data").exists()


# -- GATE-DATA-014 check bytes: every input byte a document's, kept or dropped, or framing --------


def mixed_corpus(root: Path) -> list[str]:
    """Every way prepare reads a byte, in two sources: text files (one with a byte-order mark and
    CRLF line ends, one blank, one binary, one cut by --doc-bytes), a separated file with blank
    stretches and no separator at its end, JSONL with blank, null and missing
    texts, Parquet with a null and a blank row, and a CSV table with a byte-order mark, CRLF row
    ends, a quoted value over two lines, a blank line and empty and blank values."""
    text, records = root / "text", root / "records"
    text.mkdir(parents=True)
    records.mkdir()
    body = stories(12, seed=5)
    (text / "crlf.txt").write_bytes(b"\xef\xbb\xbf" + body[0].replace("\n", "\r\n").encode())
    (text / "blank.txt").write_bytes(b" \n\t\n")
    (text / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (text / "long.txt").write_text("\n".join(body[1:6]), encoding="utf-8")
    (text / "sep.txt").write_text(
        f"  \n{SEP}".join(["", *body[6:9]]) + f"{SEP}\n \n{SEP}" + body[9], encoding="utf-8"
    )
    lines = [{"text": body[10]}, {"text": "  "}, {"text": None}, {"other": "no text field"}, {"text": "ü ok"}]
    (records / "docs.jsonl").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8"
    )
    table = pa.table({"text": [body[11], None, " \n", "ending"]})
    pq.write_table(table, records / "docs.parquet")
    rows = 'id,text\r\n1,"csv, quoted\r\nover two lines"\r\n2,\r\n\r\n3,  \r\n4,last row\r\n'
    (records / "rows.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    return [f"text={text}", f"records={records}"]


def _prepare_mixed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["prepare", *mixed_corpus(tmp_path / "in"), "--out", str(tmp_path / "data"), "--val-fraction", "0"]
    return run_cli(capsys, *argv, "--doc-sep", SEP, "--doc-bytes", "2K")


@pytest.mark.holds("GATE-DATA-014")
def test_every_byte_of_every_format_is_accounted_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The books of a corpus of every format add up to the byte: a text file by its size on disk,
    records by their text fields' UTF-8 bytes; a byte-order mark, separators, blank text and a
    binary file are framing, and nothing is left over."""
    code, err = _prepare_mixed(tmp_path, capsys)
    assert code == 0, err
    accounts = load_manifest(tmp_path / "data").accounting
    text = accounts["text"]
    files = sum(p.stat().st_size for p in (tmp_path / "in" / "text").iterdir())
    assert text.input_bytes == {"text_files": files} and text.altered_documents == 0
    assert set(text.framing_bytes) == {"byte_order_mark", "separator", "blank", "binary"}
    assert text.kept_bytes + sum(text.framing_bytes.values()) + sum(text.dropped_bytes.values()) == files
    fields = accounts["records"]
    body = stories(12, seed=5)
    texts = (
        body[10],
        "  ",
        "ü ok",
        body[11],
        " \n",
        "ending",
        "csv, quoted\r\nover two lines",
        "  ",
        "last row",
    )
    expected = sum(len(t.encode()) for t in texts)
    assert fields.input_bytes == {"text_fields": expected} and fields.framing_bytes == {"blank": 6}


def _tail_never_appended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the bytes left in the separator search's tail at the end of the file are
    never added, so the file's last document loses its last len(sep) − 1 bytes."""
    real = text_input._Between.add

    def add(self: Any, data: bytes, offset: int) -> None:
        if data and offset + len(data) == self.path.stat().st_size:
            return
        real(self, data, offset)

    monkeypatch.setattr(text_input._Between, "add", add)


def _whole_file_cut_by_a_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file read whole (or a piece of one cut by size) loses its last byte on its way to the filters."""
    real = text_input.document
    monkeypatch.setattr(
        text_input, "document", lambda source, text, *a, **k: real(source, text[:-1], *a, **k)
    )


def _record_text_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSONL record's text loses its first character between its parse and its document."""
    real = record_input._text_bytes
    monkeypatch.setattr(record_input, "_text_bytes", lambda text: real(text[1:]))


def _table_text_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV row's text loses its last character between the row read and its record."""
    real = table_input.record_item

    def cut(item: InputFile, at: str, parsed: tuple[dict[str, Any], bool], fields: Any, missing: Any) -> Any:
        record, invalid = parsed
        return real(item, at, ({**record, fields.text: record[fields.text][:-1]}, invalid), fields, missing)

    monkeypatch.setattr(table_input, "record_item", cut)


def _parquet_text_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Parquet row's document is made of the first half of its text's bytes."""
    real = record_input.document

    def cut(source: str, text: bytes, *args: Any, **options: Any) -> Any:
        return real(source, text[: len(text) // 2], *args, **options)

    monkeypatch.setattr(record_input, "document", cut)


@pytest.mark.gate("GATE-DATA-014")
@pytest.mark.parametrize(
    "plant",
    [_tail_never_appended, _whole_file_cut_by_a_byte, _record_text_cut, _parquet_text_cut, _table_text_cut],
)
def test_bytes_lost_on_the_way_from_an_input_stop_the_prepare(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """Each planted reader bug loses bytes of a document with no drop counted: every count of
    documents still adds up, the books of bytes do not. Exit 3 naming the gate, nothing published."""
    plant(monkeypatch)
    code, err = _prepare_mixed(tmp_path, capsys)
    assert code == 3 and "GATE-DATA-014" in err and ("went nowhere" in err or "not the bytes" in err), err
    assert not (tmp_path / "data").exists()


@pytest.mark.gate("GATE-DATA-014")
def test_one_byte_unaccounted_for_either_way_fires() -> None:
    """The judge over an account: exactly balanced holds; a byte short or over fires."""
    account = {
        "input_bytes": {"text_files": 100},
        "kept_bytes": 80,
        "dropped_bytes": {"oversize": 10},
        "framing_bytes": {"separator": 10},
        "altered_documents": 0,
    }
    assert judge("GATE-DATA-014", {"accounts": {"main": account}}) == []
    for kept in (79, 81):
        assert judge("GATE-DATA-014", {"accounts": {"main": {**account, "kept_bytes": kept}}})
    assert judge("GATE-DATA-014", {"accounts": {"main": {**account, "altered_documents": 1}}})


@pytest.mark.gate("GATE-DATA-014")
def test_verify_judges_the_byte_accounts_a_manifest_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack prepare --verify` re-judges each source's account from manifest.json: as written it
    holds, a byte taken from the kept documents fires."""
    assert _prepare_mixed(tmp_path, capsys)[0] == 0
    data = tmp_path / "data"
    assert run_cli(capsys, "prepare", "--verify", "--out", str(data))[0] == 0
    path = data / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["accounting"]["text"]["kept_bytes"] -= 1
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data))
    assert code == 3 and "GATE-DATA-014" in err and "went nowhere" in err, err
