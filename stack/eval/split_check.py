"""The text `stack eval --split` scores, held to the split's shards in the manifest (GATE-EVAL-003),
and the examples `stack memorization --data` draws, held to the train split's documents (GATE-DATA-005).

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.gates import Outcome, gate_require, measure
from stack.data.hashing import ids_sha256
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


def shard_documents(data_dir: Path, split: str, eot_id: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Per shard of the manifest's `split`, in shard order: its token count and its documents,
    each the ids before an end-of-text id."""
    for shard in open_split(data_dir, load_manifest(data_dir), split):
        ids = np.asarray(shard.tokens)
        ends = np.flatnonzero(ids == eot_id)
        starts = [0, *(ends[:-1] + 1).tolist()]
        yield len(ids), [ids[start:end] for start, end in zip(starts, ends.tolist(), strict=True)]


def read_split(data_dir: Path, split: str, max_bytes: int | None) -> SplitReading:
    """Every document of the manifest's shards of `split`, in shard order, each decoded on its
    own; the text keeps whole documents while it holds fewer than `max_bytes` bytes (all without)."""
    tokenizer = load_tokenizer(data_dir)
    documents = tokens = size = 0
    kept: list[str] = []
    for count, read in shard_documents(data_dir, split, tokenizer.eot_id):
        tokens, documents = tokens + count, documents + len(read)
        for ids in read:
            if max_bytes is None or size < max_bytes:
                kept.append(tokenizer.decode(ids.tolist()))
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


def train_examples_outcome(data_dir: Path, examples: list[list[int]]) -> Outcome:
    """GATE-DATA-005's check `examples`: the examples a command drew as documents of the train split
    (`stack memorization --data`, each a document's first tokens), each against the documents of
    the manifest's train shards read here: how many are no train document's beginning."""
    eot_id = load_tokenizer(data_dir).eot_id
    lengths = {len(ids) for ids in examples}
    beginnings = {
        ids_sha256(ids[:length])
        for _, read in shard_documents(Path(data_dir), "train", eot_id)
        for ids in read
        for length in lengths
        if len(ids) >= length
    }
    elsewhere = sum(ids_sha256(np.asarray(ids)) not in beginnings for ids in examples)
    measured = {"train_examples": len(examples), "train_examples_elsewhere": elsewhere}
    return measure("GATE-DATA-005", measured, holds="the examples drawn are train documents")


@gate_require("GATE-DATA-005", lambda data_dir, examples: train_examples_outcome(data_dir, examples))
def check_train_examples(data_dir: Path, examples: list[list[int]]) -> None:
    """Refuse examples drawn as training documents that are not documents of the train split: a
    recall measured on held-out text says nothing of what the model memorised."""
