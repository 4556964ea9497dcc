"""The text `stack eval --split` scores, held to the split's shards in the manifest (GATE-EVAL-003).

Bits per byte of a held-out split is only that if the text scored is the split: every document
of its shards, none of the train split's. `stack.eval.texts.split_text` builds that text; this
module reads the manifest's shards of the split again, the plain way (every document ends at an
end-of-text id, each decoded on its own, whole documents in shard order up to --max-bytes), and
counts them as it goes. The check holds the text handed to the scorer to that reading by sha256,
and the reading to the manifest: as many documents and tokens as the manifest lists for the
split. It shares no code with `split_text`, so a text built from another split, or one that lost a
document at the end of each shard, shows here. It decodes the split once more, which `stack eval`
does once per command: nothing of this runs during training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.gates import Outcome, gate_require, measure
from stack.data.manifest import load_manifest
from stack.data.shards import open_split
from stack.data.tokenizer import load_tokenizer

# The split a `stack eval --split` value names in the manifest.
MANIFEST_SPLIT = {"val": "heldout"}


def text_sha256(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SplitReading:
    """A split's shards as read here: its documents and tokens counted, and the whole documents of
    the text an evaluation of it up to `max_bytes` scores, with their number."""

    documents: int
    tokens: int
    text: str
    documents_in_text: int


def read_split(data_dir: Path, split: str, max_bytes: int | None) -> SplitReading:
    """Every document of the manifest's shards of `split`, in shard order, each decoded on its
    own; the text keeps whole documents while it holds fewer than `max_bytes` bytes (all without)."""
    tokenizer = load_tokenizer(data_dir)
    documents = tokens = size = 0
    kept: list[str] = []
    for shard in open_split(data_dir, load_manifest(data_dir), split):
        ids = np.asarray(shard.tokens)
        ends = np.flatnonzero(ids == tokenizer.eot_id)
        tokens, documents = tokens + len(ids), documents + len(ends)
        for start, end in zip([0, *(ends[:-1] + 1).tolist()], ends.tolist(), strict=True):
            if max_bytes is None or size < max_bytes:
                kept.append(tokenizer.decode(ids[start:end].tolist()))
                size += len(kept[-1].encode("utf-8"))
    return SplitReading(documents, tokens, "".join(kept), len(kept))


def split_text_outcome(data_dir: Path, split: str, max_bytes: int | None, text: str) -> Outcome:
    """GATE-EVAL-003's check of the text an evaluation of `split` (its command-line name) scores:
    the manifest's documents and tokens of the split, those this reading counted, the documents
    the text should hold and its sha256 beside that of the text handed to the scorer."""
    name = MANIFEST_SPLIT[split]
    totals = load_manifest(data_dir).totals[name]
    reading = read_split(Path(data_dir), name, max_bytes)
    measured = {
        "split": name,
        "split_documents": totals.documents,
        "split_tokens": totals.tokens,
        "documents_read": reading.documents,
        "tokens_read": reading.tokens,
        "whole_split": max_bytes is None,
        "documents_scored": reading.documents_in_text,
        "split_text_sha256": text_sha256(reading.text),
        "text_sha256": text_sha256(text),
    }
    return measure("GATE-EVAL-003", measured, holds=f"the text scored is the {name} split's")


@gate_require(
    "GATE-EVAL-003",
    lambda data_dir, split, max_bytes, text: split_text_outcome(data_dir, split, max_bytes, text),
)
def check_split_text(data_dir: Path, split: str, max_bytes: int | None, text: str) -> None:
    """Refuse to score a text for `split` that is not that split's documents, as its shards hold them."""
