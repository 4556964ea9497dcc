"""The seeded sample of the corpus a BPE is trained on, bounded in bytes.

Training a BPE on a whole corpus costs memory in proportion to it; the merges are learnt just
as well from a few tens of MiB. prepare offers the sample every document (a long document in
pieces cut where the BPE's pre-tokenizer splits anyway, so no word is cut in two) and keeps the
ones with the smallest priority `u64(sha256("bpe-sample" ‖ seed_le64 ‖ sha256(text))[:8])`:
the longest run of units, by priority, whose bytes fit the budget. The sample therefore depends
on the content, the seed and the budget only: not on file order or layout, and not on the
held-out split (the salt makes the two draws independent). When the corpus fits the budget,
the sample is all of it.

Offered in any order, a unit is kept while every unit of smaller priority seen so far fits
with it; once a unit had to go, no unit of its priority or above can ever come back (`cutoff`),
so copies of one document (one priority) are kept or let go together.

Every unit offered is noted by its content hash and length (`offered`, about 100 bytes a unit), so
that GATE-DATA-007's check sample can draw the sample again by contracts.bpe_sample's rule and hold
the units the trainer read to it (stack.data.sample_check).
The samples of parts of a corpus therefore merge into the sample of the whole (`merge`): each
part's sample holds every unit of the whole's that lies in the part, and its cutoff bounds the
whole's.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from contracts.bpe_sample import SALT, UNIT_OVERHEAD


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
    cutoff: int = 1 << 64  # the smallest priority ever let go: nothing at or above it is kept
    offered: list[tuple[bytes, int]] = field(default_factory=list)  # (sha256, bytes) of every unit
    _heap: list[tuple[int, bytes]] = field(default_factory=list)

    def offer(self, text: bytes, sha: bytes) -> None:
        """Consider one unit (a document, or a piece of a long one) of valid UTF-8 with content hash `sha`."""
        self.offered_units += 1
        self.offered_bytes += len(text)
        self.offered.append((sha, len(text)))
        self._keep(priority(self.seed, sha), text)

    def _keep(self, drawn: int, text: bytes) -> None:
        if drawn >= self.cutoff:
            return
        heapq.heappush(self._heap, (-drawn, text))
        self.kept_bytes += len(text) + UNIT_OVERHEAD
        self._trim()

    def _trim(self) -> None:
        while self.kept_bytes > self.budget and self._heap:
            self.cutoff = -self._heap[0][0]  # the largest priority kept so far goes, with its equals
            self._drop_from_cutoff()

    def _drop_from_cutoff(self) -> None:
        while self._heap and -self._heap[0][0] >= self.cutoff:
            _, dropped = heapq.heappop(self._heap)
            self.kept_bytes -= len(dropped) + UNIT_OVERHEAD

    def merge(self, part: BpeSample) -> None:
        """Take in the sample of another part of the corpus, drawn with the same seed and budget."""
        self.offered_units += part.offered_units
        self.offered_bytes += part.offered_bytes
        self.offered.extend(part.offered)
        self.cutoff = min(self.cutoff, part.cutoff)
        self._drop_from_cutoff()
        for drawn, text in part._heap:
            self._keep(-drawn, text)

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
