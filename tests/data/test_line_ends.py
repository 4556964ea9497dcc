"""Inputs as people save them: a UTF-8 byte-order mark and CRLF line ends read like any other text.

Each format is prepared twice, from a file as written on Unix and from the same file as a common
Windows editor saves it (a byte-order mark first, CRLF line ends): the data written is the same
bytes, and only the second manifest counts what its reader normalised.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack.cli import main
from stack.data.formats import Layout
from stack.data.line_ends import BOM, LfStream, text_lines
from stack.data.manifest import NormalisedInput, load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.working_set import MIN_WORKING_SET, WorkingSet
from stack.eval.items import read_items
from stack.train.config import read_toml
from tests.support.paths import DATA
from tests.support.train_support import WORDS


def saved(text: str) -> bytes:
    """`text` as a Windows editor saves it."""
    return BOM + text.replace("\n", "\r\n").encode("utf-8")


def prose(documents: int, lines: int = 6) -> list[str]:
    """Documents of word lines, each ending in a line end."""
    return [
        "\n".join(" ".join(WORDS[(d * 7 + i * 3 + j) % len(WORDS)] for j in range(9)) for i in range(lines))
        + "\n"
        for d in range(documents)
    ]


def _pair(root: Path, name: str, text: str) -> tuple[Path, Path]:
    """The same content written twice: as is (LF), and as saved by a Windows editor."""
    (root / "lf").mkdir(parents=True, exist_ok=True)
    (root / "saved").mkdir(parents=True, exist_ok=True)
    plain, windows = root / "lf" / name, root / "saved" / name
    plain.write_bytes(text.encode("utf-8"))
    windows.write_bytes(saved(text))
    return plain, windows


CASES = {
    "chat": (
        (DATA / "chat_small.jsonl").read_text(),
        "chat.jsonl",
        ["--format", "chat", "--pack-len", "256"],
    ),
    "prompt-completion": (
        (DATA / "prompt_completion_small.jsonl").read_text(),
        "pc.jsonl",
        ["--format", "prompt-completion"],
    ),
    "prefs": ((DATA / "prefs_small.jsonl").read_text(), "pairs.jsonl", ["--format", "prefs"]),
    "jsonl": ("".join(json.dumps({"text": doc}) + "\n" for doc in prose(12)), "docs.jsonl", []),
    "text": ("".join(prose(1, 40)), "one.txt", []),
    "text --doc-sep": ("\n".join(prose(12)), "many.txt", ["--doc-sep", "\\n\\n"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bom_and_crlf_file_prepares_into_the_same_data_and_is_counted(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, name, options = CASES[case]
    plain, windows = _pair(tmp_path, name, text)
    out = {}
    for which, path in (("lf", plain), ("saved", windows)):
        out[which] = tmp_path / f"data-{which}"
        assert main(["prepare", str(path), "--out", str(out[which]), "--val-fraction", "0.25", *options]) == 0
    lf, windows_made = load_manifest(out["lf"]), load_manifest(out["saved"])
    assert windows_made.hashes() == lf.hashes()  # shards, labels, index: the same bytes
    assert lf.normalised == {}
    assert windows_made.normalised == {"main": NormalisedInput(byte_order_marks=1, crlf_files=1)}
    assert (
        "1 file(s) began with a UTF-8 byte-order mark (dropped), 1 had CRLF line ends"
        in capsys.readouterr().out
    )


def test_a_long_crlf_document_read_in_pieces_is_the_document_read_whole(tmp_path: Path) -> None:
    """Past the working set a document is read again in blocks: CRLF split across two blocks is
    still one line end, and the data is what a large working set makes of it, and what LF makes."""
    long = "".join(prose(500))
    assert len(long) > WorkingSet(MIN_WORKING_SET).batch_bytes
    text = "\n\n".join([*prose(6), long, *prose(3)])
    plain, windows = _pair(tmp_path, "corpus.txt", text)
    layout = Layout(doc_sep="\n\n")
    made = {
        "lf": prepare_corpus([plain], tmp_path / "lf-data", val_fraction=0.25, layout=layout),
        "small": prepare_corpus(
            [windows], tmp_path / "small", val_fraction=0.25, layout=layout, working_set=MIN_WORKING_SET
        ),
        "large": prepare_corpus([windows], tmp_path / "large", val_fraction=0.25, layout=layout),
    }
    assert made["small"].hashes() == made["large"].hashes() == made["lf"].hashes()
    assert made["small"].normalised["main"].crlf_files == 1


def test_crlf_across_blocks_is_one_line_end() -> None:
    blocks = [b"a\r", b"\nb\r", b"\r\n", b"c\r"]
    assert b"".join(LfStream().blocks(blocks)) == b"a\nb\r\nc\r"


def test_a_jsonl_line_ends_at_lf_only(tmp_path: Path) -> None:
    """U+2028 is valid inside a JSON string; `str.splitlines` would cut the line there."""
    path = tmp_path / "items.jsonl"
    record = {"id": "1", "prompt": "a\u2028b", "completion": " c"}
    path.write_bytes(saved(json.dumps(record, ensure_ascii=False) + "\n"))
    lines, bom, crlf = text_lines(path, "JSONL")
    assert (len(lines), bom, crlf) == (1, True, True)
    assert read_items(path, "--items")[0].prompt == "a\u2028b"


def test_a_config_saved_with_a_bom_reads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(saved("[train]\nsteps = 3\n"))
    assert read_toml(path) == {"train": {"steps": 3}}
