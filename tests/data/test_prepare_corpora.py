"""The corpora people bring, prepared with the default flags: each one either keeps what
a user would expect, or is refused naming the filter that refused it and what to pass instead.

The corpora are generated (tests/support/corpora.py): Cyrillic, CJK, Arabic and Devanagari prose, English
with Python code, DNA, ABC music notation, CSV tables, one 20 MB file without separators, chat
records with leaked prompts, and three corpora the default flags must not refuse: Russian and
Chinese files in one source, random words from a vocabulary of five, and one big text file. The expected
outcome of each is written in its case. The last test shows the output does not depend on the
number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from contracts.errors import EXIT_BAD_INPUT
from stack.cli import main
from stack.data.filters.droplog import DROP_LOG_FILE, recount
from stack.data.formats import Layout
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.sft_prepare import prepare_sft
from stack.data.tokenizer import load_tokenizer
from stack.eval.texts import split_documents
from tests.support import corpora

MiB = 1 << 20


@dataclass(frozen=True)
class Kept:
    """A corpus of one source whose documents are all kept, in the writing system the source was
    measured to be in, or (`multilingual`) in every script found in it."""

    texts: Callable[[], list[str]]
    scripts: list[str]
    multilingual: bool = False

    def on_screen(self) -> str:
        """What the drop report says the script filter kept."""
        names = ", ".join(self.scripts)
        return f"every script found, multilingual ({names})" if self.multilingual else names


KEPT = {
    "cyrillic": Kept(lambda: [corpora.cyrillic_text(i) for i in range(12)], ["CYRILLIC"]),
    "cjk": Kept(lambda: [corpora.cjk_text(i) for i in range(12)], ["CJK"]),
    "arabic": Kept(lambda: [corpora.arabic_text(i) for i in range(12)], ["ARABIC"]),
    "devanagari": Kept(lambda: [corpora.devanagari_text(i) for i in range(12)], ["DEVANAGARI"]),
    "english_and_code": Kept(
        lambda: [corpora.english_text(i) for i in range(6)] + [corpora.python_code(i) for i in range(6)],
        ["LATIN"],
    ),
    "dna": Kept(lambda: [corpora.dna_fasta(i) for i in range(12)], ["LATIN"]),
    "abc_music": Kept(lambda: [corpora.abc_tune(i) for i in range(12)], ["LATIN"]),
    "csv_tables": Kept(lambda: [corpora.csv_table(i) for i in range(12)], ["LATIN"]),
    # Legitimate corpora a filter must not refuse: both languages in one source, and a vocabulary
    # of five words.
    "russian_and_chinese": Kept(
        lambda: [corpora.cyrillic_text(i) for i in range(40)] + [corpora.cjk_text(i) for i in range(40)],
        ["CJK", "CYRILLIC"],
        multilingual=True,
    ),
    "five_words": Kept(lambda: [corpora.five_words(i) for i in range(60)], ["LATIN"]),
}


def run(*argv: str) -> tuple[int, str, str]:
    """`stack ARGV` through the real CLI: exit code, stdout, stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def filter_warnings(out: str) -> list[str]:
    """The warning lines of a prepare's screen about what its filters did (a small corpus's held-out
    split, empty or far from --val-fraction, is warned of too, and is not the filters' doing)."""
    return [line for line in out.splitlines() if "warning" in line and "held-out split" not in line]


# The filters are judged here on the files as written, one document each: without --doc-bytes a
# corpus this small is cut finer for its split (stack.data.doc_size), which tests/data/test_doc_size.py
# holds.
WHOLE_FILES = ("--doc-bytes", "1M")


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014", "GATE-DATA-015")
@pytest.mark.parametrize("name", sorted(KEPT))
def test_a_corpus_is_kept_whole_in_its_own_scripts(name: str, tmp_path: Path) -> None:
    case = KEPT[name]
    texts = case.texts()
    corpora.write_files(tmp_path / "in", texts)
    code, out, err = run("prepare", str(tmp_path / "in"), "--out", str(tmp_path / "data"), *WHOLE_FILES)
    assert code == 0, err
    report = load_manifest(tmp_path / "data").filters["main"]
    assert report.documents_in == report.documents_out == len(texts) and report.dropped == {}
    assert report.scripts == case.scripts and report.multilingual == case.multilingual
    assert f"scripts kept: {case.on_screen()}" in out and filter_warnings(out) == []


