"""JSON files that hold one array of records: `[{"text": ...}, {"text": ...}]`.

Many datasets are shipped this way rather than as JSON Lines (Alpaca's `alpaca_data.json`,
ShareGPT dumps, a `json.dump(rows, f)` of one's own). Read as text, such a file would teach the
model JSON punctuation; read with a line-based JSONL reader, its first line `[` is no JSON. So
prepare reads the array element by element, each element a record like a JSONL line's.

The file is read in chunks and its elements decoded one at a time (`json.JSONDecoder.raw_decode`),
so memory holds about one element and one chunk, never the whole array: a pretraining corpus of
gigabytes in one array is read like a JSONL file of the same size. An element is named by its
index, `data.json[41]` (counted from 0), the way a line of a JSONL file is named by its number.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from stack.data.line_ends import BOM

# Bytes read at a time; an element longer than this is read in growing steps until it parses.
CHUNK_BYTES = 1 << 20
_WHITESPACE = " \t\r\n"


def starts_array(path: Path) -> bool:
    """Whether the first non-blank character of `path` (after a byte-order mark) is `[`."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).removeprefix(BOM)
    except OSError:
        return False
    return head.lstrip(_WHITESPACE.encode()).startswith(b"[")


class _Text:
    """A UTF-8 file decoded in chunks; `invalid` says whether a byte sequence was replaced."""

    def __init__(self, handle: object, advance: Callable[[int], None]) -> None:
        self.handle = handle
        self.advance = advance
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.invalid = False
        self.ended = False

    def more(self, size: int) -> str:
        """The next `size` bytes as text ('' at the end of the file)."""
        data = self.handle.read(size)  # type: ignore[attr-defined]
        self.advance(len(data))
        self.ended = not data
        text = self.decoder.decode(data, final=self.ended)
        self.invalid |= "\ufffd" in text
        return text


def _int_or_digits(digits: str) -> int | str:
    """A JSON integer as an int, or as its digits where it is longer than Python converts
    (sys.get_int_max_str_digits, 4,300 by default): a record's other fields, a huge id say, never
    stop its text being read."""
    try:
        return int(digits)
    except ValueError:
        return digits


# The decoder of every JSON record prepare reads from a user's files.
RECORDS = json.JSONDecoder(parse_int=_int_or_digits)


def loads(text: str | bytes) -> Any:
    """One JSON value of a user's file, as RECORDS decodes it (json.loads takes bytes too)."""
    return RECORDS.decode(text.decode("utf-8") if isinstance(text, bytes) else text)


def array_elements(
    path: Path, given: str, advance: Callable[[int], None]
) -> Iterator[tuple[int, object, bool]]:
    """(index, value, whether the file so far held bytes that are not UTF-8) of each element of the
    JSON array in `path`; BadInput naming the element when the file is not one well-formed array."""
    decoder = RECORDS
    with open(path, "rb") as handle:
        text = _Text(handle, advance)
        buffer = text.more(CHUNK_BYTES).removeprefix("\ufeff").lstrip(_WHITESPACE)
        if not buffer.startswith("["):
            raise BadInput(f"{given} does not begin with '['; it is not a JSON array of records")
        at, index = 1, 0
        while True:
            at, buffer = _skip(buffer, at, text)
            if buffer[at : at + 1] == "]":
                _expect_end(buffer[at + 1 :], text, given)
                return
            if index and buffer[at : at + 1] != ",":
                raise _malformed(given, index, "expected ',' or ']' after the element before it")
            if index:
                at, buffer = _skip(buffer, at + 1, text)
            value, at, buffer = _element(decoder, buffer, at, text, given, index)
            yield index, value, text.invalid
            index += 1


def _skip(buffer: str, at: int, text: _Text) -> tuple[int, str]:
    """Past the whitespace at `at`, reading on while the buffer ends in it; the buffer is cut to
    start at the position returned, so it never holds more than the element being decoded."""
    while True:
        while at < len(buffer) and buffer[at] in _WHITESPACE:
            at += 1
        if at < len(buffer) or text.ended:
            return 0, buffer[at:]
        buffer, at = text.more(CHUNK_BYTES), 0


def _element(
    decoder: json.JSONDecoder, buffer: str, at: int, text: _Text, given: str, index: int
) -> tuple[object, int, str]:
    """The element at `at`: decoded once enough of the file is read that it parses and is followed
    by the ',' or ']' after it (or the file ends)."""
    while True:
        try:
            value, end = decoder.raw_decode(buffer, at)
        except json.JSONDecodeError as exc:
            if text.ended:
                raise _malformed(given, index, exc.msg) from None
            buffer += text.more(max(CHUNK_BYTES, len(buffer)))  # doubles: a long element parses in few tries
            continue
        if not text.ended and buffer[end:].lstrip(_WHITESPACE)[:1] not in (",", "]"):
            buffer += text.more(CHUNK_BYTES)  # a number cut by the chunk ("1" of "1.5") reads on
            continue
        return value, end, buffer


def _expect_end(rest: str, text: _Text, given: str) -> None:
    while True:
        if rest.strip(_WHITESPACE):
            raise BadInput(f"{given} goes on after its array's closing ']'; it must hold one JSON array")
        if text.ended:
            return
        rest = text.more(CHUNK_BYTES)


def _malformed(given: str, index: int, reason: str) -> BadInput:
    return BadInput(
        f"{given}[{index}] is not JSON ({reason}); the file must be one JSON array of records: fix it, "
        "or read it as text with --format text"
    )
