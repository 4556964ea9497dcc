"""Exact and near duplicates: the same text twice weighs twice, and leaks between splits as a near copy.

Exact: the 64-bit prefix of a document's sha256 (the id the document index keeps) seen before.
Near: MinHash over shingles of `shingle_bytes` UTF-8 bytes. A shingle's hash is a polynomial of
its bytes (numpy, one pass per shingle position, wrapping in 64 bits); permutation i maps a
hash h to a_i·h + c_i mod 2^64 with a_i odd (a bijection), and the signature keeps each
permutation's minimum over the document's distinct shingles. The probability that two
documents agree in one place is their Jaccard similarity, so the share of agreeing places
estimates it. Lookups go by bands: the signature is cut into `bands` bands of
permutations/bands rows, and documents that share a whole band are candidates; a candidate is a
near duplicate when its estimated similarity with an earlier document is at least
`min_jaccard`. The index holds only signatures (4 bytes a permutation) and one entry per band
per document, never text: prepare stays streaming.

Every decision is checked against something the MinHash path does not share (`Rechecks`,
GATE-DATA-013's dedup check): each exact drop's sha256 against its kept document's, and the
first `dedup_recheck_pairs` near drops by the exact Jaccard similarity of the two documents'
byte shingles (contracts.shingles), for which the writer holds the bytes of kept documents up
to GATE-DATA-013's dedup_held_bytes; the bytes of the documents kept while the sample is open are
counted, so a near drop left unjudged because its kept document was not held is excused only
where they exceed that limit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from contracts.errors import BadInput
from contracts.shingles import compared_pair
from stack.data.filters.settings import DedupSettings

_BASE = np.uint64(0x100000001B3)  # the FNV-1a prime: an odd multiplier that mixes bytes well
_CHUNK = 1 << 16  # shingles permuted at once: permutations × 512 KiB of memory


def _permutations(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (a, c) pairs: the signature of a text never depends on the run."""
    rng = np.random.default_rng(0x5EED)
    a = rng.integers(1, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    c = rng.integers(0, 2**63, size=count, dtype=np.uint64)
    return a, c


def shingle_hashes(data: bytes, width: int) -> np.ndarray:
    """The distinct 64-bit hashes of every `width`-byte window of `data` (the whole, if shorter)."""
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    if raw.size <= width:
        raw = np.pad(raw, (0, width - raw.size + 1))
    count = raw.size - width + 1
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(width):
            hashes = hashes * _BASE + raw[offset : offset + count] + np.uint64(1)
    return np.unique(hashes)


class Duplicate(NamedTuple):
    """Why a document is dropped (`dedup_exact` or `dedup_near`) and the sha256 of the earlier, kept
    document it repeats: the pair GATE-DATA-013's dedup check judges again."""

    reason: str
    kept: bytes


class NearDuplicates:
    """The signatures of the documents kept so far, and the band index that finds candidates."""

    def __init__(self, settings: DedupSettings) -> None:
        if settings.permutations % settings.bands:
            raise BadInput(
                f"--filters: dedup.permutations {settings.permutations} must be a multiple of "
                f"dedup.bands {settings.bands}"
            )
        self.settings = settings
        self._a, self._c = _permutations(settings.permutations)
        self._rows = settings.permutations // settings.bands
        self._signatures: list[np.ndarray] = []
        self._shas: list[bytes] = []  # the sha256 of each document indexed, by number
        self._bands: list[dict[bytes, int]] = [{} for _ in range(settings.bands)]
        self._exact: dict[bytes, bytes] = {}  # 64-bit prefix → the sha256 of the first document with it

    def signature(self, data: bytes) -> np.ndarray:
        """The MinHash signature of a text: per permutation, the top half of its 64-bit minimum."""
        hashes = shingle_hashes(data, self.settings.shingle_bytes)
        least = np.full(self.settings.permutations, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, hashes.size, _CHUNK):  # bounded memory for a long document
                part = hashes[None, start : start + _CHUNK] * self._a[:, None] + self._c[:, None]
                np.minimum(least, part.min(axis=1), out=least)
        return (least >> np.uint64(32)).astype(np.uint32)

    def similarity(self, first: np.ndarray, second: np.ndarray) -> float:
        """The estimated Jaccard similarity of two signatures: the share of places they agree in."""
        return float(np.mean(first == second))

    def check(self, sha: bytes, data: bytes) -> Duplicate | None:
        """The earlier document it repeats, exactly or nearly; else None (it is indexed)."""
        return self.check_signature(sha, None if sha[:8] in self._exact else self.signature(data))

    def check_signature(self, sha: bytes, signature: np.ndarray | None) -> Duplicate | None:
        """`check` with the signature made beforehand (by a worker process; None when it was not needed)."""
        key = sha[:8]
        if key in self._exact:
            return Duplicate("dedup_exact", self._exact[key])
        assert signature is not None, "a document not seen before needs its signature"
        keys = [
            signature[b * self._rows : (b + 1) * self._rows].tobytes() for b in range(self.settings.bands)
        ]
        candidates = {band[k] for band, k in zip(self._bands, keys, strict=True) if k in band}
        for c in sorted(candidates):
            if self.similarity(signature, self._signatures[c]) >= self.settings.min_jaccard:
                return Duplicate("dedup_near", self._shas[c])
        self._exact[key] = sha
        number = len(self._signatures)
        self._signatures.append(signature)
        self._shas.append(sha)
        for band, k in zip(self._bands, keys, strict=True):
            band.setdefault(k, number)
        return None


class Rechecks:
    """The dedup drops GATE-DATA-013 judges again, measured beside the index, apart from its hashes.

    Exact drops: the first `pairs`, each with its kept document's sha256 (equal, for a true
    duplicate). Near drops: the first `pairs` whose kept document's bytes are held, each with the
    exact Jaccard similarity of the two documents' `shingle_bytes`-wide shingles and the sha256 of
    each byte string compared (contracts.shingles.compared_pair). Kept documents' bytes are held in
    reading order while they fit in `held_bytes` and the sample is not full, and counted
    (`kept_bytes`) held or not; a near drop whose kept document was not held, while the sample was
    open, is counted `unheld`.
    """

    def __init__(self, settings: DedupSettings, pairs: int, held_bytes: int) -> None:
        self.settings, self.pairs = settings, pairs
        self._held: dict[bytes, bytes] = {}
        self._room = held_bytes
        self.exact: list[dict[str, str]] = []
        self.near: list[dict[str, object]] = []
        self.exact_drops = self.near_drops = self.unheld = self.kept_bytes = 0

    def note(self, sha: bytes, data: bytes, found: Duplicate | None) -> None:
        """Book one verdict of the index on the document `data` (sha256 `sha`)."""
        if found is None:
            if len(self.near) < self.pairs:
                self.kept_bytes += len(data)
                if len(data) <= self._room:
                    self._held[sha] = data
                    self._room -= len(data)
            return
        if found.reason == "dedup_exact":
            self.exact_drops += 1
            if len(self.exact) < self.pairs:
                self.exact.append({"doc": sha.hex(), "kept": found.kept.hex()})
            return
        self.near_drops += 1
        if len(self.near) == self.pairs:
            return
        kept = self._held.get(found.kept)
        if kept is None:
            self.unheld += 1
            return
        compared = compared_pair(kept, data, self.settings.shingle_bytes)
        self.near.append({"doc": sha.hex(), "kept": found.kept.hex(), **compared})
        if len(self.near) == self.pairs:
            self._held.clear()  # the sample is full: nothing more to compare with

    def as_dict(self) -> dict[str, object]:
        """What GATE-DATA-013's dedup check reads: the filter's settings, the drops and the sample."""
        s = self.settings
        return {
            "shingle_bytes": s.shingle_bytes,
            "permutations": s.permutations,
            "min_jaccard": s.min_jaccard,
            "exact_drops": self.exact_drops,
            "near_drops": self.near_drops,
            "unheld": self.unheld,
            "kept_bytes": self.kept_bytes,
            "exact": self.exact,
            "near": self.near,
        }
