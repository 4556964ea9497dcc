"""The text `stack eval --text FILE` scores, held to the file as stored (GATE-EVAL-003).

Bits per byte of a file is only that if every byte of the file was scored: a reader that turned
CRLF into LF, dropped a byte-order mark or a character it could not decode flatters the score by
the bytes it lost, and every later count (the tokenizer's round trip, the bytes the score divides
by) is taken of the text it was handed. This check reads the file again from disk and holds the
text handed to the scorer to it by sha256 and size. A compressed file, or one in UTF-16 or UTF-32
with a byte-order mark, is held to its UTF-8 text as `stack prepare` makes it (stack.data.unpack).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from contracts.evidence import sha256_file
from contracts.gates import Outcome, gate_require, measure
from stack.data.corpus import InputFile
from stack.data.unpack import readable
from stack.eval.split_check import text_sha256


def file_text_outcome(path: Path, text: str) -> Outcome:
    """GATE-EVAL-003's check of the text a `--text FILE` evaluation scores: the file's UTF-8 bytes,
    read again here, beside the text handed to the scorer."""
    with tempfile.TemporaryDirectory(prefix="gatestack-check-") as scratch:
        stored = readable(InputFile("main", path, path.name), Path(scratch), 0).path
        measured = {
            "file_bytes": stored.stat().st_size,
            "file_sha256": sha256_file(stored),
            "text_bytes": len(text.encode("utf-8")),
            "text_sha256": text_sha256(text),
        }
    return measure("GATE-EVAL-003", measured, holds=f"the text scored is {path.name} as stored")


@gate_require("GATE-EVAL-003", lambda path, text: file_text_outcome(path, text))
def check_file_text(path: Path, text: str) -> None:
    """Refuse to score a text for `--text FILE` that is not the file's bytes, every one of them."""
