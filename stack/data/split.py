"""Train / held-out assignment by document content, and the index that proves the two disjoint.

A document's split is drawn from sha256(seed, its identity), the identity a pure function of its
content defined in contracts.split (a document's bytes, a fine-tuning example's turns), never from
its path or its position in the walk: the same text always lands in the same split, wherever and however often
it occurs, so a duplicated file cannot leak into the held-out set (GATE-DATA-005). The index
(documents.npy) keeps one row per document, a 64-bit prefix of its content hash and its split,
so readers can re-check the disjointness of what they are about to read.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.split import content_counts, held_out, share_measured, shared_keys
from stack.data.damage import Damaged
from stack.data.manifest import Split

INDEX_DTYPE = np.dtype([("doc", "<u8"), ("heldout", "u1")])


def assign_split(doc_sha: bytes, seed: int, val_fraction: float) -> Split:
    """`heldout` for a `val_fraction` share of documents, chosen by content hash and seed alone
    (contracts.split's rule)."""
    return "heldout" if held_out(doc_sha, seed, val_fraction) else "train"


class Assigned:
    """The documents of a prepare by the split each was written to, and how many of them the
    held-out rule (contracts.split.held_out) puts in the other split: counted as each is written,
    from its own content hash, so an assignment that holds out another share than the seed and
    val_fraction draw shows, document by document, whatever the counts add up to."""

    def __init__(self, seed: int, val_fraction: float) -> None:
        self.seed, self.val_fraction = seed, val_fraction
        self.documents = self.off_rule = 0

    def add(self, doc_sha: bytes, split: Split) -> None:
        """One document written to `split`."""
        self.documents += 1
        self.off_rule += (split == "heldout") != held_out(doc_sha, self.seed, self.val_fraction)


def _assigned_outcome(assigned: Assigned) -> Outcome:
    measured = {"assigned_documents": assigned.documents, "documents_off_rule": assigned.off_rule}
    return measure(
        "GATE-DATA-005", measured, holds="every document is in the split the held-out rule gives it"
    )


@gate_require("GATE-DATA-005", _assigned_outcome)
def check_assigned(assigned: Assigned) -> None:
    """Refuse a split in which a document sits where the rule does not put it."""


class Stored:
    """The key of every document (a fine-tuning set's every example) as the shards store it, by the
    split it was written to (contracts.split: StoredDigest, stored_example_key): what GATE-DATA-005's
    check `stored` reads the overlap of the splits from, apart from the identity they were drawn by."""

    def __init__(self) -> None:
        self.keys: dict[Split, list[bytes]] = {"train": [], "heldout": []}

    def add(self, split: Split, key: bytes) -> None:
        """One document written to `split`, keyed as stored."""
        self.keys[split].append(key)


def _stored_outcome(stored: Stored) -> Outcome:
    train, heldout = stored.keys["train"], stored.keys["heldout"]
    measured = {
        "stored_documents": len(train) + len(heldout),
        "stored_heldout": len(heldout),
        "stored_shared": shared_keys(train, heldout),
    }
    return measure("GATE-DATA-005", measured, holds="no held-out document is stored as a train one")


@gate_require("GATE-DATA-005", _stored_outcome)
def check_stored(stored: Stored) -> None:
    """Refuse a split whose held-out shards store a document (an example) its train shards store too,
    whatever identity the split was drawn by."""


def _share_outcome(manifest: dict[str, Any], index: np.ndarray) -> Outcome:
    measured = (share_measured(manifest) or {}) | content_counts(
        index["doc"].tolist(), index["heldout"].astype(bool).tolist()
    )
    return measure("GATE-DATA-005", measured, holds="the contents held out are a share val_fraction draws")


@gate_require("GATE-DATA-005", _share_outcome)
def check_share(manifest: dict[str, Any], index: np.ndarray) -> None:
    """Refuse a manifest (as JSON) and the document index written with it whose distinct contents
    per split (a text corpus's documents, a fine-tuning set's examples, copies counted once) are a
    share its `val_fraction` cannot have drawn, by the exact binomial tail GATE-DATA-005 bounds."""


def index_row(doc_sha: bytes, split: Split) -> tuple[int, int]:
    """One row of the document index."""
    return int.from_bytes(doc_sha[:8], "little"), int(split == "heldout")


def disjoint_outcome(index: np.ndarray) -> Outcome:
    """GATE-DATA-005's check: no document hash is in both splits."""
    heldout = index["heldout"].astype(bool)
    shared = np.intersect1d(index["doc"][~heldout], index["doc"][heldout])
    holds = f"train ({int((~heldout).sum())} docs) and held-out ({int(heldout.sum())} docs) are disjoint"
    return measure("GATE-DATA-005", {"shared_documents": int(shared.size)}, holds=holds)


@gate_require("GATE-DATA-005", lambda index: disjoint_outcome(index))
def write_index(path: Path, index: np.ndarray) -> None:
    """Save the document index; a split that is not disjoint is never written."""
    payload = io.BytesIO()
    np.save(payload, np.ascontiguousarray(index, dtype=INDEX_DTYPE), allow_pickle=False)
    with open(path, "wb") as handle:
        # One plain write: numpy's own file path reports a full disk as a byte count, without ENOSPC.
        handle.write(payload.getbuffer())


@gate_ensure("GATE-DATA-005", lambda result: disjoint_outcome(result))
def read_index(path: Path) -> np.ndarray:
    """Load a document index (already checked against the manifest) and re-check disjointness."""
    try:
        index = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise Damaged(Path(path).parent, f"{path} is not a document index ({exc})") from None
    if index.dtype != INDEX_DTYPE or index.ndim != 1:
        raise Damaged(Path(path).parent, f"{path} has dtype {index.dtype}, not a document index")
    return index
