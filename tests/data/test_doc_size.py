"""A corpus of a few text files splits near the share asked (stack.data.doc_size).

nanoGPT's `input.txt` is one file of 1.1 MB: cut at 1 MiB it was two documents, and its held-out
split was empty or held most of the text. Without --doc-bytes, `stack prepare` now cuts such a
corpus finer, says so, and states the size in the manifest and the record; a split still drawn
from too few documents is said with the share it holds, and the fix named is more documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.data.defaults import DEFAULT_DOC_BYTES, MIN_FITTED_DOC_BYTES
from stack.data.doc_size import SHARE_FACTOR, fitted_doc_bytes, off_share, pieces, wanted_documents
from stack.data.manifest import load_manifest
from tests.support import corpora
from tools.integrity.record_checks import check_record_truth


def _book(path: Path, size: int) -> Path:
    """One text file of about `size` bytes of prose, lines of a few dozen words: a user's book."""
    text, seed = [], 0
    while sum(map(len, text)) < size:
        text.append(corpora.english_text(seed))
        seed += 1
    path.write_text("".join(text)[:size], encoding="utf-8")
    return path


def _prepare(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["prepare", *argv]) == 0
    return capsys.readouterr().out


@given(
    st.lists(st.integers(0, 8 * DEFAULT_DOC_BYTES), min_size=1, max_size=12),
    st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 0.9]),
)
def test_the_fitted_size_is_the_default_or_the_largest_power_of_two_that_makes_enough_documents(
    sizes: list[int], val_fraction: float
) -> None:
    cut = fitted_doc_bytes(sizes, val_fraction)
    wanted = wanted_documents(val_fraction)
    made = sum(pieces(size, cut) for size in sizes)
    assert cut & (cut - 1) == 0 and MIN_FITTED_DOC_BYTES <= cut <= DEFAULT_DOC_BYTES
    if sum(pieces(size, DEFAULT_DOC_BYTES) for size in sizes) >= wanted:
        assert cut == DEFAULT_DOC_BYTES
    elif cut > MIN_FITTED_DOC_BYTES:  # the largest power of two at most the bytes over the documents
        assert cut * wanted <= sum(sizes) < 2 * cut * wanted and made >= wanted
    else:
        assert sum(sizes) < 2 * MIN_FITTED_DOC_BYTES * wanted  # as fine as it cuts


def test_a_share_is_told_apart_only_beyond_the_factor_and_only_of_too_few_documents() -> None:
    p = 0.1
    few, low, high = wanted_documents(p) - 1, int(1000 * p / SHARE_FACTOR), int(1000 * p * SHARE_FACTOR)
    assert not off_share(100, 1000, p, few)
    assert not off_share(low, 1000, p, few) and not off_share(high, 1000, p, few)  # at the factor: inside
    assert off_share(low - 1, 1000, p, few) and off_share(high + 1, 1000, p, few)
    assert not off_share(high + 1, 1000, p, few + 1)  # enough documents: the draw is the draw
    assert not off_share(0, 1000, p, few)  # an empty split has a warning of its own


def test_one_file_of_a_megabyte_is_cut_for_its_split_and_the_record_states_the_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The file that made two documents at 1 MiB holds out about --val-fraction of its text; prepare's
    note says why it is cut finer and how to set the size; the manifest and the record state the size
    used, and the checker passes the record."""
    book = _book(tmp_path / "input.txt", 1_115_394)
    data, ledger = tmp_path / "data", tmp_path / "ledger"
    out = _prepare(capsys, str(book), "--out", str(data), "--evidence-dir", str(ledger))
    manifest = load_manifest(data)
    # 1,115,394 bytes over the 400 documents 0.05 wants is 2,788: the floor, 4 KiB, cuts 273 pieces
    assert manifest.reading is not None and manifest.reading.doc_bytes == MIN_FITTED_DOC_BYTES
    train, heldout = manifest.totals["train"], manifest.totals["heldout"]
    share = heldout.tokens / (train.tokens + heldout.tokens)
    assert 0.05 / 2 <= share <= 0.05 * 2 and train.documents + heldout.documents >= 273, out
    assert "held-out split" not in out
    assert "as documents of at most 1.0 MiB it would make 2, too few for --val-fraction 0.05" in caplog.text
    assert "into about 273 documents of at most 4.0 KiB (--doc-bytes SIZE sets the size)" in caplog.text
    (filed,) = ledger.glob("*/metadata.json")
    record = read_evidence(filed)
    assert record.config["doc_bytes"] == MIN_FITTED_DOC_BYTES
    assert check_record_truth(record, filed.parent, load_spec()).violations == []


def test_a_size_given_is_the_size_used_and_a_split_of_two_documents_is_said_with_its_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--doc-bytes given is never fitted. Two documents (of 2 and 1 KiB) at --val-fraction 0.1 hold
    out none, one (a third or two thirds of the text) or both (refused); a seed whose draw holds one out
    is found, and the warning says the share and names more documents as the fix, as does the note
    on the presets whose evaluation the split cannot fill."""
    book = _book(tmp_path / "input.txt", 3 * 1024)
    for seed in range(40):
        data = tmp_path / f"seed{seed}"
        code = main(["prepare", str(book), "--out", str(data), "--doc-bytes", "2K", "--val-fraction", "0.1",
                     "--seed", str(seed)])  # fmt: skip
        out = capsys.readouterr().out
        if code == 0 and load_manifest(data).totals["heldout"].documents == 1:
            break
    else:
        pytest.fail("no seed of 40 held out one of the two documents")
    manifest = load_manifest(data)
    assert manifest.reading is not None and manifest.reading.doc_bytes == 2048
    heldout, train = manifest.totals["heldout"].tokens, manifest.totals["train"].tokens
    (line,) = [line for line in out.splitlines() if "warning: the held-out split holds" in line]
    assert f"holds {heldout / (heldout + train):.2%} of the text" in line
    assert "--val-fraction 0.1 is a share of whole documents, and 2 are too few" in line
    assert "cut the text into more documents (--doc-bytes SIZE" in line
    # the note on presets short of held-out windows names the same fix, never a larger fraction
    assert "raise --val-fraction" not in out and "more documents, as the warning above says" in out


def test_too_few_records_are_told_to_add_records_not_to_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSONL record is one document, which --doc-bytes never cuts: a split of ten records that
    held none out names more records as the fix, not a cut."""
    records = tmp_path / "few.jsonl"
    records.write_text("".join(json.dumps({"text": corpora.english_text(i)}) + "\n" for i in range(10)))
    for seed in range(20):
        out = _prepare(capsys, str(records), "--out", str(tmp_path / f"seed{seed}"), "--seed", str(seed))
        if "held-out split is empty" in out:
            break
    else:
        pytest.fail("no seed of 20 held out none of the ten records")
    (line,) = [line for line in out.splitlines() if "held-out split is empty" in line]
    assert "and 10 are too few" in line and "--doc-bytes" not in line
    assert line.endswith("add documents (a record is one document, never cut)")
