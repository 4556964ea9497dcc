"""Making text valid UTF-8, whole or as a stream of blocks, with the same result either way.

The tokenizers only ever see valid UTF-8: bytes that are not are replaced with U+FFFD (Python's
`errors="replace"`, one replacement per maximal invalid subpart), and the caller is told so the
manifest can count it. A document too long to hold is repaired block by block; a block is cut
only where a whole-document decoder would be between characters, so the repaired stream is byte
for byte what repairing the whole document would give (tests/test_data_formats.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def repaired(data: bytes) -> tuple[bytes, bool]:
    """`data` as valid UTF-8, and whether anything had to be replaced."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8"), True
    return data, False


def _sequence_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence that `lead` starts (1 for ASCII and for bytes no sequence starts with)."""
    if lead >= 0xF0:
        return 4 if lead < 0xF8 else 1
    if lead >= 0xE0:
        return 3
    return 2 if lead >= 0xC0 else 1


def complete_prefix(data: bytes | bytearray) -> int:
    """Length of the longest prefix of `data` that ends where a decoder would be between characters.

    Only a sequence started in the last four bytes and not yet complete is held back; bytes that
    can never become valid are left in, since a whole-document decoder replaces them the same way.
    """
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last sequence starts here
            return len(data) - back if _sequence_length(byte) > back else len(data)
    return len(data)


class Utf8Stream:
    """Repairs a document that arrives in raw blocks; `replaced` says whether any byte was replaced."""

    def __init__(self) -> None:
        self.replaced = False
        self._pending = b""

    def blocks(self, raw: Iterable[bytes]) -> Iterator[bytes]:
        """The repaired document, in blocks that each end between two characters."""
        for block in raw:
            data = self._pending + block if self._pending else bytes(block)
            cut = complete_prefix(data)
            self._pending = data[cut:]
            if cut:
                yield self._repair(data[:cut])
        if self._pending:
            yield self._repair(self._pending)
            self._pending = b""

    def _repair(self, data: bytes) -> bytes:
        fixed, replaced = repaired(data)
        self.replaced |= replaced
        return fixed
