"""CSV and TSV files: one document per row, the value of its text column.

A table of reviews, tickets or posts (`id,rating,review`) is a corpus of its rows' text, not of
its header, ids and quotes: read whole as text, a model would learn the commas. The first
row names the columns; the `--text-field` column (default `text`) is each row's document and
the `--source-field` column, when named, its source, as a JSONL record's fields are
(stack.data.record_input, whose record rules apply: a blank value is skipped as empty).

`.tsv` and `.tab` files are split at tabs, any other at the first of comma, tab, semicolon and
bar that its header holds (a spreadsheet saved where the decimal mark is a comma uses semicolons).
Quoted values (RFC 4180: `"a, b"`, `""` for a quote, line breaks inside) are read
with Python's csv module in strict mode. A table that half parses is not trusted: an unclosed
quote, or a row with another number of values than the header has, stops prepare naming the
file and line. A blank line is no row. The file is read a line at a time; invalid UTF-8 is
replaced (the document is marked), and a byte-order mark or CRLF row ends are reported as for
any file (stack.data.line_ends).

The books (GATE-DATA-014) count the text column's UTF-8 bytes, as for any file of records.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from contracts.errors import BadInput
from stack.data.corpus import InputFile, unreadable
from stack.data.line_ends import BOM, CRLF, reported
from stack.data.record_input import (
    SNIFF_LINE_BYTES,
    FieldBooks,
    Fields,
    Item,
    booked,
    field_bytes,
    missing_column,
    record_item,
)

if TYPE_CHECKING:
    from _csv import Reader

# The suffixes `--format auto` reads as tables; those that name tab-separated values.
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")
TAB_SUFFIXES = (".tsv", ".tab")
# The delimiters a table's header is searched for, in order, when its suffix does not decide.
CANDIDATES = (",", "\t", ";", "|")
# One value may be a whole book: the csv module's default limit (128 KiB) would refuse it.
csv.field_size_limit(sys.maxsize)


class _Lines:
    """A table file's lines as text for the csv reader, noting what reading them found: a
    byte-order mark, CRLF ends, and whether the lines since the last `take_invalid` held invalid
    UTF-8."""

    def __init__(self, handle: BinaryIO, advance: Callable[[int], None]) -> None:
        self._handle, self._advance = handle, advance
        self.bom = self.crlf = self._invalid = False

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self._handle, 1):
            self._advance(len(line))
            if number == 1 and line.startswith(BOM):
                line, self.bom = line[len(BOM) :], True
            self.crlf |= line.endswith(CRLF)
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                self._invalid = True
                yield line.decode("utf-8", errors="replace")

    def take_invalid(self) -> bool:
        """Whether a line read since the last call held invalid UTF-8."""
        found, self._invalid = self._invalid, False
        return found


def delimiter_of(path: Path, header: str) -> str:
    """The delimiter of a table: a tab for `.tsv` and `.tab`, else the first of comma, tab, semicolon
    (a spreadsheet saved where the decimal mark is a comma) and bar that its header holds."""
    if path.suffix.lower() in TAB_SUFFIXES:
        return "\t"
    return next((mark for mark in CANDIDATES if mark in header), ",")


def _header_line(path: Path) -> str:
    """The first line of a table (at most SNIFF_LINE_BYTES of it), as text, without a byte-order mark."""
    with open(path, "rb") as handle:
        line = handle.readline(SNIFF_LINE_BYTES)
    return line.removeprefix(BOM).decode("utf-8", errors="replace")


def holds_column(path: Path, name: str) -> bool:
    """Whether a table's header names column `name` (a file that cannot be read holds none)."""
    stat = path.stat()
    return _holds_column(path, stat.st_size, stat.st_mtime_ns, name)


@lru_cache(maxsize=4096)
def _holds_column(path: Path, size: int, mtime_ns: int, name: str) -> bool:
    """holds_column, told once per version of a file (every pass asks for each file's format)."""
    try:
        line = _header_line(path)
    except OSError:
        return False
    header = next(csv.reader([line], delimiter=delimiter_of(path, line)), [])
    return name in header


def _column_index(item: InputFile, header: list[str], name: str, remedy: str) -> None:
    """BadInput unless the header names column `name` exactly once."""
    if name not in header:
        raise missing_column(item.given, header, name, remedy)
    if header.count(name) > 1:
        raise BadInput(
            f"{item.given}: the header names column {name!r} {header.count(name)} times; rename all but "
            "one, so that the text read is the one meant"
        )


def table_documents(item: InputFile, fields: Fields, advance: Callable[[int], None]) -> Iterator[Item]:
    """One document per row of a CSV or TSV file (module docstring)."""
    books = FieldBooks()
    try:
        with open(item.path, "rb") as handle:
            lines = _Lines(handle, advance)
            rows = csv.reader(lines, delimiter=delimiter_of(item.path, _header_line(item.path)), strict=True)
            yield from _rows(item, fields, rows, lines, books)
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    yield from reported(item.source, lines.bom, lines.crlf)
    yield from books.framing()


def _rows(item: InputFile, fields: Fields, rows: Reader, lines: _Lines, books: FieldBooks) -> Iterator[Item]:
    """The documents of a table's rows, each named by the line it starts on."""
    header: list[str] | None = None
    ended = 0  # the line the last row ended on
    while True:
        try:
            row = next(rows, None)
        except csv.Error as exc:
            raise BadInput(
                f"{item.given}:{ended + 1} is not CSV ({exc}); fix the row (a quote left open?), or read "
                "the file whole with --format text"
            ) from None
        if row is None:
            return
        start, ended = ended + 1, rows.line_num
        if not row:
            continue
        if header is None:
            header = row
            _column_index(item, header, fields.text, fields.remedy(table=True))
            if fields.source is not None:
                _column_index(item, header, fields.source, "pass --source-column NAME")
            continue
        if len(row) != len(header):
            raise BadInput(
                f"{item.given}:{start} holds {len(row)} value(s) where the header names {len(header)} "
                "columns; fix the row (a delimiter inside a value wants quotes)"
            )
        record = dict(zip(header, row, strict=True))
        found = record_item(item, f":{start}", (record, lines.take_invalid()), fields, [])
        books.read[found.source] += field_bytes(record, fields.text)
        yield booked(found, books)
