"""Inputs as people have them: compressed files, UTF-16, files that
hold no text, a separator that never occurs, JSONL with a record missing its field, JSON Lines saved
as .json, a dataset folder with a README, blank files, and options that do not apply.

Each corpus is built in tmp_path and prepared through the real CLI where the message is what is
judged: a refusal is one line, exit 2, naming the file and what is wrong with it and a fix that
applies; a note names the files it is about.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import EXIT_BAD_INPUT, BadInput, GateViolation
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.data import json_array
from stack.data.corpus import InputFile, InputSpec, default_spec, discover
from stack.data.filters.droplog import DROP_LOG_FILE
from stack.data.filters.settings import dedup_flags
from stack.data.heldout import heldout_batches
from stack.data.manifest import load_manifest
from stack.data.sft_reader import sft_heldout_batches
from stack.data.unpack import readable
from stack.eval.texts import split_text
from stack.train.config import resolve
from stack.train.early_stop import judge_heldout_set
from stack.train.presets import PRESETS
from tests.support import corpora
from tools.integrity.record_checks import check_record_truth

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": zstandard.ZstdCompressor().compress,
}
UTF: dict[str, Callable[[str], bytes]] = {
    "utf-16-le": lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
    "utf-16-be": lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
    "utf-32": lambda text: text.encode("utf-32"),  # with its byte-order mark
}


def prepare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`stack prepare ARGV`; a refusal must be one line without a traceback."""
    code = main(["prepare", *argv])
    out, err = capsys.readouterr()
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, out, err


def records(texts: list[str], field: str = "text") -> str:
    return "".join(json.dumps({field: text}) + "\n" for text in texts)


TEXTS = [corpora.english_text(i) for i in range(8)]
REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(64)


# -- compressed and UTF-16/32 files are read, files without text are named ----------------------------


def test_compressed_and_utf16_files_prepare_the_documents_of_their_plain_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of only .gz, .bz2, .xz, .zst, UTF-16 and UTF-32 files holds
    the same documents as its plain UTF-8 twin; the user's files are left as they were."""
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    (plain / "data.jsonl").write_text(records(TEXTS[:4]))
    (packed / "data.jsonl.gz").write_bytes(gzip.compress(records(TEXTS[:4]).encode()))
    for number, (suffix, compress) in enumerate(COMPRESS.items()):
        (plain / f"t{number}.txt").write_text(TEXTS[4 + number])
        (packed / f"t{number}.txt{suffix}").write_bytes(compress(TEXTS[4 + number].encode()))
    for number, encode in enumerate(UTF.values()):
        (plain / f"u{number}.txt").write_text(corpora.english_text(20 + number))
        (packed / f"u{number}.txt").write_bytes(encode(corpora.english_text(20 + number)))
    before = {path.name: path.read_bytes() for path in packed.iterdir()}
    for folder in (plain, packed):
        code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / f"{folder.name}-data"))
        assert code == 0, err
    a, b = load_manifest(tmp_path / "plain-data"), load_manifest(tmp_path / "packed-data")
    assert a.totals == b.totals and a.filters["main"].documents_in == b.filters["main"].documents_in == 11
    assert split_text(tmp_path / "plain-data", "train") == split_text(tmp_path / "packed-data", "train")
    assert {path.name: path.read_bytes() for path in packed.iterdir()} == before
    published = [*(tmp_path / "packed-data").rglob("*.txt"), *(tmp_path / "packed-data").rglob(".unpacked")]
    assert published == []  # the copies read in the files' place are never published


@given(
    # No NUL: UTF-16's mark followed by one is UTF-32's mark, and a NUL is no text anyway.
    text=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=300),
    compression=st.sampled_from([None, *COMPRESS]),
    encoding=st.sampled_from([None, *UTF]),
)
@settings(max_examples=60)
def test_a_copy_read_in_a_files_place_is_its_text_in_utf8(
    text: str, compression: str | None, encoding: str | None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("unpack")
    data = UTF[encoding](text) if encoding else text.encode("utf-8")
    name = "doc.txt" + (compression or "")
    (root / name).write_bytes(COMPRESS[compression](data) if compression else data)
    item = InputFile("main", root / name, name)
    copy = readable(item, root / "scratch", 0)
    assert copy.label == name and copy.given == root / name
    if compression is None and encoding is None:
        assert copy == item  # a UTF-8 file is read where it is
    else:
        assert copy.path.read_bytes() == text.encode("utf-8") and copy.path.name == "doc.txt"


def test_a_folder_without_text_is_refused_naming_each_file_and_its_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "logo.png").write_bytes(PNG)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(1, 200)))
    (folder / "old.txt").write_bytes("Windows notepad, no mark".encode("utf-16-le"))
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and "3 file(s) found under the inputs, all binary or empty" in err
    assert "logo.png: a PNG image" in err and "notes.pdf: a PDF (extract its text" in err
    assert "old.txt: text in UTF-16 without a byte-order mark (convert it: iconv -f utf-16le" in err
    assert not (tmp_path / "data").exists()


