"""`stack prepare FILE --doc-sep SEP` splits the text at the separator, and the gates see it when it does
not: planted, a separator that never reaches the text reader (stack.data.formats.read_documents hands
text_documents no separator), so 60 documents are read as 1 holding the 59 separators and the held-out
split is empty, while the manifest's `reading.doc_sep` still states the separator asked for.

GATE-DATA-014's check `separated` (rev 5) measures each document the reader yields from a text file
read with --doc-sep, where it is judged (stack.data.prepare_tasks), against contracts.separators:
none may hold the separator. Its check `cut` (rev 5) holds the pieces of a text file read without a
separator to --doc-bytes (contracts.doc_cut), the same class for the cut. The mutants are planted
here, in this process, through the real command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stack.data.formats as formats_module
import stack.data.prepare_tasks as prepare_tasks_module
from contracts.doc_cut import within_cut
from contracts.separators import holds_separator
from stack.data.corpus import FileRegion
from tests.support.ledger_support import assert_caught, check_taken_out, edited, findings, gate
from tests.support.prepare_support import run_cli, text_docs

SEPARATOR = "<|endoftext|>"


def _prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> tuple[int, str, Path]:
    """Exit code, stderr and record directory of `stack prepare FILE --doc-sep SEPARATOR --evidence-dir`."""
    source = tmp_path / "sep.txt"
    source.write_text(text, encoding="utf-8")
    ledger = tmp_path / "ledger"
    argv = ("--doc-sep", SEPARATOR, "--val-fraction", "0.2", "--out", str(tmp_path / "d"))
    code, err = run_cli(capsys, "prepare", str(source), *argv, "--evidence-dir", str(ledger))
    (record,) = ledger.iterdir()
    return code, err, record


def _separated_text(documents: int) -> str:
    """`documents` distinct documents joined by the separator (documents - 1 separators)."""
    return SEPARATOR.join(text_docs(documents).values())


def _gate(record: Path, gate_id: str) -> dict[str, Any]:
    gates = json.loads((record / "metadata.json").read_text())["gates"]
    return next(g for g in gates if g["id"] == gate_id)


def _separator_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the text reader is handed no separator, whatever --doc-sep says."""
    text_documents = formats_module.text_documents

    def unseparated(item: Any, separator: bytes | None, *args: Any) -> Any:
        return text_documents(item, None, *args)

    monkeypatch.setattr(formats_module, "text_documents", unseparated)


