"""The exact Jaccard similarity of two documents' byte shingles, and MinHash's error allowance.

The dedup filter (stack.data.filters.dedup) drops a near duplicate on a MinHash estimate of the
Jaccard similarity of the two documents' sets of `width`-byte windows. GATE-DATA-013's dedup
check holds each drop it re-judges to the similarity measured here, with plain Python sets of
the windows' bytes: no hash, no permutation, no band, nothing the filter's own path shares;
beside it, the sha256 of the two byte strings compared (`compared_pair`), which the check holds
to the two documents the drop names.
"""

from __future__ import annotations

import hashlib
import math


def byte_shingles(data: bytes, width: int) -> set[bytes]:
    """The distinct `width`-byte windows of `data` (the whole, when it is shorter)."""
    if len(data) <= width:
        return {data}
    return {data[start : start + width] for start in range(len(data) - width + 1)}


def exact_jaccard(first: bytes, second: bytes, width: int) -> float:
    """|A ∩ B| / |A ∪ B| of the two documents' `width`-byte shingles."""
    a, b = byte_shingles(first, width), byte_shingles(second, width)
    return len(a & b) / len(a | b)


def compared_pair(kept: bytes, doc: bytes, width: int) -> dict[str, object]:
    """A near drop re-judged: the exact Jaccard similarity of the kept document's and the dropped
    document's shingles, beside the sha256 of each of the two byte strings it was computed from,
    so the record shows which two documents were compared (two different ones, GATE-DATA-013)."""
    return {
        "kept_read": hashlib.sha256(kept).hexdigest(),
        "doc_read": hashlib.sha256(doc).hexdigest(),
        "jaccard": exact_jaccard(kept, doc, width),
    }


def minhash_allowance(jaccard: float, permutations: int, sds: float) -> float:
    """`sds` standard errors of a MinHash estimate over `permutations` places at similarity
    `jaccard`: each place agrees with probability J, so the share agreeing has standard error
    sqrt(J(1 − J)/k). A true near duplicate's exact similarity lies above min_jaccard less this."""
    return sds * math.sqrt(jaccard * (1.0 - jaccard) / permutations)
