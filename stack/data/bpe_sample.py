"""The seeded sample of the corpus a BPE is trained on, bounded in bytes.

Training a BPE on a whole corpus costs memory in proportion to it; the merges are learnt just
as well from a few tens of MiB. prepare offers the sample every document (a long document in
pieces cut where the BPE's pre-tokenizer splits anyway, so no word is cut in two) and keeps the
ones with the smallest priority `u64(sha256("bpe-sample" ‖ seed_le64 ‖ sha256(text))[:8])`
until their bytes reach the budget. The sample therefore depends on the content, the seed and
the budget only: not on file order or layout, and not on the held-out split (the salt makes the
two draws independent). When the corpus fits the budget, the sample is all of it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

SALT = b"bpe-sample"
# What a kept unit costs besides its text (heap entry, tuple, bytes header), so that a corpus
# of many tiny records cannot blow the budget through overhead.
UNIT_OVERHEAD = 128


def priority(seed: int, sha: bytes) -> int:
    """The draw of one unit: smaller is kept first."""
    digest = hashlib.sha256(SALT + seed.to_bytes(8, "little") + sha).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class BpeSample:
    """Bottom-k by priority under a byte budget: offer units in any order, read the sample at the end."""

    budget: int
    seed: int
    offered_units: int = 0
    offered_bytes: int = 0
    kept_bytes: int = 0
    _heap: list[tuple[int, bytes]] = field(default_factory=list)

    def offer(self, text: bytes, sha: bytes) -> None:
        """Consider one unit (a document, or a piece of a long one) of valid UTF-8 with content hash `sha`."""
        self.offered_units += 1
        self.offered_bytes += len(text)
        heapq.heappush(self._heap, (-priority(self.seed, sha), text))
        self.kept_bytes += len(text) + UNIT_OVERHEAD
        while self.kept_bytes > self.budget and self._heap:
            _, dropped = heapq.heappop(self._heap)  # the largest priority kept so far
            self.kept_bytes -= len(dropped) + UNIT_OVERHEAD

    @property
    def units(self) -> int:
        """Units kept."""
        return len(self._heap)

    @property
    def text_bytes(self) -> int:
        """Bytes of text kept, without the overhead the budget also counts."""
        return self.kept_bytes - self.units * UNIT_OVERHEAD

    @property
    def complete(self) -> bool:
        """Whether every unit offered was kept: the sample is the whole corpus."""
        return self.units == self.offered_units

    def texts(self) -> Iterator[str]:
        """The kept units as text, smallest priority first: a fixed order for the trainer."""
        for _, text in sorted(self._heap, key=lambda entry: (-entry[0], entry[1])):
            yield text.decode("utf-8")
