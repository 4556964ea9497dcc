"""Files that hold text in another form: read through a UTF-8 copy.

A corpus is often shipped compressed (`data.jsonl.gz`, `wiki.txt.xz`) or saved by a Windows tool
in UTF-16. Such a file is known by its first bytes, not its name: gzip, bzip2 and xz by their
magic numbers, UTF-16 and UTF-32 by their byte-order mark. Before the corpus is read, each is
decompressed and/or re-encoded as UTF-8, a block at a time (never whole in memory), into a
scratch directory of the prepare's staging directory, and the copy is read in its place under
the original's name (InputFile.label), so messages, examples and the drop log name the file the
user gave. A compressed file's format is that of its name without the compression suffix
(`data.jsonl.gz` is JSONL). The copies are deleted with the staging directory.

"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from contracts.errors import BadInput
from stack.data.corpus import InputFile, unreadable

BLOCK_BYTES = 1 << 20
# Compressed files by their magic number: the opener and the suffix their name ends with.
COMPRESSED: dict[bytes, tuple[Callable[[Path], BinaryIO], tuple[str, ...]]] = {
    b"\x1f\x8b": (gzip.GzipFile, (".gz", ".gzip")),
    b"BZh": (bz2.BZ2File, (".bz2",)),
    b"\xfd7zXZ\x00": (lzma.LZMAFile, (".xz",)),
}
# Text in a UTF encoding other than UTF-8, by its byte-order mark (UTF-32 first: its little-endian
# mark begins with UTF-16's).
MARKED = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


def _opened(path: Path, head: bytes) -> tuple[BinaryIO, str] | None:
    """The decompressed stream of a compressed file and the suffix its name ends with, or None."""
    for magic, (opener, suffixes) in COMPRESSED.items():
        if head.startswith(magic):
            suffix = next((s for s in suffixes if path.name.lower().endswith(s)), "")
            return opener(path), suffix
    return None


def _encoding(head: bytes) -> str | None:
    """The UTF encoding a byte-order mark names, other than UTF-8."""
    return next((name for mark, name in MARKED.items() if head.startswith(mark)), None)


def _copy(stream: BinaryIO, encoding: str | None, target: Path) -> None:
    """Copy a stream to `target` a block at a time, re-encoded from `encoding` to UTF-8 when given."""
    with open(target, "wb") as out:
        if encoding is None:
            shutil.copyfileobj(stream, out, BLOCK_BYTES)
            return
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        while block := stream.read(BLOCK_BYTES):
            out.write(decoder.decode(block).encode("utf-8"))
        out.write(decoder.decode(b"", final=True).encode("utf-8"))


def _peek(stream: BinaryIO) -> bytes:
    """The first bytes of a stream that is read from its start next."""
    head = stream.read(4)
    stream.seek(0)
    return head


def readable(item: InputFile, scratch: Path, number: int) -> InputFile:
    """`item`, or a UTF-8 copy of it in `scratch` when it is compressed or in UTF-16/UTF-32."""
    try:
        with open(item.path, "rb") as handle:
            head = handle.read(8)
        compressed = _opened(item.path, head)
        encoding = _encoding(head)
        if compressed is None and encoding is None:
            return item
        name = item.path.name
        stream: BinaryIO
        if compressed is not None:
            stream, suffix = compressed
            name = name[: len(name) - len(suffix)] if suffix else name
        else:
            stream = open(item.path, "rb")  # noqa: SIM115 - closed below
        with stream:
            encoding = encoding if compressed is None else _encoding(_peek(stream))
            target = scratch / f"{number:06d}" / name
            target.parent.mkdir(parents=True)
            _copy(stream, encoding, target)
    except OSError as exc:
        raise unreadable(item.path, exc) from None
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, ValueError) as exc:
        raise BadInput(f"{item.path} is damaged ({exc}); give the file whole, or leave it out") from None
    return replace(item, path=target, name=item.label, origin=item.path)


def readable_files(files: Sequence[InputFile], scratch: Path) -> list[InputFile]:
    """Every input file as it is read: compressed and UTF-16/UTF-32 ones through their copies."""
    return [readable(item, scratch, number) for number, item in enumerate(files)]