@pytest.mark.holds("GATE-DATA-014")
def test_one_big_file_without_separators_is_cut_into_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A single big text file is not refused as "binary or empty" (the oversize filter taking it
    whole): a 20 MB one is cut at line ends into documents of at most --doc-bytes, which put back
    together are the file, and prepare says so."""
    big = corpora.write_big_file(tmp_path / "enwik.txt", 20 * MiB)
    code, _out, err = run("prepare", str(big), "--out", str(tmp_path / "data"), "--val-fraction", "0")
    assert code == 0, err
    assert "enwik.txt (20.1 MiB) is read without --doc-sep: it is cut into about 21 documents" in caplog.text
    assert "at most 1.0 MiB at line ends (--doc-bytes SIZE); give --doc-sep SEP" in caplog.text
    tokenizer = load_tokenizer(tmp_path / "data")
    pieces = [ids for ids in split_documents(tmp_path / "data", "train", tokenizer.eot_id)]
    assert 20 <= len(pieces) <= 22 and max(len(ids) for ids in pieces) <= MiB
    digest = hashlib.sha256()
    for ids in pieces:
        digest.update(ids.astype("u1").tobytes())
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()


def test_chat_records_lose_their_leaked_prompts(tmp_path: Path) -> None:
    """JSONL chat with system prompts pasted into the user turn: those are dropped, the rest kept."""
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(corpora.chat_records(0, count=30, leaked=4)) + "\n", encoding="utf-8")
    manifest = prepare_sft([path], tmp_path / "data", fmt="chat", pack_len=1024)
    report = manifest.filters["sft"]
    assert report.dropped == {"leak_phrase": 4} and report.documents_out == 26
    assert report.examples["leak_phrase"].startswith("chat.jsonl:1: 'You are ChatGPT")
    assert recount(tmp_path / "data" / DROP_LOG_FILE) == {"sft": {"leak_phrase": 4}}


def test_a_minority_language_in_a_source_is_dropped_and_named(tmp_path: Path) -> None:
    """The script filter's purpose: off-language documents in a source are dropped, and the source's
    scripts, as measured, are on screen; a language the filters took every document of is a warning
    line naming the source, the script and the count, however small its share."""
    corpora.write_files(
        tmp_path / "in", [corpora.english_text(i) for i in range(20)] + [corpora.arabic_text(0)]
    )
    code, out, err = run("prepare", str(tmp_path / "in"), "--out", str(tmp_path / "data"), *WHOLE_FILES)
    assert code == 0, err
    assert "main: 21 in, 20 out, 4.76% dropped (script_mismatch 1); scripts kept: LATIN" in out
    (warning,) = filter_warnings(out)
    assert (
        "warning: source 'main' lost all 1 of its ARABIC document(s) long enough to tell their script to "
        "the filters (script_mismatch 1)" in warning
    )
    assert "put each language in its own source (NAME=PATH)" in warning
    assert load_manifest(tmp_path / "data").filters["main"].by_script["ARABIC"].documents_out == 0


def test_a_corpus_of_loops_is_refused_naming_the_diversity_filter(tmp_path: Path) -> None:
    corpora.write_files(tmp_path / "in", [corpora.loop(f"line {i} said again and again. ") for i in range(5)])
    code, _, err = run("prepare", str(tmp_path / "in"), "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT
    assert "the filters dropped every document: main: 5 in, all dropped (low_diversity 5)" in err
    assert "e.g. doc000.txt: 'line 0 said again" in err
    assert "the cause is the diversity filter" in err and "--no-filter main --reason" in err
    assert "binary or empty" not in err and not (tmp_path / "data").exists()


def test_a_script_named_by_the_user_refuses_other_scripts_naming_the_filter(tmp_path: Path) -> None:
    """`expected:` stays available; a Russian corpus under `expected: [LATIN]` is refused for what it is."""
    corpora.write_files(tmp_path / "in", [corpora.cyrillic_text(i) for i in range(5)])
    settings = tmp_path / "filters.yaml"
    settings.write_text(yaml.safe_dump({"script": {"expected": ["LATIN"]}}))
    code, _, err = run(
        "prepare",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "data"),
        "--filters",
        str(settings),
        *WHOLE_FILES,
    )
    assert code == EXIT_BAD_INPUT
    assert "main: 5 in, all dropped (script_mismatch 5)" in err
    assert "the cause is the script filter (scripts kept for the source: LATIN)" in err
    assert "--filters FILE" in err and "binary or empty" not in err


def test_only_binary_and_empty_files_are_called_so(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.bin").write_bytes(b"\0\1\2")
    (tmp_path / "in" / "b.txt").write_bytes(b"")
    code, _, err = run("prepare", str(tmp_path / "in"), "--out", str(tmp_path / "data"))
    assert code == EXIT_BAD_INPUT and "2 file(s) found under the inputs, all binary or empty" in err


def tree(data: Path) -> dict[str, str]:
    """Every file prepare wrote, by path, with its sha256."""
    return {
        path.relative_to(data).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014")
def test_one_or_two_workers_write_the_same_bytes(tmp_path: Path) -> None:
    """Files fanned out to worker processes, merged in file order: manifest, shards, index, drop log
    and tokenizer are byte for byte those of one process, bpe and dedup included."""
    prose = (
        [corpora.english_text(i) for i in range(10)] + [corpora.loop("region ")] + [corpora.arabic_text(1)]
    )
    corpora.write_files(tmp_path / "in" / "web", [*prose, corpora.english_text(3)])  # one exact duplicate
    corpora.write_files(tmp_path / "in" / "code", [corpora.python_code(i) for i in range(8)], suffix=".py")
    inputs = [f"web={tmp_path / 'in' / 'web'}", f"code={tmp_path / 'in' / 'code'}"]
    options = {
        "tokenizer": "bpe",
        "vocab_size": 300,
        "val_fraction": 0.2,
        "filters": ["leak", "diversity", "script", "dedup"],
    }
    one = prepare_corpus(inputs, tmp_path / "one", workers=1, **options)
    two = prepare_corpus(inputs, tmp_path / "two", workers=2, layout=Layout(), **options)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert one.sha256 == two.sha256
    assert one.filters["web"].dropped == {"dedup_exact": 1, "low_diversity": 1, "script_mismatch": 1}
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["drop_log"]["path"] == DROP_LOG_FILE