def _tar(texts: list[str]) -> bytes:
    """A tar archive of text files: binary by its NUL-padded headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for number, text in enumerate(texts):
            data = text.encode()
            info = tarfile.TarInfo(f"files/f{number}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_only_a_file_read_as_text_is_said_to_be_cut_by_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A bundle.tar.gz over --doc-bytes must not be said to be "cut into about 2 documents"
    and then skipped as a tar archive, two notes that contradict each other. The cut note is said of a
    file the reader reads as text alone, by the sniff the reader skips binaries by."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bundle.tar.gz").write_bytes(gzip.compress(_tar(TEXTS)))
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(1, 200)) * 20)  # no NUL, binary still
    (folder / "long.txt").write_text("\n".join(TEXTS))
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"), "--doc-bytes", "1K")
    assert code == 0, err
    cut = [line for line in caplog.text.splitlines() if "is read without --doc-sep" in line]
    assert len(cut) == 1 and "long.txt (" in cut[0], cut
    assert "bundle.tar.gz: a tar archive (unpack it)" in caplog.text and "notes.pdf: a PDF" in caplog.text


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_damaged_compressed_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """Cut short, even inside its first block (zstandard's own reader returns nothing and no error)."""
    whole = COMPRESS[suffix](records(TEXTS).encode())
    for cut in (len(whole) - 30, len(whole) // 2):
        path = tmp_path / f"data-{cut}.jsonl{suffix}"
        path.write_bytes(whole[:cut])
        code, _, err = prepare(capsys, str(path), "--out", str(tmp_path / f"data-{cut}"))
        assert code == EXIT_BAD_INPUT and f"{path} is damaged" in err and "leave it out" in err, err


def test_a_zstd_file_of_several_frames_is_read_to_its_last(tmp_path: Path) -> None:
    """`zstd` run on pieces and concatenated (`cat a.zst b.zst`) is one valid file of several frames."""
    compress = COMPRESS[".zst"]
    path = tmp_path / "joined.jsonl.zst"
    path.write_bytes(b"".join(compress(records([text]).encode()) for text in TEXTS))
    copy = readable(InputFile("main", path, path.name), tmp_path / "scratch", 0)
    assert copy.path.read_text() == records(TEXTS)


# -- a separator that never occurs, a record too long -------------------------------------------------


def test_a_separator_that_never_occurs_reads_the_file_without_it_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A 20 MB file with a --doc-sep that never occurs is not one document, dropped as oversize and
    refused with "cut the documents with --doc-sep": it is cut by --doc-bytes like any file
    without a separator, and a note names it and the smaller file, which stays whole."""
    folder = tmp_path / "in"
    folder.mkdir()
    big = corpora.write_big_file(folder / "big.txt", 300_000)
    (folder / "small.txt").write_text(TEXTS[0])
    filters = tmp_path / "filters.yaml"
    filters.write_text(yaml.safe_dump({"oversize": {"max_bytes": 100_000}}))
    code, _, err = prepare(
        capsys, str(folder), "--out", str(tmp_path / "data"), "--doc-sep", "<|endoftext|>",
        "--doc-bytes", "64K", "--filters", str(filters), "--val-fraction", "0",
    )  # fmt: skip
    assert code == 0, err
    assert "--doc-sep '<|endoftext|>' never occurs in these file(s)" in caplog.text
    assert ": big.txt (" in caplog.text and "); small.txt (" in caplog.text
    report = load_manifest(tmp_path / "data").filters["main"]
    assert report.dropped == {} and report.documents_in > 1 + big.stat().st_size // (64 << 10)


def test_an_oversize_record_is_named_with_its_size_and_line_and_a_fix_that_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "books.jsonl"
    long = corpora.english_text(9, sentences=400)
    path.write_text(records([long, long[::-1]]))
    filters = tmp_path / "filters.yaml"
    filters.write_text(yaml.safe_dump({"oversize": {"max_bytes": len(long) - 1}}))
    code, _, err = prepare(capsys, str(path), "--out", str(tmp_path / "data"), "--filters", str(filters))
    assert code == EXIT_BAD_INPUT and "main: 2 in, all dropped (oversize 2)" in err
    assert "e.g. books.jsonl:1 (" in err and "KiB): '" in err
    assert "raise oversize.max_bytes with --filters FILE" in err and "--doc-sep" not in err


# -- mis-encoded text is named (tests/data/test_data_filters.py drops it) -----------------------------


# -- JSONL as found -----------------------------------------------------------------------------------


def test_a_record_missing_its_field_is_skipped_by_line_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """One record of fifty without `text` is not refused with "pass --text-field NAME", the wrong fix
    for the other 49: it is skipped, counted and named by its line. A file where no record has the field
    is refused with that fix."""
    rows = [json.dumps({"text": corpora.english_text(i, sentences=4)}) for i in range(50)]
    rows[7] = json.dumps({"title": "no text here"})
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(rows) + "\n")
    code, out, err = prepare(capsys, str(path), "--out", str(tmp_path / "data"))
    assert code == 0, err
    assert "note: skipped 1 record(s) without the text field: a.jsonl:8" in caplog.text
    assert "and 1 record(s) without the text field" in out
    manifest = load_manifest(tmp_path / "data")
    assert manifest.sources["main"].missing_field_skipped == 1 and manifest.filters["main"].documents_in == 49
    path.write_text(records(TEXTS, field="content"))
    code, _, err = prepare(capsys, str(path), "--out", str(tmp_path / "other"))
    assert code == EXIT_BAD_INPUT
    assert "a.jsonl:1 has no field 'text'; its fields are: content; pass --text-field NAME" in err


def test_json_lines_saved_as_json_are_read_as_records_and_a_json_document_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "train.json").write_text(records(TEXTS[:5]))
    (folder / "config.json").write_text(json.dumps({"name": "corpus", "size": 5}, indent=2) + "\n")
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"), "--val-fraction", "0")
    assert code == 0, err
    assert "note: these .json file(s) hold JSON Lines, read one record a line" in caplog.text
    assert caplog.text.count("train.json") == 1 and "config.json" not in caplog.text
    assert load_manifest(tmp_path / "data").filters["main"].documents_in == 6
    assert all(text in split_text(tmp_path / "data", "train") for text in TEXTS[:5])


def test_format_jsonl_over_a_dataset_folder_leaves_its_readme_out_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A dataset\n")
    (folder / "data" / "train-00000.jsonl").write_text(records(TEXTS))
    code, _, err = prepare(capsys, str(folder), "--format", "jsonl", "--out", str(tmp_path / "data"))
    assert code == 0, err
    assert (
        "are not JSON Lines (their first line is no JSON) and were left out; read only the JSONL files "
        in (caplog.text)
    )
    assert "with --glob '*.jsonl': README.md" in caplog.text
    assert load_manifest(tmp_path / "data").filters["main"].documents_in == len(TEXTS)
    (folder / "data" / "broken.jsonl").write_text("not json\n")  # a JSONL file that does not parse is refused
    code, _, err = prepare(capsys, str(folder), "--format", "jsonl", "--out", str(tmp_path / "other"))
    assert code == EXIT_BAD_INPUT and "broken.jsonl:1 is not JSON" in err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60)
@given(
    values=st.lists(JSON_VALUES, max_size=12), indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 64)
)
def test_an_array_read_in_chunks_gives_back_every_element(
    tmp_path_factory: pytest.TempPathFactory, values: list[object], indent: int | None, chunk: int
) -> None:
    """Whatever the chunk size, numbers and strings cut across chunks included, the elements come back
    as json.load reads them, and every byte is counted once."""
    path = tmp_path_factory.mktemp("array") / "rows.json"
    path.write_text(json.dumps(values, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    counted: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_array, "CHUNK_BYTES", chunk)
        read = [value for _, value, _ in json_array.array_elements(path, "rows.json", counted.append)]
    assert read == json.loads(path.read_text(encoding="utf-8"))
    assert sum(counted) == path.stat().st_size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"text": "a"} {"text": "b"}]', "rows.json[1] is not JSON (expected ',' or ']'"),
        ('[{"text": "a"}, {"text": ', "rows.json[1] is not JSON (Expecting value)"),
        ('[{"text": "a"},]', "rows.json[1] is not JSON (Expecting value)"),
        ('[{"text": "a"}] [', "rows.json goes on after its array's closing ']'"),
    ],
)
def test_a_malformed_array_is_refused_naming_the_element(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rows.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=re.escape(message)):
        list(json_array.array_elements(path, "rows.json", lambda _n: None))


def test_a_json_array_of_records_is_read_one_record_an_element(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Alpaca's and ShareGPT's files are one JSON array: read as text they would teach JSON punctuation."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"text": text, "id": i} for i, text in enumerate(TEXTS)]
    (folder / "rows.json").write_text(json.dumps(rows, indent=2))
    (folder / "alpaca.json").write_text(json.dumps([{"instruction": TEXTS[0], "output": TEXTS[1]}]))
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"), "--val-fraction", "0")
    assert code == 0, err
    assert (
        "hold an array of records or texts, read one document an element (--format text reads a file "
        "whole): rows.json" in (caplog.text)
    )
    assert (
        "without the text field and were read whole as text; to learn their records' text instead, pass "
        in (caplog.text)
    )
    assert load_manifest(tmp_path / "data").filters["main"].documents_in == len(TEXTS) + 1
    train = split_text(tmp_path / "data", "train")
    assert all(text in train for text in TEXTS) and '"id": 3' not in train
    code, _, err = prepare(
        capsys, str(folder / "alpaca.json"), "--text-field", "output", "--out", str(tmp_path / "alpaca")
    )
    assert code == 0, err
    assert (
        TEXTS[1] in split_text(tmp_path / "alpaca", "train")
        and "instruction" not in caplog.text.split("alpaca")[-1]
    )


def test_a_json_array_of_texts_is_read_one_document_a_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`json.dump(texts, f)` is how many people save a list of documents: each string is one
    document, never the file's JSON read as text."""
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    code, _, err = prepare(
        capsys, str(tmp_path / "texts.json"), "--out", str(tmp_path / "data"), "--val-fraction", "0"
    )
    assert code == 0, err
    assert "hold an array of records or texts, read one document an element" in caplog.text
    assert load_manifest(tmp_path / "data").filters["main"].documents_in == len(TEXTS)
    train = split_text(tmp_path / "data", "train")
    assert all(text in train for text in TEXTS) and '", "' not in train
    code, _, err = prepare(
        capsys, str(tmp_path / "texts.json"), "--source-field", "site", "--out", str(tmp_path / "o")
    )
    assert code == EXIT_BAD_INPUT and "texts.json[0] is a string, which has no field 'site'" in err


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"text": "a"}, 3],
            "rows.json[1] is a number, not an object or a string; each element of the array must be one",
        ),
        (
            [{"body": "a"}, {"body": "b"}],
            "rows.json[0] has no field 'text'; its fields are: body; pass --text-field NAME",
        ),
    ],
)
def test_format_jsonl_refuses_an_array_naming_the_element(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[object], message: str
) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    code, _, err = prepare(capsys, str(path), "--format", "jsonl", "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and message in err, err


# -- other inputs and options -------------------------------------------------------------------------


def test_no_glob_is_not_named_when_none_was_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = prepare(capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and "no files under" in err and "--glob" not in err
    code, _, err = prepare(capsys, str(tmp_path / "empty"), "--glob", "*.md", "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and "no files matched --glob *.md" in err


@pytest.mark.holds("GATE-DATA-014")
def test_a_blank_file_or_record_is_empty_not_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "blank.txt").write_text(" \n\t\n  \n")
    (folder / "doc.txt").write_text(TEXTS[0])
    (folder / "a.jsonl").write_text(records([TEXTS[1], "   \n "]))
    code, out, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"))
    assert code == 0, err
    stats = load_manifest(tmp_path / "data").sources["main"]
    assert (stats.documents, stats.empty_skipped) == (2, 2) and "skipped 0 binary and 2 empty" in out


def test_a_field_option_that_does_not_apply_is_refused_or_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "doc.txt").write_text(TEXTS[0])
    code, _, err = prepare(
        capsys, str(folder), "--format", "text", "--text-field", "body", "--out", str(tmp_path / "data")
    )
    assert code == EXIT_BAD_INPUT and "--text-field body names a JSONL field or a Parquet or CSV" in err
    code, _, err = prepare(capsys, str(folder), "--text-field", "body", "--out", str(tmp_path / "data"))
    assert code == 0, err
    assert (
        "note: --text-field body applies to files of records (JSONL, JSON, Parquet, CSV, TSV)" in caplog.text
    )
    assert "1 file(s) are read as text, whole: doc.txt" in caplog.text
    (folder / "chat.jsonl").write_text(records(TEXTS[:2]))
    code, _, err = prepare(
        capsys,
        str(folder / "chat.jsonl"),
        "--format",
        "chat",
        "--text-field",
        "body",
        "--out",
        str(tmp_path / "c"),
    )
    assert code == EXIT_BAD_INPUT and err.rstrip().endswith("whose fields it knows; drop --text-field"), err


# -- a table's text column is its documents -----------------------------------


def test_a_csv_with_the_text_column_is_read_by_its_rows_and_one_without_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`reviews.csv --text-field review` is not one document of header, ids, ratings and quotes: each
    review is a document, and the other columns are in none. A table without the column named
    is read whole as text only when no --text-field was given for it, and a note says how to read it."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows = "".join(f'{i},{1 + i % 5},"{text}"\n' for i, text in enumerate(TEXTS))
    (folder / "reviews.csv").write_text("id,rating,review\n" + rows)
    code, _, err = prepare(capsys, str(folder), "--text-field", "review", "--out", str(tmp_path / "rows"))
    assert code == 0, err
    stats = load_manifest(tmp_path / "rows").sources["main"]
    assert (stats.files, stats.documents) == (1, len(TEXTS))
    fields = load_manifest(tmp_path / "rows").accounting["main"].input_bytes
    assert fields == {"text_fields": sum(len(text.encode()) for text in TEXTS)}
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "whole"), "--doc-bytes", "1M")
    assert code == 0, err
    assert load_manifest(tmp_path / "whole").sources["main"].documents == 1  # whole: not cut, not by rows
    assert "CSV/TSV file(s) have no column named by --text-field (default text)" in caplog.text
    assert "pass --text-field NAME" in caplog.text and "reviews.csv" in caplog.text


