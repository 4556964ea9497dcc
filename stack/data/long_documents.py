"""Documents longer than the working set's batch: read again in blocks, encoded in pieces, spilled.

A long document is never held whole. Its bytes are read in blocks, repaired to valid UTF-8 and
hashed as they pass (stack.data.utf8), and regrouped into pieces cut where the tokenizer gives
the same ids as on the whole document (stack.data.tokenizer.safe_pieces), so its ids are those
of whole-document encoding. The ids go to a scratch file in the staging directory as they come.
Only at the end is the content hash, and so the split, known; the ids are then appended to
that split's shard as one document, block by block, and the scratch file is removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np

from stack.data.corpus import Document, FileRegion
from stack.data.shards import DTYPES, naming
from stack.data.tokenizer import safe_pieces
from stack.data.utf8 import Utf8Stream


class LongDocument:
    """One long document read in blocks: repaired and hashed as it passes, cut into safe pieces."""

    def __init__(self, found: Document | FileRegion, block_bytes: int) -> None:
        self.source = found.source
        self._found, self._block_bytes = found, block_bytes
        self._stream = Utf8Stream()
        self._digest = hashlib.sha256()

    def _raw(self) -> Iterator[bytes | memoryview]:
        if isinstance(self._found, FileRegion):
            yield from self._found.raw_blocks(self._block_bytes)
            return
        view = memoryview(self._found.data)
        for start in range(0, len(view), self._block_bytes):
            yield view[start : start + self._block_bytes]

    def _hashed(self) -> Iterator[bytes]:
        for block in self._stream.blocks(self._raw()):
            self._digest.update(block)
            yield block

    def text(self) -> bytes:
        """The whole repaired document, read once (for one short enough to hold)."""
        return b"".join(self._hashed())

    def pieces(self, cut: Callable[[bytearray, int], int], size: int) -> Iterator[bytes]:
        """The document in pieces of about `size` bytes cut where `cut` allows; read them once."""
        return safe_pieces(self._hashed(), cut, size)

    @property
    def sha(self) -> bytes:
        """Content hash of the repaired document: complete once its pieces have all been read."""
        return self._digest.digest()

    @property
    def invalid_utf8(self) -> bool:
        """Whether bytes had to be replaced, in this reading or when a record was parsed."""
        return self._stream.replaced or (isinstance(self._found, Document) and self._found.invalid_utf8)


class Spill:
    """The ids of one long document, in a scratch file of the final token dtype."""

    def __init__(self, directory: Path, dtype: str, name: str) -> None:
        self.path = directory / name
        self.dtype = DTYPES[dtype]
        self.tokens = 0
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed by blocks() or remove()

    def write(self, ids: np.ndarray) -> None:
        """Append ids."""
        with naming(self.path):
            self._handle.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self.tokens += len(ids)

    def blocks(self, block_bytes: int) -> Iterator[np.ndarray]:
        """Every id written, read back `block_bytes` at a time."""
        with naming(self.path):
            self._handle.close()
        count = max(block_bytes // self.dtype.itemsize, 1)
        with open(self.path, "rb") as handle:
            while chunk := handle.read(count * self.dtype.itemsize):
                yield np.frombuffer(chunk, dtype=self.dtype)

    def remove(self) -> None:
        """Delete the scratch file: it must never be published with the data."""
        with suppress(OSError):
            self._handle.close()
        self.path.unlink(missing_ok=True)
