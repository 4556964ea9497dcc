"""Which units of a corpus a BPE is trained on: the rule GATE-DATA-007's check sample holds prepare to.

`stack prepare --tokenizer bpe` offers its sampler every document (a long one in pieces) and trains
the BPE on a seeded sample bounded in bytes (stack.data.bpe_sample). The rule, written out here apart
from the sampler: a unit's priority is `u64le(sha256(SALT ‖ seed_le64 ‖ sha)[:8])`, `sha` the sha256 of
its UTF-8 bytes; the units are taken by priority, smallest first, one priority's units (copies of
one text) together, while the bytes of every unit taken, each counted with UNIT_OVERHEAD, fit the
budget; the trainer reads them in that order (`selected`). So the sample depends on the units'
content, the seed and the budget only. The sample is stated as one digest: the sha256 of its units'
sha256s, concatenated in that order (`sample_digest`).

A sampler whose priority is drawn without the seed trains seed 0's BPE for `--seed 3` and passes
every other gate, since nothing else draws the sample again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter

SALT = b"bpe-sample"
# What a kept unit costs besides its text (heap entry, tuple, bytes header), so that a corpus
# of many tiny records cannot blow the budget through overhead.
UNIT_OVERHEAD = 128


def priority(seed: int, sha: bytes) -> int:
    """The draw of the unit whose UTF-8 bytes hash to `sha` under `seed`: smaller is taken first."""
    digest = hashlib.sha256(SALT + seed.to_bytes(8, "little") + sha).digest()
    return int.from_bytes(digest[:8], "little")


def selected(units: Iterable[tuple[bytes, int]], seed: int, budget: int) -> list[bytes]:
    """The sha256s of the units (sha256, byte length) the sample of `seed` and `budget` keeps, in the
    order the trainer reads them: by priority, then by sha256."""
    ranked = sorted((priority(seed, sha), sha, length) for sha, length in units)
    kept: list[bytes] = []
    spent = 0
    for _drawn, group in groupby(ranked, key=itemgetter(0)):
        units_drawn = list(group)
        spent += sum(length + UNIT_OVERHEAD for _, _, length in units_drawn)
        if spent > budget:
            break
        kept.extend(sha for _, sha, _ in units_drawn)
    return kept


def sample_digest(shas: Iterable[bytes]) -> str:
    """The digest a sample is stated by: sha256 of its units' sha256s in the order read."""
    hasher = hashlib.sha256()
    for sha in shas:
        hasher.update(sha)
    return hasher.hexdigest()