def test_a_table_is_split_at_the_delimiter_its_header_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spreadsheet saved where the decimal mark is a comma separates by semicolons; a bar and a
    tab work too, and `.tsv` is split at tabs whatever its header holds."""
    folder = tmp_path / "in"
    folder.mkdir()
    plain = [" ".join(text.replace('"', " ").split()) for text in TEXTS[:2]]  # one line, no quote
    for name, mark in (("semi.csv", ";"), ("bar.csv", "|"), ("tab.csv", "\t"), ("t.tsv", "\t")):
        rows = "".join(f"{i}{mark}{text.replace(mark, ' ')}\n" for i, text in enumerate(plain))
        (folder / name).write_text(f"id{mark}text\n{rows}")
    code, _, err = prepare(capsys, str(folder), "--out", str(tmp_path / "data"))
    assert code == 0, err
    assert load_manifest(tmp_path / "data").sources["main"].documents == 8


# -- sources whose records keep their text under different names ---------------


def test_each_source_can_name_its_own_text_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """web keeps its text in `text`, code in `content`: one global --text-field broke the other
    source and its refusal advised the option that broke the first. `--text-field code=content`
    names code's field alone, and the refusal of either says so."""
    (tmp_path / "web.jsonl").write_text(records(TEXTS[:4]))
    (tmp_path / "code.jsonl").write_text(records(TEXTS[4:], "content"))
    inputs = (f"web={tmp_path / 'web.jsonl'}", f"code={tmp_path / 'code.jsonl'}")
    code, _, err = prepare(capsys, *inputs, "--out", str(tmp_path / "d"))
    assert code == EXIT_BAD_INPUT and "or --text-field code=NAME for source code alone" in err, err
    code, _, err = prepare(capsys, *inputs, "--text-field", "content", "--out", str(tmp_path / "d"))
    assert code == EXIT_BAD_INPUT and "or --text-field web=NAME for source web alone" in err, err
    code, _, err = prepare(capsys, *inputs, "--text-field", "code=content", "--out", str(tmp_path / "d"))
    assert code == 0, err
    manifest = load_manifest(tmp_path / "d")
    assert {name: stats.documents for name, stats in manifest.sources.items()} == {"code": 4, "web": 4}
    argv = ("--text-field", "content", "--text-field", "web=text")  # one for all, one source's own
    code, _, err = prepare(capsys, *inputs, *argv, "--out", str(tmp_path / "e"))
    assert code == 0, err
    assert {name: stats.documents for name, stats in load_manifest(tmp_path / "e").sources.items()} == {
        "code": 4,
        "web": 4,
    }
    for options, message in (
        (("cod=content",), "--text-field cod=content names source 'cod', but the sources are: code, web"),
        (("code=content", "code=body"), "names the field of source 'code' twice (content, body)"),
        (("content", "body"), "--text-field is given 2 times (content, body)"),
        (("code=",), "--text-field code= names no field for source 'code'; give one"),
    ):
        argv = tuple(item for option in options for item in ("--text-field", option))
        code, _, err = prepare(capsys, *inputs, *argv, "--out", str(tmp_path / "f"))
        assert code == EXIT_BAD_INPUT and message in err, err


