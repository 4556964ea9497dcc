"""Whether the bytes a prepare's reader read are text in UTF-16 or UTF-32 that was never made
UTF-8: the statute GATE-DATA-014's check `marks` measures each input file against as its
reading ends, on the bytes the reader read (for a compressed file, its decompressed copy), apart
from the unpacking that should have re-encoded it (stack.data.unpack).

A file of such text starts with its encoding's byte-order mark, and the bytes after the mark
decode in that encoding to text that holds no NUL character. The reader reads UTF-8, so a file
read in this state is either skipped as holding no text (its NUL bytes look binary, and the
reason "UTF-16 without a byte-order mark" is false: it has one) or read as garbage (the mark of a
gzip'd UTF-16 file looked for in the compressed bytes can drop whole files and leave the held-out
split empty).
"""

from __future__ import annotations

import codecs

# The byte-order marks of UTF-32 and UTF-16, by encoding (UTF-32's first: its little-endian mark
# begins with UTF-16's).
MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# How many of a file's first bytes are judged.
HEAD_BYTES = 4096


def marked_text(head: bytes) -> str | None:
    """The encoding (utf-16 or utf-32) of the text `head`, a file's first bytes, is in by its
    byte-order mark, when what follows the mark decodes in it (a character cut at the end of `head`
    waits) to text without a NUL; None for any other bytes."""
    for mark, encoding in MARKS:
        if head.startswith(mark):
            try:
                text = codecs.getincrementaldecoder(encoding)("strict").decode(head)
            except UnicodeDecodeError:
                return None
            return encoding if "\x00" not in text else None
    return None
