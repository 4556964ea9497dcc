"""Mis-encoded text: a document decoded with the wrong encoding, U+FFFD where its letters were.

A file saved in cp1251, GBK or Shift-JIS is not UTF-8: read as UTF-8, its letters become U+FFFD
(stack.data.utf8 replaces what is not valid), and what is left is punctuation between runs of
replacement characters, which a model would learn as text. A Latin-1 file loses a few accented
letters in a hundred and is still worth its words; a cp1251 one loses nearly all of them. So a
document is dropped when U+FFFD is more than `max_replaced_share` of its letters and U+FFFD
together, in its sample (stack.data.filters.sample); with fewer than `min_letters` of them it
is too short to tell and kept. The fix is to convert the file to UTF-8 (`iconv -f cp1251 -t
utf-8`), which prepare names.
"""

from __future__ import annotations

from contracts import filter_rules
from stack.data.filters.script import Letters
from stack.data.filters.settings import EncodingSettings


def mis_encoded(letters: Letters, settings: EncodingSettings) -> bool:
    """Whether U+FFFD is more than `max_replaced_share` of a sample's letters (never under `min_letters`):
    contracts.filter_rules.mis_encoded on the letters the filter counted."""
    return filter_rules.mis_encoded(
        letters.total, letters.replaced, settings.max_replaced_share, settings.min_letters
    )