def test_the_filter_option_says_it_replaces_the_default_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--help"]) == 0
    assert "the filters named replace the default list" in " ".join(capsys.readouterr().out.split())


def test_drops_in_a_compressed_file_are_logged_under_its_own_name(tmp_path: Path) -> None:
    """The drop log and the examples name the file the user gave, not the copy read in its place."""
    path = tmp_path / "web.txt.gz"
    path.write_bytes(gzip.compress(corpora.loop("region ").encode()))
    (tmp_path / "ok.txt").write_text(TEXTS[0])
    assert main(["prepare", str(path), str(tmp_path / "ok.txt"), "--out", str(tmp_path / "data")]) == 0
    (line,) = (tmp_path / "data" / DROP_LOG_FILE).read_text().splitlines()
    assert json.loads(line)["where"] == "web.txt.gz"
    assert (
        load_manifest(tmp_path / "data").filters["main"].examples["low_diversity"].startswith("web.txt.gz:")
    )


def _fs(name: bytes) -> str:
    """A file name of these bytes, as Python hands it over (a byte that is not UTF-8: a lone surrogate)."""
    return os.fsdecode(name)


def test_a_name_that_is_not_utf8_is_written_with_its_bytes_escaped_and_refuses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A Latin-1 file name whose document the diversity filter drops must not refuse the whole
    corpus (exit 2, "a text it read holds a lone surrogate ... in JSON, \\uD800-\\uDFFF escapes
    must come as high/low pairs") because the drop log cannot hold the name. Every name prepare writes
    or says has its bytes that are not UTF-8 written as \\xNN: the drop log, the manifest's examples,
    the notes and the evidence record (which the checker passes), for a document kept and one dropped,
    at the top and in a directory whose name is not UTF-8, under an INPUT whose name is not UTF-8."""
    folder = tmp_path / _fs(b"in\xe9")
    sub = folder / _fs(b"sub\xe9")
    sub.mkdir(parents=True)
    for where, seed in ((folder, 0), (sub, 1)):
        (where / _fs(b"loop\xe9.txt")).write_text(corpora.loop(f"region {seed} "))
        (where / _fs(b"kept\xe9.txt")).write_text(TEXTS[seed])
    (sub / _fs(b"logo\xe9.png")).write_bytes(PNG)
    data, ledger = tmp_path / "data", tmp_path / "ledger"
    code, _, err = prepare(capsys, str(folder), "--out", str(data), "--evidence-dir", str(ledger))
    assert code == 0, err
    rows = [json.loads(line) for line in (data / DROP_LOG_FILE).read_text(encoding="utf-8").splitlines()]
    assert sorted(row["where"] for row in rows) == ["loop\\xe9.txt", "sub\\xe9/loop\\xe9.txt"]
    manifest = load_manifest(data)
    assert manifest.filters["main"].examples["low_diversity"].startswith("loop\\xe9.txt: ")
    assert manifest.sources["main"].documents == 2  # the kept ones, at the top and below
    assert "sub\\xe9/logo\\xe9.png: a PNG image" in caplog.text
    (filed,) = ledger.glob("*/metadata.json")
    record = read_evidence(filed)
    assert record.run.argv[2] == record.config["inputs"][0] == f"{tmp_path}/in\\xe9"
    assert record.run.places == {f"{tmp_path}/in\\xe9": f"{tmp_path.resolve()}/in\\xe9"}
    assert check_record_truth(record, filed.parent, load_spec()).violations == []


# -- what a directory walk reads ----------------------------------------------------------------------


def _names(files: list[InputFile]) -> list[str]:
    return [item.name for item in files]


def test_a_linked_directory_is_read_and_a_link_back_up_the_tree_once(tmp_path: Path) -> None:
    """Corpora are assembled with links (`ln -s ~/data/ru corpus/ru`): the linked files are the
    corpus too, and a link to an ancestor does not read the tree again."""
    outside, corpus = tmp_path / "ru", tmp_path / "corpus"
    outside.mkdir()
    corpus.mkdir()
    (outside / "a.txt").write_text(TEXTS[0])
    (corpus / "b.txt").write_text(TEXTS[1])
    (corpus / "ru").symlink_to(outside, target_is_directory=True)
    (corpus / "loop").symlink_to(corpus, target_is_directory=True)
    assert _names(discover([InputSpec("main", corpus)], tmp_path / "data")) == ["b.txt", "ru/a.txt"]


def test_a_site_packages_directory_of_a_users_corpus_is_read(tmp_path: Path) -> None:
    """site-packages is left out of the standard library's default corpus only: in a user's
    corpus (a vendored library, a virtual environment given on purpose) it is text like the rest."""
    lib = tmp_path / "venv" / "lib" / "site-packages" / "click"
    lib.mkdir(parents=True)
    (lib / "core.py").write_text("def main():\n    return 0\n")
    found = discover([InputSpec("main", tmp_path / "venv")], tmp_path / "data")
    assert _names(found) == ["lib/site-packages/click/core.py"]
    assert "site-packages" in default_spec(None).skip_dirs


def test_a_data_dir_inside_an_input_is_left_out_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A DATA_DIR prepared earlier into the corpus folder holds tokens, not text: its manifest and
    shards are left out, and the screen says which directory."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(TEXTS):
        (corpus / f"{i}.txt").write_text(text)
    assert prepare(capsys, str(corpus), "--out", str(corpus / "old"))[0] == 0
    assert prepare(capsys, str(corpus), "--out", str(tmp_path / "data"))[0] == 0
    assert f"left out {corpus / 'old'}: it is a DATA_DIR" in caplog.text
    assert load_manifest(tmp_path / "data").sources["main"].files == len(TEXTS)


def test_a_named_pipe_given_as_input_is_refused_as_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack prepare pipe` said "no files under pipe (hidden files and directories
    are left out); give a directory", of a named pipe. It says what the input is, and the fix."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    code, _, err = prepare(capsys, str(pipe), "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT
    assert f"input {pipe} is a named pipe, not a file or a directory" in err, err
    assert f"cat {pipe} > corpus.txt" in err and "no files under" not in err
    assert not (tmp_path / "data").exists()


def test_a_named_pipe_in_a_directory_is_left_out_by_name_never_opened(tmp_path: Path) -> None:
    """A pipe in the corpus folder is named in a note and never opened (an open waits for a writer
    that never comes): prepare ends, in its own process under a timeout, with the folder's text."""
    corpus = tmp_path / "corpus"
    (corpus / "logs").mkdir(parents=True)
    (corpus / "a.txt").write_text(TEXTS[0])
    os.mkfifo(corpus / "logs" / "live")
    done = subprocess.run(
        [sys.executable, "-m", "stack", "prepare", str(corpus), "--out", str(tmp_path / "data")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert "note: left out 1 named pipe(s), socket(s) or device(s)" in done.stderr
    assert "logs/live (a named pipe)" in done.stderr and "cat PIPE > FILE" in done.stderr
    assert load_manifest(tmp_path / "data").sources["main"].files == 1


def test_a_source_the_records_name_can_be_waived_and_a_misspelt_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --source-field the sources come from the records, so the waiver prepare's own warnings
    advise (`--no-filter blog --reason ...`) is taken, and one naming no record's source is refused
    once the records are read."""
    rows = [{"text": text, "site": "blog" if i % 2 else "news"} for i, text in enumerate(TEXTS)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = [str(tmp_path / "s.jsonl"), "--source-field", "site"]
    code, _, err = prepare(
        capsys, *base, "--out", str(tmp_path / "a"), "--no-filter", "blog", "--reason", "read by hand"
    )
    assert code == 0, err
    assert load_manifest(tmp_path / "a").filters["blog"].waiver == "read by hand"
    code, _, err = prepare(
        capsys, *base, "--out", str(tmp_path / "b"), "--no-filter", "blgo", "--reason", "x"
    )
    assert (
        code == EXIT_BAD_INPUT
        and "--no-filter blgo: no record named source 'blgo' in its field 'site'" in err
    )
    assert "(sources met: blog, news)" in err


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_record_with_a_huge_integer_is_read_for_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """JSON allows integers of any length; Python converts at most 4,300 digits. A huge id beside
    the text ended prepare in an internal error."""
    huge = "9" * 5000
    lines = [f'{{"id": {huge}, "text": {json.dumps(text)}}}' for text in TEXTS]
    body = "\n".join(lines) + "\n" if suffix == ".jsonl" else "[" + ",".join(lines) + "]"
    (tmp_path / f"rows{suffix}").write_text(body)
    code, _, err = prepare(capsys, str(tmp_path / f"rows{suffix}"), "--out", str(tmp_path / "data"))
    assert code == 0, err
    assert load_manifest(tmp_path / "data").filters["main"].documents_in == len(TEXTS)


def test_a_prepare_whose_held_out_split_is_empty_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two documents at the default --val-fraction: neither is held out, which `stack train` then
    refuses; prepare says it when it happens, with the fix (more documents: two are too few for any
    fraction of them to be a share of the text)."""
    corpus = corpora.write_files(tmp_path / "in", TEXTS[:2])
    whole = ("--doc-bytes", "1M")  # two documents, as written
    code, out, err = prepare(capsys, str(corpus), "--out", str(tmp_path / "data"), *whole)
    assert code == 0, err
    assert load_manifest(tmp_path / "data").totals["heldout"].tokens == 0
    assert "warning: the held-out split is empty: none of the 2 documents landed in it" in out
    assert "cut the text into more documents (--doc-bytes SIZE" in out and "raise --val-fraction" not in out
    code, out, err = prepare(
        capsys, str(corpus), "--out", str(tmp_path / "half"), "--val-fraction", "0.5", *whole
    )
    assert code == 0 and load_manifest(tmp_path / "half").totals["heldout"].tokens > 0, err
    assert "held-out split is empty" not in out


def _refused_presets(data: Path) -> list[str]:
    """The presets whose held-out set the training loop refuses for `data`: its own readers draw it
    (windows of the model's context, or of fine-tuning data's pack length) and its own check of
    its check of the set judges it (GATE-EVAL-001: a window in it twice)."""
    manifest = load_manifest(data)
    refused = []
    for name in PRESETS:
        config = resolve(name, None, [], vocab=manifest.tokenizer.vocab_size)
        size = (config.train.batch_size, config.eval.batches)
        try:
            if manifest.sft is None:
                drawn = heldout_batches(data, size[0], config.model.ctx, size[1])
            else:
                drawn = [b.tokens for b in sft_heldout_batches(data, size[0], manifest.sft.pack_len, size[1])]
            judge_heldout_set(drawn, lambda: None)
        except (BadInput, GateViolation):
            refused.append(name)
    return refused


def _short_presets_said(out: str) -> list[str] | None:
    """The presets prepare's note names as too much for its held-out split; None without the note."""
    found = re.search(
        r"too few distinct windows for the evaluation of --preset ([\w, ]+), which `stack \w+` refuses", out
    )
    return None if found is None else found.group(1).split(", ")


def test_a_held_out_split_smaller_than_a_preset_s_set_is_no_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Documents are held out whole, so a split of a few short ones can hold far less of the text
    than --val-fraction says of the documents, fewer windows than a preset's held-out set. The
    training loop evaluates such a split whole (GATE-EVAL-001 rev 6), so no preset refuses it, and
    prepare names none."""
    texts = [corpora.english_text(seed, 40) for seed in range(40)]
    corpus = corpora.write_files(tmp_path / "few", texts)
    code, out, err = prepare(
        capsys, str(corpus), "--out", str(tmp_path / "few-data"), "--val-fraction", "0.2"
    )
    assert code == 0 and load_manifest(tmp_path / "few-data").totals["heldout"].tokens > 0, err
    assert _refused_presets(tmp_path / "few-data") == [] and _short_presets_said(out) is None, out


def test_a_held_out_split_of_few_examples_is_no_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fine-tuning data is evaluated in windows of its pack length: a split of fewer of them than a
    preset's set is evaluated whole by `stack sft`, so prepare names no preset."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(corpora.chat_records(0, 400, 0)) + "\n", encoding="utf-8")
    argv = ["--format", "chat", "--pack-len", "600", "--val-fraction", "0.2", "--out", str(tmp_path / "d")]
    code, out, err = prepare(capsys, str(chat), *argv)
    assert code == 0, err
    assert _refused_presets(tmp_path / "d") == [] and _short_presets_said(out) is None, out


def test_a_held_out_split_of_repeated_examples_is_judged_by_its_distinct_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sixty examples, each three times: a copy lands on its original's side, so the held-out split
    holds 102 windows of 34 distinct ones. Smoke's 16 batches of 4 land on copies; the loop reads
    the same windows one a batch (contracts.heldout), held to 16 distinct ones, so no preset is
    refused, prepare names none, and `--verify` passes the setting."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(corpora.chat_records(0, 60, 0) * 3) + "\n", encoding="utf-8")
    data = tmp_path / "d"
    argv = ["--format", "chat", "--pack-len", "600", "--val-fraction", "0.5", "--out", str(data)]
    code, out, err = prepare(capsys, str(chat), *argv)
    assert code == 0 and load_manifest(data).sft.examples["heldout"] == 102, err
    # kept, and said so apart from the skips (it stood among them as "120 duplicate document(s)")
    assert "; kept 120 example(s) that repeat an earlier one" in out, out
    assert _refused_presets(data) == [] and _short_presets_said(out) is None, out
    code, _, err = prepare(capsys, "--verify", "--out", str(data), "--seq-len", "600", "--batch-size", "4")
    assert code == 0, err


def test_a_held_out_split_of_few_examples_written_many_times_names_dedup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eight examples, each twenty times: the held-out split holds dozens of windows of a few
    distinct ones, fewer than the 16 a set of single windows is held to. The note names the refused
    presets and the fix, since a larger --val-fraction holds the copies too: the default filters
    with dedup, after which the split is smaller than any set, is evaluated whole, and no preset is
    refused. `--verify` refuses the setting as the run would."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(corpora.chat_records(0, 8, 0) * 20) + "\n", encoding="utf-8")
    argv = ["--format", "chat", "--pack-len", "600", "--val-fraction", "0.5"]
    code, out, err = prepare(capsys, str(chat), *argv, "--out", str(tmp_path / "d"))
    assert code == 0, err
    refused = _refused_presets(tmp_path / "d")
    assert "smoke" in refused and _short_presets_said(out) == refused, out
    advised = dedup_flags()
    assert f"prepare again with {advised}, which keeps the first of each" in out, out
    code, _, err = prepare(
        capsys, "--verify", "--out", str(tmp_path / "d"), "--seq-len", "600", "--batch-size", "4"
    )
    assert code == EXIT_BAD_INPUT and "[GATE-EVAL-001]" in err and advised in err, err
    code, out, err = prepare(
        capsys, str(chat), *argv, "--out", str(tmp_path / "deduplicated"), *advised.split()
    )
    assert code == 0 and _refused_presets(tmp_path / "deduplicated") == [], err
    assert _short_presets_said(out) is None, out


def test_a_nested_field_is_named_by_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exports nest the text (`{"data": {"text": ...}, "meta": {"site": ...}}`): `--text-field
    data.text` and `--source-field meta.site` read it; `--text-field data` says how to name it."""
    rows = [
        {"data": {"text": text}, "meta": {"site": "blog" if i % 2 else "news"}}
        for i, text in enumerate(TEXTS)
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = [str(tmp_path / "rows.jsonl"), "--val-fraction", "0"]
    code, _, err = prepare(
        capsys,
        *base,
        "--text-field",
        "data.text",
        "--source-field",
        "meta.site",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 0, err
    manifest = load_manifest(tmp_path / "a")
    assert {name: stats.documents for name, stats in manifest.sources.items() if stats.documents} == {
        "blog": 4,
        "news": 4,
    }
    assert all(text in split_text(tmp_path / "a", "train") for text in TEXTS)
    code, _, err = prepare(capsys, *base, "--text-field", "data", "--out", str(tmp_path / "b"))
    assert code == EXIT_BAD_INPUT and "holds an object, not a string" in err and "e.g. data.text" in err


def test_a_source_line_names_the_filters_run_when_they_are_not_the_default_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--filter dedup` runs dedup alone, the default five off: the screen says which ran; under the default
    list the line stays as it was."""
    corpus = corpora.write_files(tmp_path / "in", TEXTS)
    code, out, err = prepare(capsys, str(corpus), "--filter", "dedup", "--out", str(tmp_path / "a"))
    assert code == 0 and "main: 8 in, 8 out, 0.00% dropped (none); filters run: dedup" in out, err
    code, out, err = prepare(capsys, str(corpus), "--out", str(tmp_path / "b"))
    assert code == 0 and "filters run" not in out, err