@pytest.mark.gate("GATE-DATA-014")
def test_a_separator_that_never_reaches_the_reader_halts_the_prepare(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The separator withheld on 60 separated documents: the one document read holds the separator; exit 3
    naming the gate, nothing published, the halted record measures it."""
    _separator_withheld(monkeypatch)
    code, err, record = _prepare(capsys, tmp_path, _separated_text(60))
    assert code == 3 and "GATE-DATA-014" in err and "still hold the separator" in err, err
    assert not (tmp_path / "d" / "manifest.json").exists()
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert measured["doc_sep"] == SEPARATOR and measured["separated_documents"] == 1
    assert len(measured["holding_separator"]) == 1


@pytest.mark.gate("GATE-DATA-014")
def test_a_withheld_separator_just_beyond_one_separator_halts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just beyond: two documents, one separator, read as one document by the planted reader: exit 3."""
    _separator_withheld(monkeypatch)
    code, err, _record = _prepare(capsys, tmp_path, _separated_text(2))
    assert code == 3 and "GATE-DATA-014" in err, err


@pytest.mark.holds("GATE-DATA-014")
def test_an_honest_doc_sep_prepare_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Benign: the same 60 documents read unmutated are 60 documents, none holding the separator; the
    gate holds and the integrity check is clean."""
    code, err, record = _prepare(capsys, tmp_path, _separated_text(60))
    assert code == 0, err
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert (measured["separated_documents"], measured["holding_separator"]) == (60, [])
    assert findings(record) == []


@pytest.mark.holds("GATE-DATA-014")
def test_a_separator_free_file_passes_even_with_the_mutant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just inside: a file that never holds the separator is one document read either way; the planted
    reader changes nothing and the prepare passes."""
    _separator_withheld(monkeypatch)
    code, err, record = _prepare(capsys, tmp_path, _separated_text(1))
    assert code == 0, err
    assert _gate(record, "GATE-DATA-014")["measured"]["holding_separator"] == []


@given(st.binary(max_size=40), st.binary(min_size=1, max_size=4))
def test_text_split_at_every_separator_holds_none(text: bytes, separator: bytes) -> None:
    """The statute's invariant: every piece of a text split at each separator is free of it, and
    text holding the separator is judged to hold it."""
    assert not any(holds_separator(piece, separator, False) for piece in text.split(separator))
    assert holds_separator(text + separator, separator, False)


def test_the_checker_holds_the_separator_measured_to_the_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A record that says the documents were measured against another separator than the manifest's
    doc_sep is caught: the checker derives the gate's doc_sep from manifest.json's reading (a
    forger re-deriving every field, tests/ledger_support.rederive, puts the manifest's back)."""
    code, err, record = _prepare(capsys, tmp_path, _separated_text(20))
    assert code == 0, err

    def other_separator(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-DATA-014")["measured"]["doc_sep"] = "<|other|>"

    edited(record, other_separator)
    assert_caught(record, "GATE-DATA-014", "measured.doc_sep")


def test_the_checker_refuses_a_doc_sep_prepare_without_the_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A record of GATE-DATA-014 rev 5 whose manifest states a doc_sep but whose gate holds no check
    separated (the separator stated, never measured) is a finding: the checker fails closed."""
    code, err, record = _prepare(capsys, tmp_path, _separated_text(20))
    assert code == 0, err
    edited(record, lambda data, _dir: check_taken_out(data, "GATE-DATA-014", "separated"))
    assert_caught(record, "holds no check separated")


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("block", [1, 3, 5, 64])
def test_a_long_document_is_searched_across_block_borders(tmp_path: Path, crlf: bool, block: int) -> None:
    """A long document (a FileRegion, read again in blocks) holds the separator wherever a block
    border falls in it, and one without it holds none; in a CRLF file the separator's line ends
    are read as LF, as the document's are."""
    separator = b"\n<|endoftext|>\n"
    line_end = b"\r\n" if crlf else b"\n"
    path = tmp_path / "long.txt"
    path.write_bytes(b"one story" + separator.replace(b"\n", line_end) + b"another")
    size = path.stat().st_size
    holding = FileRegion("default", path, 0, size, crlf=crlf)
    free = FileRegion("default", path, 0, len(b"one story") + 2, crlf=crlf)
    assert prepare_tasks_module._holds(holding, separator, block)
    assert not prepare_tasks_module._holds(free, separator, block)


@pytest.mark.holds("GATE-DATA-014")
def test_an_honest_crlf_doc_sep_prepare_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Benign: a file with CRLF line ends separated by a separator holding line ends passes."""
    source = tmp_path / "crlf.txt"
    text = "\n<|endoftext|>\n".join(text_docs(20).values())
    source.write_bytes(text.replace("\n", "\r\n").encode())
    ledger = tmp_path / "ledger"
    argv = ("--doc-sep", "\\n<|endoftext|>\\n", "--out", str(tmp_path / "d"), "--evidence-dir", str(ledger))
    code, err = run_cli(capsys, "prepare", str(source), *argv)
    assert code == 0, err
    (record,) = ledger.iterdir()
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert (measured["separated_documents"], measured["holding_separator"]) == (20, [])


def _cut_prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str, Path]:
    """`stack prepare FILE --doc-bytes 1K` of one file of 60 documents (about 20 KiB), no separator."""
    source = tmp_path / "one.txt"
    source.write_text("\n".join(text_docs(60).values()), encoding="utf-8")
    ledger = tmp_path / "ledger"
    argv = ("--doc-bytes", "1K", "--val-fraction", "0.2", "--out", str(tmp_path / "d"))
    code, err = run_cli(capsys, "prepare", str(source), *argv, "--evidence-dir", str(ledger))
    (record,) = ledger.iterdir()
    return code, err, record


@pytest.mark.gate("GATE-DATA-014")
def test_a_doc_bytes_that_never_reaches_the_reader_halts_the_prepare(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same fault for --doc-bytes: the text reader is handed the default cut,
    so the file is one piece of about 20 KiB under --doc-bytes 1K: exit 3 naming the gate."""
    text_documents = formats_module.text_documents

    def uncut(item: Any, separator: bytes | None, batch_bytes: int, advance: Any, _doc_bytes: int) -> Any:
        return text_documents(item, separator, batch_bytes, advance)

    monkeypatch.setattr(formats_module, "text_documents", uncut)
    code, err, record = _cut_prepare(capsys, tmp_path)
    assert code == 3 and "GATE-DATA-014" in err and "longer than --doc-bytes" in err, err
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert (measured["doc_bytes"], measured["cut_documents"], len(measured["over_doc_bytes"])) == (1024, 1, 1)


@pytest.mark.holds("GATE-DATA-014")
def test_an_honest_doc_bytes_prepare_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Benign: the same file cut at 1K is many pieces, none over it; the integrity check is clean."""
    code, err, record = _cut_prepare(capsys, tmp_path)
    assert code == 0, err
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert measured["cut_documents"] > 1 and measured["over_doc_bytes"] == []
    assert findings(record) == []


@given(st.integers(min_value=1, max_value=1 << 20))
def test_the_cut_statute_allows_doc_bytes_and_one_character(doc_bytes: int) -> None:
    """A piece of exactly --doc-bytes is within the cut, one byte more is not (a single UTF-8
    character excepted when --doc-bytes is smaller than it)."""
    assert within_cut(doc_bytes, doc_bytes) and within_cut(4, doc_bytes)
    assert not within_cut(max(doc_bytes, 4) + 1, doc_bytes)


def test_the_checker_holds_the_cut_measured_to_the_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A record that says the pieces were measured against another --doc-bytes than the manifest's
    is caught: the checker derives the gate's doc_bytes from manifest.json's reading."""
    code, err, record = _cut_prepare(capsys, tmp_path)
    assert code == 0, err

    def other_cut(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-DATA-014")["measured"]["doc_bytes"] = 1 << 20

    edited(record, other_cut)
    assert_caught(record, "GATE-DATA-014", "measured.doc_bytes")
