"""The memory model of `stack prepare`: one size, the working set, and what it is divided into.

Reading and tokenizing hold at most one batch of documents at a time. Encoding a batch is what
costs memory: the `tokenizers` library keeps per-token records (ids, offsets, token strings)
and the ids come back as Python integers, about 30 bytes of memory per byte of text at the
peak (measured with byte-level BPE on English-like text). So a batch holds
`working_set / ENCODE_EXPANSION` bytes of text, and a document longer than that is cut into
pieces of `batch / PIECES_PER_BATCH` bytes at points where the tokenizer gives the same ids as
on the whole document, so that a batch of pieces keeps every core busy.

None of these sizes changes what prepare writes, only how much memory and time it takes:
`--working-set` is free to tune. What a document is judged on (whole, or its first window) is
decided by its own size against HELD_DOCUMENT_BYTES, never by the working set. This module
imports nothing heavy, so the CLI can use it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20
DEFAULT_WORKING_SET = 256 * MiB
# Below this the fixed costs (the interpreter and its libraries, about 100 MiB) dominate anyway.
MIN_WORKING_SET = 1 * MiB
# BPE trains on a seeded sample of the corpus of at most this many bytes (stack.data.bpe_sample).
DEFAULT_BPE_SAMPLE = 64 * MiB
ENCODE_EXPANSION = 40
# Documents up to this size are judged whole by every filter (dedup included) and offered whole to
# the BPE sample, whatever the working set: what prepare writes must not depend on a memory setting.
# Holding one such document costs a fraction of what encoding a batch does. Longer ones are judged
# on their first window, a sample and their length, and counted `unread`.
HELD_DOCUMENT_BYTES = 8 * MiB
PIECES_PER_BATCH = 16
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": MiB, "G": 1 << 30}
SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A size in bytes from `text`: a number with an optional K, M or G (powers of 1024), e.g. 256M."""
    match = SIZE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 256M, 2G or 1048576")
    return int(float(match[1]) * SIZE_UNITS[match[2].upper()])


def format_size(size: int) -> str:
    """A size for messages: MiB with one decimal, or KiB, or bytes when it is smaller than those."""
    if size >= MiB:
        return f"{size / MiB:,.1f} MiB"
    return f"{size / KiB:,.1f} KiB" if size >= KiB else f"{size:,} bytes"


@dataclass(frozen=True)
class WorkingSet:
    """The sizes prepare reads, batches and cuts by, all derived from one number of bytes."""

    total: int = DEFAULT_WORKING_SET

    @property
    def batch_bytes(self) -> int:
        """Text encoded in one call: documents up to this size are encoded whole, several at once."""
        return max(self.total // ENCODE_EXPANSION, 1)

    @property
    def piece_bytes(self) -> int:
        """About how long the pieces of a long document are."""
        return max(self.batch_bytes // PIECES_PER_BATCH, 1)
