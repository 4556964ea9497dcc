"""Oversize documents: one document longer than `max_bytes` is a dump (a log, a table, a corpus
pasted into one file), not a text to learn from, and it would fill whole windows on its own.

The length is known before the text is read, so a long document on disk is dropped unread.
"""

from __future__ import annotations

from contracts import filter_rules
from stack.data.filters.settings import OversizeSettings


def oversize(length: int, settings: OversizeSettings) -> bool:
    """Whether a document of `length` bytes is too long (contracts.filter_rules.oversize)."""
    return filter_rules.oversize(length, settings.max_bytes)
