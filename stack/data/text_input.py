"""Text files: one file is one document (cut into several when it is long), or, with a separator
(`--doc-sep`), many.

Files are read in blocks of the working set's batch size, so a file of any size costs the same
memory. A separator is searched across block borders (the last `len(sep) - 1` bytes of a block
are kept for the next search). Between separators, a document is the text with its leading and
trailing ASCII whitespace removed: TinyStories writes `story\\n<|endoftext|>\\nstory`, and the
newlines around the separator belong to neither story. Text that is only whitespace (two
separators in a row, one at the end of the file) is no document. A document that outgrows the
batch size while it is read is not held: it becomes a FileRegion, read again when it is encoded.
A file that is one document keeps its bytes exactly as they are, whitespace included, but for
what an editor adds (stack.data.line_ends): a leading UTF-8 byte-order mark is dropped, and a
file whose head holds a CRLF is read with every CRLF as LF, before any separator is looked for.

A file without a separator that is longer than `doc_bytes` (`--doc-bytes`; without it, 1 MiB or
the finer size stack.data.doc_size fits to a corpus of too few documents) is cut into documents
of at most that many bytes, each ending after the last newline of its last CUT_LOOKBACK bytes
(else after its last whole character; a piece holds one character at least), so that the
documents put back together are the file. The cut points depend on the file and `doc_bytes`
alone. A classic byte-level corpus (enwik8, text8: one file of 100 MB) so becomes hundreds of
documents, which the split spreads over train and held-out, rather than one document that no
split can divide.

A file in which the separator never occurs is not what `--doc-sep` says it is: rather than one
document of the whole file (which the oversize filter would drop as a dump, and whose fix would
be the separator already given), it is read as a file without a separator, whole or cut by
size, and a note names it.

Every byte of a file goes somewhere the books see (stack.data.accounting, GATE-DATA-014): into a
document, whose `raw` is the span of file bytes it was read from, or into the framing the reader
counts where it takes the bytes away (a byte-order mark, each separator found, the whitespace
trimmed around a document or making none, a binary file), said once per file as a `Framing`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from stack.data.accounting import BINARY, BLANK, BYTE_ORDER_MARK, SEPARATOR
from stack.data.corpus import (
    BINARY_SNIFF_BYTES,
    Document,
    FileRegion,
    Framing,
    InputFile,
    Note,
    Skipped,
    document,
    is_binary,
    kind_of,
    unreadable,
)
from stack.data.defaults import DEFAULT_DOC_BYTES
from stack.data.line_ends import BOM, CRLF, Normalised, as_lf, reported, text_start, whole_text
from stack.data.working_set import format_size

WHITESPACE = b" \t\r\n\f\v"
CUT_LOOKBACK = 1 << 16

Item = Document | FileRegion | Skipped | Normalised | Note | Framing


def _line_ends(head: bytes) -> tuple[int, bool]:
    """Where the text starts (after a byte-order mark) and whether CRLF is read as LF."""
    return text_start(head, BINARY_SNIFF_BYTES)


def text_documents(
    item: InputFile,
    separator: bytes | None,
    batch_bytes: int,
    advance: Callable[[int], None],
    doc_bytes: int = DEFAULT_DOC_BYTES,
) -> Iterator[Item]:
    """The documents of one text file, then its framing; `advance` is told how many of its bytes
    were read."""
    removed: Counter[str] = Counter()
    try:
        if separator is None:
            yield from _whole_file(item, doc_bytes, batch_bytes, advance, removed)
        elif not (yield from _separated(item, separator, batch_bytes, advance, removed)):
            size = format_size(item.path.stat().st_size)
            yield Note(item.source, unseparated(separator, doc_bytes), f"{item.label} ({size})")
            removed.clear()  # read again from the start: only the second reading is counted
            yield from _whole_file(item, doc_bytes, batch_bytes, _read_before, removed)
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    yield Framing(item.source, {kind: n for kind, n in removed.items() if n})


def unseparated(separator: bytes, doc_bytes: int) -> str:
    """The note on files in which --doc-sep never occurs: what they are read as, and what to check."""
    shown = separator.decode("utf-8", "replace")
    return (
        f"note: --doc-sep {shown!r} never occurs in these file(s): each is read as a file without a "
        f"separator, one document, or cut at line ends into documents of at most {format_size(doc_bytes)} "
        "(--doc-bytes) when longer; check --doc-sep if they hold many documents"
    )


def _read_before(_bytes: int) -> None:
    """Progress already told: a file read again after its separator was never found."""


def _whole_file(
    item: InputFile, doc_bytes: int, batch_bytes: int, advance: Callable[[int], None], removed: Counter[str]
) -> Iterator[Item]:
    size = item.path.stat().st_size
    if size <= min(batch_bytes, doc_bytes):
        data = item.path.read_bytes()
        advance(len(data))
        text, bom, crlf = whole_text(data, BINARY_SNIFF_BYTES)
        mark = len(BOM) if bom else 0
        if is_binary(data):
            removed[BINARY] += len(data)
            yield Skipped(item.source, "binary", f"{item.label}: {kind_of(data)}")
        elif not text.strip(WHITESPACE):  # nothing but blanks is no document
            removed[BYTE_ORDER_MARK] += mark
            removed[BLANK] += len(data) - mark
            yield Skipped(item.source, "empty", item.label)
        else:
            removed[BYTE_ORDER_MARK] += mark
            yield from reported(item.source, bom, crlf)
            yield document(item.source, text, item.label, delimited=False, raw=len(data) - mark, crlf=crlf)
        return
    with open(item.path, "rb") as handle:
        head = handle.read(BINARY_SNIFF_BYTES)
        if is_binary(head):
            advance(size)
            removed[BINARY] += size
            yield Skipped(item.source, "binary", f"{item.label}: {kind_of(head)}")
            return
        start, crlf = _line_ends(head)
        removed[BYTE_ORDER_MARK] += start
        yield from reported(item.source, start > 0, crlf)
        advance(start)
        first = start  # past a byte-order mark
        while start < size:
            end = size if size - start <= doc_bytes else _cut(handle, start, start + doc_bytes)
            where = item.label if (start, end) == (first, size) else f"{item.label} bytes {start}-{end}"
            if end - start <= batch_bytes:
                handle.seek(start)
                piece = handle.read(end - start)
                text = as_lf(piece) if crlf else piece
                yield document(item.source, text, where, delimited=False, raw=end - start, crlf=crlf)
            else:
                yield FileRegion(item.source, item.path, start, end, where, delimited=False, crlf=crlf)
            advance(end - start)
            start = end


def _cut(handle: BinaryIO, start: int, limit: int) -> int:
    """Where a piece from `start` that may run to `limit` ends: after the last newline of its last
    CUT_LOOKBACK bytes, else before the character that `limit` falls in (after it, when that is
    the piece's first character: a piece holds at least one)."""
    lookback = min(CUT_LOOKBACK, limit - start)
    handle.seek(limit - lookback)
    tail = handle.read(lookback + 4)  # and the bytes after: a character may run on past `limit`
    newline = tail.rfind(b"\n", 0, lookback)
    if newline >= 0:
        return limit - lookback + newline + 1

    def continues(at: int) -> bool:
        return at < len(tail) and tail[at] & 0xC0 == 0x80

    back = 0
    while back < 3 and continues(lookback - back):
        back += 1
    if limit - back > start:
        return limit - back
    forward = 0
    while forward < 3 and continues(lookback + forward):
        forward += 1
    return limit + forward


class _Between:
    """The document being read between two separators: held while short, tracked by offsets once long.

    The bytes handed to it since the last separator that the document does not hold (the
    whitespace around it, or all of them when they make no document) are counted as blank in
    `removed` when it finishes."""

    def __init__(
        self, source: str, path: Path, label: str, limit: int, crlf: bool, removed: Counter[str]
    ) -> None:
        self.source, self.path, self.label, self.limit, self.crlf = source, path, label, limit, crlf
        self.removed = removed
        self.number = 0  # documents found so far
        self._held = bytearray()
        self._held_at = 0
        self._long = False
        self._start: int | None = None  # file offsets of the first and past the last non-blank byte
        self._end = 0
        self._added = 0  # bytes handed to it since the last separator

    def add(self, data: bytes, offset: int) -> None:
        """Append the bytes found at file `offset`."""
        self._added += len(data)
        if self._long:
            self._track(data, offset)
            return
        if not self._held:
            self._held_at = offset
        self._held += data
        if len(self._held) > self.limit:
            self._long = True
            held, self._held = bytes(self._held), bytearray()
            self._track(held, self._held_at)

    def _track(self, data: bytes, offset: int) -> None:
        if self._start is None:
            blank = len(data) - len(data.lstrip(WHITESPACE))
            if blank < len(data):
                self._start = offset + blank
        if kept := len(data.rstrip(WHITESPACE)):
            self._end = offset + kept

    def _where(self) -> str:
        self.number += 1
        return f"{self.label} document {self.number}"

    def holds_text(self) -> bool:
        """Whether anything but whitespace was read since the last separator."""
        return self._start is not None if self._long else bool(bytes(self._held).strip(WHITESPACE))

    def finish(self) -> Document | FileRegion | None:
        """The document read since the last separator (None when it was only whitespace); starts anew."""
        found: Document | FileRegion | None = None
        if self._long and self._start is not None:
            found = FileRegion(self.source, self.path, self._start, self._end, self._where(), crlf=self.crlf)
        elif not self._long and (text := bytes(self._held).strip(WHITESPACE)):
            lf = as_lf(text) if self.crlf else text
            found = document(self.source, lf, self._where(), raw=len(text), crlf=self.crlf)
        self.removed[BLANK] += self._added - (0 if found is None else found.raw)
        self._held, self._long, self._start, self._end, self._added = bytearray(), False, None, 0, 0
        return found


def _separated(
    item: InputFile,
    separator: bytes,
    batch_bytes: int,
    advance: Callable[[int], None],
    removed: Counter[str],
) -> Generator[Item, None, bool]:
    """The documents between separators; returns whether the file was read (False: it holds text but
    never the separator, and nothing was yielded)."""
    with open(item.path, "rb") as handle:
        head = handle.read(BINARY_SNIFF_BYTES)
    if is_binary(head):
        size = item.path.stat().st_size
        advance(size)
        removed[BINARY] += size
        yield Skipped(item.source, "binary", f"{item.label}: {kind_of(head)}")
        return True
    start, crlf = _line_ends(head)
    marked = as_crlf(separator) if crlf else separator
    read = yield from _documents(item, marked, batch_bytes, advance, start, crlf, removed)
    if read:  # else the file is read again without a separator, which reports its line ends
        removed[BYTE_ORDER_MARK] += start
        yield from reported(item.source, start > 0, crlf)
    return read


def as_crlf(separator: bytes) -> bytes:
    """A separator as it is written in a file with CRLF line ends."""
    return separator.replace(CRLF, b"\n").replace(b"\n", CRLF)


def _documents(
    item: InputFile,
    separator: bytes,
    batch_bytes: int,
    advance: Callable[[int], None],
    start: int,
    crlf: bool,
    removed: Counter[str],
) -> Generator[Item, None, bool]:
    """The documents between separators of a file read from byte `start`; returns whether they were
    (False, and nothing yielded, when the file holds text but never the separator: it is not what
    --doc-sep says). Each separator found is counted in `removed`."""
    between = _Between(item.source, item.path, item.label, batch_bytes, crlf, removed)
    found = hits = 0
    tail, offset = b"", start  # unsearched bytes from the last block, and their file offset
    advance(start)
    with open(item.path, "rb") as handle:
        handle.seek(start)
        while block := handle.read(batch_bytes):
            advance(len(block))
            buf, pos = tail + block, 0
            while (hit := buf.find(separator, pos)) >= 0:
                hits += 1
                removed[SEPARATOR] += len(separator)
                between.add(buf[pos:hit], offset + pos)
                if (doc := between.finish()) is not None:
                    found += 1
                    yield doc
                pos = hit + len(separator)
            keep = max(pos, len(buf) - len(separator) + 1)  # a separator may start in the kept tail
            between.add(buf[pos:keep], offset + pos)
            tail, offset = buf[keep:], offset + keep
    between.add(tail, offset)
    if not hits and between.holds_text():
        return False
    if (doc := between.finish()) is not None:
        found += 1
        yield doc
    if not found:
        yield Skipped(item.source, "empty", item.label)
    return True
