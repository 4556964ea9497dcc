"""The train / held-out split, written out: which documents are held out, and how far the share of
documents held out may stray from the share asked for.

A document is held out when the first 8 bytes of sha256(seed as 8 little-endian bytes ‖ the
sha256 of its content), read little-endian, fall below val_fraction · 2**64 (`held_out`): a draw
of probability val_fraction per document, keyed by its content and the seed alone, so the same
text lands in the same split wherever it occurs. `stack prepare` assigns every document by it
(stack.data.split), and GATE-DATA-005 holds every document written to the split this rule gives
it, and the manifest's realised share to the share it states.

Identities. A document's identity is the sha256 of its UTF-8 bytes (`document_identity`); a
fine-tuning example's, the sha256 of its turns as canonical JSON (`canonical_example`,
`example_identity`): pure functions of content, defined here once, so the split the writer draws
and the one GATE-DATA-005 checks with cannot be two identities. Its check `stored` does not trust
either: it keys every document or example as the shards store it (`StoredDigest`: a text
document's stored token ids; `stored_example_key`: an example's stored ids decoded, run by run of
supervision) and counts the held-out ones whose stored form is also a train one.

The realised share. Of n documents drawn so, the number held out is Binomial(n, val_fraction);
`share_tail` is the exact two-sided probability of a count at least as far from n·val_fraction
as the one realised (twice its tail, at most 1), summed term by term, so a corpus of
five documents is judged by its own distribution and not by a normal approximation of it. The
draw is one per content, so the count judged is of distinct contents (`content_counts`): copies of
one text are one draw, wherever they were read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

# Terms of a tail below this share of the sum so far add nothing a float can hold.
TAIL_PRECISION = 1e-17


def document_identity(data: bytes) -> bytes:
    """The identity of a document: the sha256 of its UTF-8 bytes."""
    return hashlib.sha256(data).digest()


def canonical_example(turns: Sequence[tuple[str, str]]) -> bytes:
    """The bytes a fine-tuning example's identity is hashed from: its (role, text) turns as compact
    JSON, nothing of where it was read."""
    pairs = [list(turn) for turn in turns]
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def example_identity(turns: Sequence[tuple[str, str]]) -> bytes:
    """The identity of a fine-tuning example (its split, its index row, its drop-log line): the
    sha256 of its canonical turns."""
    return hashlib.sha256(canonical_example(turns)).digest()


class StoredDigest:
    """The key of one text document as a shard stores it: the sha256 of the bytes of its token ids
    (its end-of-text id included) as written, block by block, in the shards' dtype. One tokenizer
    encodes one text to one sequence of ids and never two texts to the same one (it round-trips,
    GATE-DATA-007), so equal keys are equal documents."""

    def __init__(self, dtype: str) -> None:
        self._digest = hashlib.sha256(dtype.encode("ascii"))

    def update(self, written: bytes) -> None:
        """The next bytes of the document's ids as written."""
        self._digest.update(written)

    def digest(self) -> bytes:
        return self._digest.digest()


def stored_example_key(runs: Sequence[tuple[bool, str]]) -> bytes:
    """The key of one fine-tuning example as its shard and label file store it: its ids decoded run
    by run of supervision, each run's text with whether it is supervised."""
    return hashlib.sha256(json.dumps([[bool(s), t] for s, t in runs], ensure_ascii=False).encode()).digest()


def shared_keys(train: Sequence[bytes], heldout: Sequence[bytes]) -> int:
    """How many held-out documents (or examples) are stored as some train document is."""
    seen = set(train)
    return sum(key in seen for key in heldout)


def held_out(doc_sha: bytes, seed: int, val_fraction: float) -> bool:
    """Whether the document of content sha256 `doc_sha` is held out under (seed, val_fraction)."""
    draw = hashlib.sha256(seed.to_bytes(8, "little") + doc_sha).digest()
    return int.from_bytes(draw[:8], "little") < val_fraction * 2**64


def _log_pmf(n: int, k: int, p: float) -> float:
    """log P(X = k) for X ~ Binomial(n, p), 0 < p < 1."""
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _tail(n: int, k: int, p: float, step: int) -> float:
    """P(X ≤ k) (step −1) or P(X ≥ k) (step +1), summed from k away from the mean, where the terms
    only fall, until they vanish: a few standard deviations of terms however large n is."""
    total, j = 0.0, k
    while 0 <= j <= n:
        term = math.exp(_log_pmf(n, j, p))
        total += term
        if term <= total * TAIL_PRECISION:
            break
        j += step
    return total


def share_tail(documents: int, heldout: int, val_fraction: float) -> float:
    """The two-sided tail probability of `heldout` of `documents` held out when each is held out
    with probability `val_fraction`: twice the tail on the side of the mean the count lies (the
    smaller one), at most 1; 0 for a count the draw cannot give (any held out at a share of 0)."""
    if not 0 <= heldout <= documents:
        return 0.0
    if val_fraction <= 0.0:
        return 1.0 if heldout == 0 else 0.0
    if documents == 0:
        return 1.0
    step = -1 if heldout <= documents * val_fraction else +1
    return min(1.0, 2.0 * _tail(documents, heldout, val_fraction, step))


def content_counts(keys: Sequence[int], heldout: Sequence[bool]) -> dict[str, int]:
    """GATE-DATA-005's check `contents` of what a split holds, read from its document index (one
    row per document written: its content key, whether it is held out): the distinct contents of
    both splits and those held out. The split is drawn by content, so every copy of a content lands
    where its first does: the draw is Binomial(contents, val_fraction), and copies neither widen
    the count (500 copies of a cookie banner are one draw) nor hide a split cut at another share."""
    held = {key for key, out in zip(keys, heldout, strict=True) if out}
    return {"split_contents": len(set(keys)), "heldout_contents": len(held)}


def share_measured(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """GATE-DATA-005's share values of a manifest (as JSON): the documents of both splits, those
    held out and the val_fraction it states. A fine-tuning set's documents are its examples
    (`sft.examples` per split: its shards count packed streams); a text corpus's, its `totals`.
    None where the manifest holds neither."""
    sft = manifest.get("sft")
    counts = sft.get("examples") if isinstance(sft, dict) else manifest.get("totals")
    if isinstance(counts, dict) and not isinstance(sft, dict):
        counts = {split: (row or {}).get("documents") for split, row in counts.items()}
    if not isinstance(counts, dict) or not all(isinstance(counts.get(s), int) for s in ("train", "heldout")):
        return None
    return {
        "split_documents": counts["train"] + counts["heldout"],
        "heldout_documents": counts["heldout"],
        "asked_val_fraction": manifest.get("val_fraction"),
    }
