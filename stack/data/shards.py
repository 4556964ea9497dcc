"""Token shards: the on-disk layout, the writer prepare uses, and the verified mapping readers use.

A shard is a 32-byte little-endian header followed by the token ids:

    offset  size  field
    0       8     magic b"GSTOKENS"
    8       4     format version (u32) = 1
    12      4     bytes per token (u32): 2 for uint16, 4 for uint32
    16      8     token count (u64)
    24      8     document count (u64)
    32      ...   token ids, little-endian, documents each followed by the EOT id

Before any token of a split is read, every shard of it is checked against its manifest entry:
present, size, header, token count, sha256, and that every id is below the vocabulary size
(GATE-DATA-003). A failure names the file. The id check matters because a shard can be
rewritten together with its manifest sha256: an id past the embedding table would pass every
hash and then fail the first forward pass (an IndexError on CPU, a device-side assert on CUDA).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BadInput, GateViolation
from contracts.evidence import sha256_file
from contracts.gates import Outcome, gate_require, measure
from contracts.shard_layout import HEADER, shard_bytes
from contracts.split import StoredDigest
from stack.data.damage import Damaged
from stack.data.manifest import DTYPE_VOCAB_LIMITS, DataFile, Manifest, Shard, Split

MAGIC = b"GSTOKENS"
SHARD_VERSION = 1
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SHARD_DIR = "shards"
# The names ShardWriter gives: shards/<split>-<source>-<number>.bin (a source may hold "-").
SHARD_NAME = re.compile(rf"^{SHARD_DIR}/(train|heldout)-(.+)-([0-9]{{5,}})\.bin$")
SCAN_BYTES = 1 << 24


def dtype_for(vocab_size: int, requested: str = "auto") -> str:
    """The shard dtype: uint16 when the vocabulary fits, else uint32; a forced one must fit."""
    if requested == "auto":
        fitting = [name for name, limit in DTYPE_VOCAB_LIMITS.items() if vocab_size <= limit]
        if not fitting:
            raise BadInput(
                f"vocab size {vocab_size} does not fit uint32 token ids; use --vocab-size <= 2**32"
            )
        return fitting[0]
    if requested not in DTYPES:
        raise BadInput(f"unknown --dtype {requested!r}; use auto, uint16 or uint32")
    if vocab_size > DTYPE_VOCAB_LIMITS[requested]:
        raise BadInput(
            f"vocab size {vocab_size} does not fit --dtype {requested} "
            f"(at most {DTYPE_VOCAB_LIMITS[requested]} ids); use --dtype auto or a smaller --vocab-size"
        )
    return requested


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an OSError raised while writing `path` the file's name: a failed write() carries none.

    A full disk shows as ENOSPC from a write, a flush or a close; without the name, prepare
    could only say that the disk is full, not which file it was writing.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


class ShardWriter:
    """Appends the documents of one (split, source) stream to shards of about `shard_tokens` tokens.

    A document never spans two shards, so a shard's document count is exact.
    """

    def __init__(self, root: Path, split: Split, source: str, dtype: str, shard_tokens: int) -> None:
        self.root, self.split, self.source = root, split, source
        self.dtype = DTYPES[dtype]
        self.shard_tokens = shard_tokens
        self.written: list[Shard] = []
        self._handle = None
        self._tokens = 0
        self._documents = 0

    def add(self, tokens: np.ndarray) -> bytes:
        """Append one document's ids (its EOT included); its key as stored (`add_blocks`)."""
        return self.add_blocks(iter([tokens]), len(tokens))

    def add_blocks(self, blocks: Iterator[np.ndarray], tokens: int) -> bytes:
        """Append one document of `tokens` ids (its EOT included), given block by block; returns the
        key of the document as written (contracts.split.StoredDigest, GATE-DATA-005's check stored).

        A long document's ids arrive in blocks so that it is never held whole; the shard is
        finished first if the document would overfill it, decided on its whole length, so a
        document lands where it would have landed given at once.
        """
        if self._handle is not None and self._tokens + tokens > self.shard_tokens:
            self._finish()
        if self._handle is None:
            self._path = self.root / SHARD_DIR / f"{self.split}-{self.source}-{len(self.written):05d}.bin"
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._path, "wb")  # noqa: SIM115 - closed by _finish or discard
            self._write(bytes(HEADER.size))
        key = StoredDigest(self.dtype.name)
        for block in blocks:
            written = np.ascontiguousarray(block, dtype=self.dtype).tobytes()
            self._write(written)
            key.update(written)
            self._tokens += len(block)
        self._documents += 1
        return key.digest()

    def close(self) -> list[Shard]:
        """Finish the open shard; the manifest entries of every shard written."""
        if self._handle is not None:
            self._finish()
        return self.written

    def discard(self) -> None:
        """Close the open shard after a failure, dropping what it still buffers.

        Its file is about to be removed with the staging directory; left to the garbage
        collector, a buffer that cannot be flushed (a full disk) would print a second error.
        """
        handle, self._handle = self._handle, None
        if handle is not None:
            with suppress(OSError):
                handle.close()

    def _write(self, payload: bytes) -> None:
        assert self._handle is not None
        try:
            with naming(self._path):
                self._handle.write(payload)
        except OSError:
            self.discard()
            raise

    def _finish(self) -> None:
        assert self._handle is not None
        self._handle.seek(0)
        self._write(header_bytes(self.dtype.itemsize, self._tokens, self._documents))
        handle, self._handle = self._handle, None
        with naming(self._path):
            handle.close()  # flushes, so a full disk may show only here; the file is closed either way
        self.written.append(
            Shard(
                path=self._path.relative_to(self.root).as_posix(),
                bytes=self._path.stat().st_size,
                sha256=sha256_file(self._path),
                split=self.split,
                source=self.source,
                tokens=self._tokens,
                documents=self._documents,
            )
        )
        self._tokens = self._documents = 0


