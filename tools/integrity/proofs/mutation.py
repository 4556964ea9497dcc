"""Is the proof by mutation current? The proof lock, held against the working tree.

`make proofs` runs the falsifier tests of every ACTIVE gate whose code changed with the gate on and
again with it forced off, and writes each such gate's entry into evidence/proofs.lock in place
(tests/gate_plugin.py, contracts/proof_lock.py). That proof holds for the code it ran and no other,
so the check refuses a lock that does not prove today's code: a gate without an entry, an entry
whose code fingerprint (tools/integrity/proofs/fingerprints.py) is not the gate's code as it stands, one whose
outcomes GATE-INTEG-002's judge (or a conformance gate's own judge) does not accept, or one whose
tests are not those marked for the gate (tools/integrity/proofs/falsifier_sources.py).
`tools/check_integrity.py` reports what `lock_findings` returns as GATE-INTEG-002 violations.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput
from contracts.proof_lock import CONFORMANCE_KIND, LOCK_FILE, lock_problems, read_lock
from contracts.spec import Spec
from tools.integrity.proofs.falsifier_sources import listing_problems, modules_in
from tools.integrity.proofs.fingerprints import gate_fingerprints

REPROVE = "run `make proofs` and commit evidence/proofs.lock"


def lock_findings(root: Path, spec: Spec) -> list[str]:
    """Why the repository's proof lock does not prove its code (empty when it does); each problem
    names the gate and how to fix it."""
    try:
        lock = read_lock(root)
    except BadInput as exc:
        return [str(exc)]
    if lock is None:
        return [f"there is no proof lock ({LOCK_FILE}); {REPROVE}"]
    found = [
        f"{LOCK_FILE}: {gate_id} {problem}; {REPROVE}"
        for gate_id, problems in lock_problems(spec, lock, gate_fingerprints(root)).items()
        for problem in problems
    ]
    conformance = spec.required_gates(CONFORMANCE_KIND)
    modules = dict(modules_in(root))
    falsifiers = {g: list(entry["falsifiers"]) for g, entry in lock.items()}
    holds = {g: list(entry.get("holds", {})) for g, entry in lock.items() if g in conformance}
    found += [f"{LOCK_FILE} {p}" for p in listing_problems(falsifiers, modules, ("gate",))]
    found += [f"{LOCK_FILE} {p}" for p in listing_problems(holds, modules, ("holds",))]
    return found
