"""Train / held-out assignment by document content, and the index that proves the two disjoint.

A document's split is drawn from sha256(seed, sha256(content)), never from its path or its
position in the walk: the same text always lands in the same split, wherever and however often
it occurs, so a duplicated file cannot leak into the held-out set (GATE-DATA-005). The index
(documents.npy) keeps one row per document, a 64-bit prefix of its content hash and its split,
so readers can re-check the disjointness of what they are about to read.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.data.manifest import Split

INDEX_DTYPE = np.dtype([("doc", "<u8"), ("heldout", "u1")])


def content_sha256(data: bytes) -> bytes:
    """The identity of a document: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(data).digest()


def assign_split(doc_sha: bytes, seed: int, val_fraction: float) -> Split:
    """`heldout` for a `val_fraction` share of documents, chosen by content hash and seed alone."""
    draw = hashlib.sha256(seed.to_bytes(8, "little") + doc_sha).digest()
    return "heldout" if int.from_bytes(draw[:8], "little") < val_fraction * 2**64 else "train"


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
        raise BadInput(
            f"{path} is not a document index ({exc}); re-run `stack prepare ... --force`"
        ) from None
    if index.dtype != INDEX_DTYPE or index.ndim != 1:
        raise BadInput(
            f"{path} has dtype {index.dtype}, not a document index; re-run `stack prepare ... --force`"
        )
    return index
