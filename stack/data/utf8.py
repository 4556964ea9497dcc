"""Making text valid UTF-8, whole or as a stream of blocks, with the same result either way.

The tokenizers only ever see valid UTF-8: bytes that are not are replaced with U+FFFD (Python's
`errors="replace"`, one replacement per maximal invalid subpart), and the caller is told so the
manifest can count it. A document too long to hold is repaired block by block; a block is cut
only where a whole-document decoder would be between characters, so the repaired stream is byte
for byte what repairing the whole document would give (tests/data/test_data_formats.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from contracts.filter_rules import complete_prefix


def repaired(data: bytes) -> tuple[bytes, bool]:
    """`data` as valid UTF-8, and whether anything had to be replaced."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8"), True
    return data, False


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
