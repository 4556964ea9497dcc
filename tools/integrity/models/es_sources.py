"""What an ES record states of its noise, derived again from the model it started from.

GATE-ES-002 states the smallest norm ‖ε‖ over the members of the step it judged, and the member
seeds of that step (which the checker already derives from the run's seed, contracts.es_seeds). Each
ε is the standard normal vector of the model's parameter count a CPU generator seeded with the
member's seed draws (contracts.es_noise), so where the model the run started from is in the
repository (its lineage path, its weights hashing to the digest the lineage states) the norms
follow from the seeds and the model's parameter count alone: the stored tensors of its
model.safetensors, each once (a tied head is stored once, as the run's flat θ holds it), so a
min_noise_norm 877.57 restated as 1200 is caught. A source outside the repository gives
nothing to derive from, as for a surgery's (tools/integrity/models/surgery_sources.py).
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from contracts.es_noise import noise_norm
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.reading import read_bytes, safetensors_header

WEIGHTS = "model.safetensors"
# A derived norm agrees with the record to this relative tolerance (float32 summation order).
NORM_RTOL = 1e-6


def _source_parameters(record: EvidenceRecord, root: Path) -> int | None:
    """The parameter count of the committed model the run started from; None where its lineage
    names none in the repository whose weights hash to the digest it states."""
    source = record.config.get("source") if isinstance(record.config, dict) else None
    parents = ((source or {}).get("lineage") or {}).get("parents") if isinstance(source, dict) else None
    parent: Any = parents[0] if isinstance(parents, list) and parents else {}
    word, digest = parent.get("path"), parent.get("checkpoint_sha256")
    if not isinstance(word, str) or not isinstance(digest, str) or Path(word).is_absolute():
        return None
    path = (root / word / WEIGHTS).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    return _parameters(str(path), digest)


@lru_cache(maxsize=16)
def _parameters(path: str, digest: str) -> int | None:
    """The elements of every tensor the file stores, when it hashes to `digest`."""
    if hashlib.sha256(read_bytes(path)).hexdigest() != digest:
        return None
    header = safetensors_header(path)
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")


def es_noise_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """GATE-ES-002's min_noise_norm against the norms of its member seeds' noise (empty for other
    kinds, and for a source outside the repository)."""
    if record.run.kind != "es":
        return []
    measured = next((g.measured for g in record.gates if g.id == "GATE-ES-002"), None) or {}
    seeds, stated = measured.get("member_seeds"), measured.get("min_noise_norm")
    if not isinstance(seeds, list) or not seeds or not isinstance(stated, int | float):
        return []
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return ["GATE-ES-002's member_seeds are not all seeds: its noise norms are not derived"]
    dim = _source_parameters(record, root)
    if dim is None:
        return []
    smallest = min(noise_norm(seed, dim) for seed in dict.fromkeys(seeds))
    if math.isclose(stated, smallest, rel_tol=NORM_RTOL):
        return []
    return [
        f"GATE-ES-002's min_noise_norm is {stated!r}, but the noise of its member seeds, over its source "
        f"model's {dim} parameters, has the smallest norm {smallest:.8g} (contracts.es_noise)"
    ]