def header_bytes(itemsize: int, tokens: int, documents: int) -> bytes:
    """The 32-byte header of a shard."""
    return HEADER.pack(MAGIC, SHARD_VERSION, itemsize, tokens, documents)


def _file_problem(data_dir: Path, entry: DataFile, contents: bool) -> str | None:
    path = data_dir / entry.path
    if not path.is_file():
        return f"{entry.path} is missing"
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{entry.path} has {size} bytes, the manifest says {entry.bytes} (truncated or replaced)"
    if contents and _sha256(path) != entry.sha256:
        return f"{entry.path} does not match its sha256 in the manifest (altered, or from another DATA_DIR)"
    return None


def _sha256(path: Path) -> str | None:
    """sha256 of a file, or None when it cannot be read (which the caller reports as a mismatch)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def _scan(path: Path, dtype: np.dtype) -> tuple[str, int]:
    """sha256 of a whole shard and its largest token id, from one read of the file."""
    digest, largest = hashlib.sha256(), -1
    with open(path, "rb") as handle:
        digest.update(handle.read(HEADER.size))
        while block := handle.read(SCAN_BYTES):
            digest.update(block)
            ids = np.frombuffer(block, dtype=dtype, count=len(block) // dtype.itemsize)
            if ids.size:
                largest = max(largest, int(ids.max()))
    return digest.hexdigest(), largest


def shard_problem(data_dir: Path, entry: Shard, dtype: str, vocab_size: int, contents: bool) -> str | None:
    """What is wrong with one shard, or None.

    `contents` adds one read of the whole file: its sha256, and that no token id reaches
    `vocab_size`.
    """
    problem = _file_problem(data_dir, entry, contents=False)
    if problem is not None:
        return problem
    try:
        with open(data_dir / entry.path, "rb") as handle:
            raw = handle.read(HEADER.size)
    except OSError as exc:
        return f"{entry.path} cannot be read ({exc.strerror})"
    if len(raw) < HEADER.size:
        return f"{entry.path} is shorter than a shard header ({len(raw)} bytes)"
    magic, version, itemsize, tokens, documents = HEADER.unpack(raw)
    expected = (MAGIC, SHARD_VERSION, DTYPES[dtype].itemsize, entry.tokens, entry.documents)
    if (magic, version, itemsize, tokens, documents) != expected:
        return (
            f"{entry.path} has header (magic {magic!r}, version {version}, {itemsize}-byte tokens, "
            f"{tokens} tokens, {documents} documents); the manifest expects {expected[2]}-byte tokens, "
            f"{entry.tokens} tokens, {entry.documents} documents"
        )
    if entry.bytes != shard_bytes(tokens, itemsize):
        return f"{entry.path}: {entry.bytes} bytes cannot hold a header and {tokens} tokens"
    if not contents:
        return None
    try:
        sha256, largest = _scan(data_dir / entry.path, DTYPES[dtype])
    except OSError as exc:
        return f"{entry.path} cannot be read ({exc.strerror})"
    if sha256 != entry.sha256:
        return f"{entry.path} does not match its sha256 in the manifest (altered, or from another DATA_DIR)"
    if largest >= vocab_size:
        return (
            f"{entry.path} holds token id {largest}, but the vocabulary has {vocab_size} ids "
            f"(0..{vocab_size - 1}): the shard was altered or made with another tokenizer"
        )
    return None


def split_outcome(data_dir: Path, manifest: Manifest, split: str) -> Outcome:
    """GATE-DATA-003's check: every shard of `split`, and the document index, match the manifest."""
    vocab = manifest.tokenizer.vocab_size
    problems = [
        problem
        for entry in manifest.shards_of(split)
        if (problem := shard_problem(data_dir, entry, manifest.dtype, vocab, contents=True)) is not None
    ]
    if (problem := _file_problem(data_dir, manifest.documents, contents=True)) is not None:
        problems.append(problem)
    measured = {"mismatched_files": len(problems), "first_problem": problems[0] if problems else None}
    return measure("GATE-DATA-003", measured, holds=f"{split} shards of {data_dir} match the manifest")


@dataclass(frozen=True)
class MappedShard:
    """A verified shard and its token ids, memory-mapped read-only."""

    entry: Shard
    tokens: np.ndarray


@gate_require("GATE-DATA-003", lambda data_dir, manifest, split: split_outcome(data_dir, manifest, split))
def _map_split(data_dir: Path, manifest: Manifest, split: str) -> list[MappedShard]:
    mapped, vocab = [], manifest.tokenizer.vocab_size
    for entry in manifest.shards_of(split):
        # The structural check runs even with contracts off: mapping a short file would crash.
        if (problem := shard_problem(data_dir, entry, manifest.dtype, vocab, contents=False)) is not None:
            raise Damaged(data_dir, problem)
        tokens = np.memmap(
            data_dir / entry.path,
            dtype=DTYPES[manifest.dtype],
            mode="r",
            offset=HEADER.size,
            shape=(entry.tokens,),
        )
        mapped.append(MappedShard(entry, tokens))
    return mapped


def open_split(data_dir: Path, manifest: Manifest, split: str) -> list[MappedShard]:
    """The verified, mapped shards of one split.

    A shard that does not match its manifest is the user's to fix (re-prepare or restore the
    copy), so the gate's failure, once recorded in the ledger, reaches the user as BadInput.
    """
    try:
        return _map_split(Path(data_dir), manifest, split)
    except GateViolation as exc:
        if exc.gate_id != "GATE-DATA-003":
            raise
        raise Damaged(data_dir, f"{exc.message} [{exc.gate_id}]") from None
