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
present, size, header, token count and sha256 (GATE-DATA-003). A failure names the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BadInput, GateViolation
from contracts.evidence import sha256_file
from contracts.gates import Outcome, gate_require, measure
from stack.data.manifest import DTYPE_VOCAB_LIMITS, DataFile, Manifest, Shard, Split

MAGIC = b"GSTOKENS"
SHARD_VERSION = 1
HEADER = struct.Struct("<8sIIQQ")
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SHARD_DIR = "shards"


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

    def add(self, tokens: np.ndarray) -> None:
        """Append one document's ids (its EOT included)."""
        if self._handle is not None and self._tokens + len(tokens) > self.shard_tokens:
            self._finish()
        if self._handle is None:
            self._path = self.root / SHARD_DIR / f"{self.split}-{self.source}-{len(self.written):05d}.bin"
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._path, "wb")  # noqa: SIM115 - closed by _finish
            self._handle.write(bytes(HEADER.size))
        self._handle.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._tokens += len(tokens)
        self._documents += 1

    def close(self) -> list[Shard]:
        """Finish the open shard; the manifest entries of every shard written."""
        if self._handle is not None:
            self._finish()
        return self.written

    def _finish(self) -> None:
        assert self._handle is not None
        self._handle.seek(0)
        self._handle.write(header_bytes(self.dtype.itemsize, self._tokens, self._documents))
        self._handle.close()
        self._handle = None
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
    if contents and sha256_file(path) != entry.sha256:
        return f"{entry.path} does not match its sha256 in the manifest (altered, or from another DATA_DIR)"
    return None


def shard_problem(data_dir: Path, entry: Shard, dtype: str, contents: bool) -> str | None:
    """What is wrong with one shard, or None; `contents` adds the sha256 of the whole file."""
    problem = _file_problem(data_dir, entry, contents=False)
    if problem is not None:
        return problem
    with open(data_dir / entry.path, "rb") as handle:
        raw = handle.read(HEADER.size)
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
    if entry.bytes != HEADER.size + tokens * itemsize:
        return f"{entry.path}: {entry.bytes} bytes cannot hold a header and {tokens} tokens"
    if contents:
        return _file_problem(data_dir, entry, contents=True)
    return None


def split_outcome(data_dir: Path, manifest: Manifest, split: str) -> Outcome:
    """GATE-DATA-003's check: every shard of `split`, and the document index, match the manifest."""
    problems = [
        problem
        for entry in manifest.shards_of(split)
        if (problem := shard_problem(data_dir, entry, manifest.dtype, contents=True)) is not None
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
    mapped = []
    for entry in manifest.shards_of(split):
        # The structural check runs even with contracts off: mapping a short file would crash.
        if (problem := shard_problem(data_dir, entry, manifest.dtype, contents=False)) is not None:
            raise BadInput(f"{problem}; re-run `stack prepare ... --out {data_dir} --force`")
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
        raise BadInput(
            f"{exc.message} [{exc.gate_id}]; re-run `stack prepare ... --out {data_dir} --force`"
        ) from None
