"""Files that hold text in another form: read through a UTF-8 copy.

A corpus is often shipped compressed (`data.jsonl.gz`, `wiki.txt.xz`, The Pile's `00.jsonl.zst`)
or saved by a Windows tool in UTF-16. Such a file is known by its first bytes, not its name:
gzip, bzip2, xz and Zstandard by their magic numbers, UTF-16 and UTF-32 by their byte-order mark.
Before the corpus is read, each is decompressed and/or re-encoded as UTF-8, a block at a time
(never whole in memory), into a scratch directory of the prepare's staging directory, and the
copy is read in its place under the original's name (InputFile.label), so messages, examples and
the drop log name the file the user gave. A compressed file's format is that of its name without
the compression suffix (`data.jsonl.gz` is JSONL). The copies are deleted with the staging
directory. A file that cannot be read, or a compressed one that ends early, is one line of bad
input naming it; a copy that cannot be written (a full disk) is reported as prepare's own write.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import itertools
import lzma
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from contracts.errors import BadInput
from stack.data.corpus import InputFile, unreadable
from stack.data.shards import naming

BLOCK_BYTES = 1 << 20


class ZstdFrames:
    """A Zstandard file (The Pile's `.jsonl.zst`), decompressed as it is read, frame after frame.

    `zstandard`'s own stream reader returns nothing and no error for a file cut inside a frame;
    here a frame the file ends in is EOFError, as gzip, bzip2 and xz say of theirs. The library is
    imported only when such a file is met, so a corpus without one never needs it.
    """

    def __init__(self, path: Path) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._error = zstandard.ZstdError
        self._file = open(path, "rb")  # noqa: SIM115 -- closed by __exit__, as the other openers' files
        self._frame = self._new()
        self._pending = b""  # what the last frame left unread: the start of the next one
        self._inside = False  # whether the frame being read has begun and not ended

    def __enter__(self) -> ZstdFrames:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._file.close()

    def read(self, size: int) -> bytes:
        """Up to about `size` decompressed bytes (more when a block expands); b"" at the end."""
        out = b""
        while not out:
            chunk, self._pending = self._pending or self._file.read(size), b""
            if not chunk:
                if self._inside:
                    raise EOFError("the file ends inside a zstd frame")
                return b""
            if not self._inside:
                self._frame, self._inside = self._new(), True
            try:
                out = self._frame.decompress(chunk)
            except self._error as exc:
                raise ValueError(str(exc)) from None
            if self._frame.eof:
                self._pending, self._inside = self._frame.unused_data, False
        return out


# Compressed files by their magic number: the opener and the suffix their name ends with.
COMPRESSED: dict[bytes, tuple[Callable[[Path], BinaryIO], tuple[str, ...]]] = {
    b"\x1f\x8b": (gzip.GzipFile, (".gz", ".gzip")),
    b"BZh": (bz2.BZ2File, (".bz2",)),
    b"\xfd7zXZ\x00": (lzma.LZMAFile, (".xz",)),
    b"\x28\xb5\x2f\xfd": (ZstdFrames, (".zst", ".zstd")),  # type: ignore[dict-item]
}
# Text in a UTF encoding other than UTF-8, by its byte-order mark (UTF-32 first: its little-endian
# mark begins with UTF-16's).
MARKED = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


def _plain(path: Path) -> BinaryIO:
    """A file that is not compressed, opened to read its bytes."""
    return open(path, "rb")


def _encoding(head: bytes) -> str | None:
    """The UTF encoding a byte-order mark names, other than UTF-8."""
    return next((name for mark, name in MARKED.items() if head.startswith(mark)), None)


def _blocks(item: InputFile, opener: Callable[[Path], BinaryIO]) -> Iterator[bytes]:
    """The bytes of the file as `opener` reads them, a block at a time; a file that cannot be read or
    ends early is BadInput."""
    try:
        with opener(item.path) as stream:
            while block := stream.read(BLOCK_BYTES):
                yield block
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, ValueError) as exc:
        raise BadInput(f"{item.given} is damaged ({exc}); give the file whole, or leave it out") from None


def _copy(blocks: Iterator[bytes], encoding: str | None, target: Path) -> None:
    """Write the blocks to `target`, re-encoded from `encoding` to UTF-8 when given. A write that fails
    (a full disk) is an OSError naming `target`, which prepare reports as such."""
    decoder = None if encoding is None else codecs.getincrementaldecoder(encoding)("replace")
    with naming(target), open(target, "wb") as out:
        for block in blocks:
            out.write(block if decoder is None else decoder.decode(block).encode("utf-8"))
        if decoder is not None:
            out.write(decoder.decode(b"", final=True).encode("utf-8"))


def readable(item: InputFile, scratch: Path, number: int) -> InputFile:
    """`item`, or a UTF-8 copy of it in `scratch` when it is compressed or in UTF-16/UTF-32."""
    try:
        with open(item.path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    compressed = next((entry for magic, entry in COMPRESSED.items() if head.startswith(magic)), None)
    encoding = _encoding(head)
    if compressed is None and encoding is None:
        return item
    name = item.path.name
    if compressed is not None:
        opener, suffixes = compressed
        name = next((name[: -len(s)] for s in suffixes if name.lower().endswith(s)), name)
        blocks = _blocks(item, opener)
        first = next(blocks, b"")
        encoding = _encoding(first)  # a compressed file of UTF-16 text
        blocks = itertools.chain([first], blocks)
    else:
        blocks = _blocks(item, _plain)
    target = scratch / f"{number:06d}" / name
    target.parent.mkdir(parents=True)
    _copy(blocks, encoding, target)
    return replace(item, path=target, name=item.label, origin=item.path)


def readable_files(files: Sequence[InputFile], scratch: Path) -> list[InputFile]:
    """Every input file as it is read: compressed and UTF-16/UTF-32 ones through their copies."""
    return [readable(item, scratch, number) for number, item in enumerate(files)]
