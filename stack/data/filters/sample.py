"""What the letter-reading filters (encoding, script) read of a document: a sample spread over it.

A document's first window says how it opens, not what it is: a Russian chapter may open with a
French epigraph, a web page with an English menu. So the sample is `bytes` bytes read as `spans`
stretches of equal length, spread evenly from the document's start to its end (the whole of it
when it is shorter). The same byte ranges are read from memory or from disk (a document too long
to hold), so the verdict never depends on how a document was read. The rule is written once in
contracts.filter_rules, which GATE-DATA-013's check rules takes the sample of a dropped document
with again; these take it with the settings in force.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts import filter_rules
from stack.data.filters.settings import SampleSettings


def spans(length: int, settings: SampleSettings) -> list[tuple[int, int]]:
    """The byte ranges of a document of `length` bytes that its sample is read from."""
    return filter_rules.sample_spans(length, settings.bytes, settings.spans)


def sample_text(pieces: Iterable[bytes]) -> str:
    """The stretches of a sample as text, one line apart; bytes that are not UTF-8 read as U+FFFD."""
    return filter_rules.sample_text(pieces)


def sample_of(data: bytes, settings: SampleSettings) -> str:
    """The sample of a document held in memory (valid UTF-8: a short one is read whole as it is)."""
    return filter_rules.sample_of(data, settings.bytes, settings.spans)
