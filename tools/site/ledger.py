"""The ledger as the site sees it: every record, every verdict, the proof by mutation, the releases.

Loaded once per build and handed to every page, so the dashboard, the run pages, the gate pages
and the comparisons count from the same evidence and cannot disagree. Nothing here judges: the
verdicts are the records' own, and stale means what the integrity check means by it (a schema-1
record, or a result judged under an older revision of its gate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord
from contracts.proof_lock import entry_problems, read_lock
from contracts.registry import REGISTRY_FILE, Registry, ReleasedModel, read_registry
from contracts.spec import Spec, load_spec_from
from tools.integrity.audit import (
    CoverageRow,
    GateVerdict,
    LoadedEvidence,
    coverage,
    evidence_paths,
    load_evidence,
    scan_bindings,
    scan_falsifiers,
)
from tools.integrity.proofs.fingerprints import gate_fingerprints


@dataclass(frozen=True)
class MutationProof:
    """What the proof lock proves: which gates turned red when forced off, and for which code."""

    present: bool = False  # the repository has a proof lock that reads
    proven: dict[str, bool] = field(default_factory=dict)  # gate id → its judges accept its entry
    stale: frozenset[str] = frozenset()  # gates whose code is not what their entry proved

    @property
    def current(self) -> bool:
        """Whether every entry proves the gate's code as it stands."""
        return not self.stale

    def of(self, gate_id: str) -> bool | None:
        """True proven, False not proven, None when the lock says nothing of the gate."""
        return self.proven.get(gate_id)


def mutation_proof(root: Path, spec: Spec) -> MutationProof:
    """Read the proof lock, and which of its entries the gates' code no longer matches."""
    try:
        lock = read_lock(root)
    except BadInput:
        lock = None
    if lock is None:
        return MutationProof()
    now = gate_fingerprints(root)
    proven = {g: not entry_problems(spec, g, e) for g, e in lock.items() if g in spec.gates}
    stale = frozenset(g for g, e in lock.items() if now.get(g) != e["fingerprint"])
    return MutationProof(True, proven, stale)


@dataclass
class Ledger:
    """Spec, records, coverage, releases and the proof by mutation of one repository."""

    root: Path
    spec: Spec
    records: list[LoadedEvidence]
    rows: list[CoverageRow]
    registry: Registry
    proof: MutationProof

    @cached_property
    def runs(self) -> list[LoadedEvidence]:
        """The records that validate, newest first."""
        valid = [e for e in self.records if e.record is not None]
        return sorted(valid, key=lambda e: record_of(e).run.started, reverse=True)

    @cached_property
    def by_id(self) -> dict[str, LoadedEvidence]:
        """Run id → its record (a run shown with --run may shadow nothing: ids are unique)."""
        return {record_of(e).run.id: e for e in self.runs}

    @cached_property
    def verdicts(self) -> dict[tuple[str, str], GateVerdict]:
        """(run id, gate id) → the run's verdict on the gate, with its staleness."""
        found: dict[tuple[str, str], GateVerdict] = {}
        for row in self.rows:
            for verdict in row.verdicts:
                found.setdefault((verdict.run, row.gate.id), verdict)
        return found

    @cached_property
    def _by_run(self) -> dict[str, list[GateVerdict]]:
        found: dict[str, list[GateVerdict]] = {}
        for verdict in self.verdicts.values():
            found.setdefault(verdict.run, []).append(verdict)
        return found

    def run_verdicts(self, run_id: str) -> list[GateVerdict]:
        """One run's verdicts on the gates of today's spec."""
        return self._by_run.get(run_id, [])

    def stale(self, run_id: str) -> int:
        """How many of a run's verdicts today's spec cannot re-judge."""
        return sum(v.stale for v in self.run_verdicts(run_id))

    def releases_of(self, run_id: str) -> list[ReleasedModel]:
        """The releases that cite a run as their evidence."""
        return [m for m in self.registry.models if any(c.run == run_id for c in m.evidence)]

    @cached_property
    def latest_release(self) -> ReleasedModel | None:
        """The last release in the registry that still stands (entries are appended, never removed)."""
        standing = [m for m in self.registry.models if not m.withdrawn]
        return standing[-1] if standing else None

    def cited_bytes_match(self, run_id: str, sha256: str) -> bool:
        """Whether a record's metadata.json bytes are the ones a citation hashed."""
        loaded = self.by_id.get(run_id)
        return loaded is not None and hashlib.sha256(loaded.raw).hexdigest() == sha256


def record_of(loaded: LoadedEvidence) -> EvidenceRecord:
    """The validated record of a loaded evidence file (only valid ones reach the pages)."""
    assert loaded.record is not None, loaded.path
    return loaded.record


def load_ledger(root: Path, extra_runs: list[Path] | None = None) -> Ledger:
    """Everything the site shows, read once: `root`'s spec and ledger, plus run directories
    outside the ledger (a `make demo` run, say)."""
    spec = load_spec_from(root / "spec")
    paths = evidence_paths(root) + [Path(r) / "metadata.json" for r in extra_runs or []]
    records = [load_evidence(p) for p in paths]
    rows = coverage(spec, scan_bindings(root), scan_falsifiers(root), records)
    registry = read_registry(root / REGISTRY_FILE)
    return Ledger(root, spec, records, rows, registry, mutation_proof(root, spec))
