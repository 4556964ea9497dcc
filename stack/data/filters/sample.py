"""What the letter-reading filters (encoding, script) read of a document: a sample spread over it.

A document's first window says how it opens, not what it is: a Russian chapter may open with a
French epigraph, a web page with an English menu. So the sample is `bytes` bytes read as `spans`
stretches of equal length, spread evenly from the document's start to its end (the whole of it
when it is shorter). The same byte ranges are read from memory or from disk (a document too long
to hold), so the verdict never depends on how a document was read.
"""

from __future__ import annotations

from collections.abc import Iterable

from stack.data.filters.settings import SampleSettings
from stack.data.utf8 import complete_prefix

_CONTINUATION, _CONTINUATION_MASK = 0x80, 0xC0


def spans(length: int, settings: SampleSettings) -> list[tuple[int, int]]:
    """The byte ranges of a document of `length` bytes that its sample is read from."""
    if length <= settings.bytes:
        return [(0, length)]
    size = max(settings.bytes // settings.spans, 1)
    last = length - size
    count = settings.spans
    return [(start, start + size) for start in sorted({last * i // max(count - 1, 1) for i in range(count)})]


def _whole_characters(piece: bytes) -> bytes:
    """A stretch without the parts of characters cut at its two edges."""
    start = 0
    while start < min(3, len(piece)) and piece[start] & _CONTINUATION_MASK == _CONTINUATION:
        start += 1
    return piece[start : complete_prefix(piece)] if start < len(piece) else b""


def sample_text(pieces: Iterable[bytes]) -> str:
    """The stretches of a sample as text, one line apart; bytes that are not UTF-8 read as U+FFFD."""
    return "\n".join(_whole_characters(piece).decode("utf-8", "replace") for piece in pieces)


def sample_of(data: bytes, settings: SampleSettings) -> str:
    """The sample of a document held in memory (valid UTF-8: a short one is read whole as it is)."""
    if len(data) <= settings.bytes:
        return data.decode("utf-8", "replace")
    return sample_text(data[start:end] for start, end in spans(len(data), settings))
