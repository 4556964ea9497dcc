"""How long a piece of a text file read without a separator may be: the statute GATE-DATA-014's
check `cut` measures each such document the reader yields against, apart from the reader
that cut the file (stack.data.text_input).

A text file read without --doc-sep (or one in which the separator never occurs) is one document,
or cut at line ends into documents of at most --doc-bytes input bytes; a piece is longer only
when it is one UTF-8 character that --doc-bytes is too small to hold (at most 4 bytes).
"""

from __future__ import annotations

# The longest UTF-8 character: a piece holds at least one, whatever --doc-bytes.
MAX_CHARACTER_BYTES = 4


def within_cut(raw: int, doc_bytes: int) -> bool:
    """Whether a document read from `raw` input bytes of a text file without a separator is a piece
    --doc-bytes `doc_bytes` allows."""
    return raw <= max(doc_bytes, MAX_CHARACTER_BYTES)
