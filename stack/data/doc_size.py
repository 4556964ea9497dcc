"""How long a document cut from a text file may be when --doc-bytes is not given.

A text file read without --doc-sep is one document, cut at line ends into pieces of at most
--doc-bytes when it is longer (stack.data.text_input). The split holds documents out whole, each
drawn by its content (contracts.split), so the share of the text it holds out is a share of
documents, close to --val-fraction only when there are enough of them. nanoGPT's `input.txt`
(1.1 MB), cut at the 1 MiB of DEFAULT_DOC_BYTES, is two documents: its held-out split was empty
at --val-fraction 0.05 and held 94 % of the text at 0.1, both correct draws of two documents.

So a corpus of text files that would make fewer than `wanted_documents` at DEFAULT_DOC_BYTES is
cut finer (`fitted_doc_bytes`): into pieces of the largest power of two bytes at most its bytes over
that many documents, so that it makes at least that many and the split expects to hold out
HELDOUT_DOCUMENTS of them; never finer than MIN_FITTED_DOC_BYTES, where a piece still fills the
diversity filter's window (the filters judge documents, and a piece of a few hundred bytes of a
loop is too short for them to tell). A power of two keeps the cut points of a corpus that grows a
little where they were (they move only when its size doubles). A corpus with files of records (JSONL,
Parquet, CSV), or read with --doc-sep, brings documents no size can count before they are read,
and is cut at DEFAULT_DOC_BYTES. --doc-bytes SIZE always cuts at SIZE. The manifest's `reading`
and the prepare's record state the size used.

Where the documents are still too few for the share asked (`off_share`), prepare says so with the
share it got: a split of few documents is correct and still not the share a user asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stack.data.defaults import DEFAULT_DOC_BYTES, HELDOUT_DOCUMENTS, MIN_FITTED_DOC_BYTES

# How far the held-out share of the text may be from --val-fraction, as a factor either way, before
# a prepare of too few documents says so: a split expecting HELDOUT_DOCUMENTS held out falls outside
# it less than once in 200 prepares, so a share beyond it says the documents were too few.
SHARE_FACTOR = 2.0


def wanted_documents(val_fraction: float) -> int:
    """The documents a corpus needs for the split to expect to hold out HELDOUT_DOCUMENTS of them
    at `val_fraction` (0 when nothing is held out)."""
    return math.ceil(HELDOUT_DOCUMENTS / val_fraction) if val_fraction > 0 else 0


def pieces(size: int, doc_bytes: int) -> int:
    """About how many documents a text file of `size` bytes is cut into at `doc_bytes` (a piece ends at
    a line end, so a few more than this where lines are long)."""
    return -(-size // doc_bytes)


def fitted_doc_bytes(sizes: Sequence[int], val_fraction: float) -> int:
    """The --doc-bytes of a corpus of text files of `sizes` bytes read without --doc-sep: DEFAULT_DOC_BYTES
    when it makes `wanted_documents` there, else the largest power of two at most the corpus's bytes
    over them (the module docstring), at least MIN_FITTED_DOC_BYTES."""
    wanted = wanted_documents(val_fraction)
    if sum(pieces(size, DEFAULT_DOC_BYTES) for size in sizes) >= wanted:
        return DEFAULT_DOC_BYTES
    each = sum(sizes) // wanted
    return max(MIN_FITTED_DOC_BYTES, 1 << (each.bit_length() - 1) if each else 0)


def off_share(heldout: int, total: int, val_fraction: float, documents: int) -> bool:
    """Whether a split of `documents` documents holding `heldout` of `total` tokens out is to be told
    apart from what --val-fraction asked: fewer documents than `wanted_documents`, and a share more
    than SHARE_FACTOR away from it either way."""
    if not (heldout and total and val_fraction > 0) or documents >= wanted_documents(val_fraction):
        return False
    share = heldout / total
    return not val_fraction / SHARE_FACTOR <= share <= val_fraction * SHARE_FACTOR
