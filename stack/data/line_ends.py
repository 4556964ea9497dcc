"""Text as editors save it: a UTF-8 byte-order mark first, CRLF line ends, read like any other text.

A common Windows editor writes JSONL and text with a byte-order mark (EF BB BF) and CRLF line
ends. Neither is part of what the file says: the mark made the first JSONL line "not JSON" and
would have been the first three bytes of a pretraining document, and CRLF kept a `--doc-sep
'\\n\\n'` from ever matching. The readers drop the mark, read CRLF as LF (in a text file, whose
head is what tells: a file whose first BINARY_SNIFF_BYTES bytes hold a CRLF is read with every
CRLF as LF, the same whatever the working set), and say what they did, so the manifest counts it
per source (`normalised`: byte_order_marks, crlf_files). A lone CR, or CR LF inside a JSON
string (written "\\r\\n"), is text and stays.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import BadInput

BOM = codecs.BOM_UTF8
CRLF = b"\r\n"
# What the manifest counts, per source (stack.data.manifest.NormalisedInput's fields).
BYTE_ORDER_MARKS, CRLF_FILES = "byte_order_marks", "crlf_files"


@dataclass(frozen=True)
class Normalised:
    """One input file of `source` was read with `what` normalised (BYTE_ORDER_MARKS or CRLF_FILES)."""

    source: str
    what: str


def reported(source: str, bom: bool, crlf: bool) -> list[Normalised]:
    """The events a reader reports for one file."""
    return [Normalised(source, what) for what, hit in ((BYTE_ORDER_MARKS, bom), (CRLF_FILES, crlf)) if hit]


def text_start(head: bytes, sniff: int) -> tuple[int, bool]:
    """Where a text file's text starts (after a byte-order mark), and whether it is read with CRLF
    as LF: whether its first `sniff` bytes hold a CRLF."""
    return (len(BOM) if head.startswith(BOM) else 0), CRLF in head[:sniff]


def whole_text(data: bytes, sniff: int) -> tuple[bytes, bool, bool]:
    """A text file's bytes as a reader takes them whole; whether a mark was dropped, CRLF read as LF."""
    start, crlf = text_start(data, sniff)
    return (as_lf(data[start:]) if crlf else data[start:]), start > 0, crlf


def as_lf(data: bytes) -> bytes:
    """Every CRLF of `data` as LF."""
    return data.replace(CRLF, b"\n")


class LfStream:
    """CRLF read as LF across blocks: a CR that ends a block waits for the next one."""

    def __init__(self) -> None:
        self._cr = False

    def blocks(self, raw: Iterable[bytes]) -> Iterator[bytes]:
        for block in raw:
            data = (b"\r" if self._cr else b"") + bytes(block)
            self._cr = data.endswith(b"\r")
            if self._cr:
                data = data[:-1]
            if data:
                yield as_lf(data)
        if self._cr:
            self._cr = False
            yield b"\r"


def text_lines(path: Path, what: str, shown: Path | None = None) -> tuple[list[tuple[int, str]], bool, bool]:
    """The numbered lines of a UTF-8 text file (JSONL), split at LF only, each without its line end;
    and whether the file began with a byte-order mark and whether it had CRLF line ends. Messages
    name `shown` (the file the user gave, where `path` is a UTF-8 copy of it) or `path`.

    A JSON string may hold U+2028 or other characters `str.splitlines` would split at; JSON
    Lines ends a line at LF alone.
    """
    named = shown or path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {named} ({exc.strerror}); give {what}") from None
    bom = data.startswith(BOM)
    try:
        text = data[len(BOM) if bom else 0 :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{named} is not UTF-8 text (byte {exc.start}: {exc.reason}); give {what}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    crlf = any(line.endswith("\r") for line in lines)
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, 1)], bom, crlf


def read_text(data: bytes) -> str:
    """Text a reader takes whole (a retrieval document): UTF-8 without a byte-order mark, CRLF as LF."""
    return as_lf(data.removeprefix(BOM)).decode("utf-8")
