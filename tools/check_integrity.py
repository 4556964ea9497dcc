#!/usr/bin/env python3
"""Cross-check the spec, the registry, the evidence and the code against each other.

    python tools/check_integrity.py [--root DIR] [--run RUN_DIR ...] [--json]

Exit 0 when clean, 1 when any violation is found (each names its file and record), 2 on bad
usage. Warnings (evidence made under an older gate revision, PROPOSED gates not yet covered)
are reported but do not fail the check. GATE-INTEG-001 and GATE-INTEG-002 are the rules it
enforces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from audit import (
    RUNS_DIR,
    CoverageRow,
    LoadedEvidence,
    active,
    coverage,
    evidence_paths,
    load_evidence,
    scan_bindings,
    scan_citations,
    scan_falsifiers,
)

from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord
from contracts.registry import REGISTRY_FILE, Registry, read_registry
from contracts.spec import GateKind, Spec, load_spec_from

INTEG_EVIDENCE = "GATE-INTEG-001"
INTEG_COVERAGE = "GATE-INTEG-002"


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, where (file and record id), and what."""

    rule: str
    file: str
    record: str
    message: str

    def line(self) -> str:
        record = f" [{self.record}]" if self.record else ""
        return f"{self.rule}  {self.file}{record}: {self.message}"


@dataclass
class Report:
    violations: list[Finding]
    warnings: list[Finding]
    rows: list[CoverageRow]
    records: int

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.violations,
            "records": self.records,
            "violations": [asdict(f) for f in self.violations],
            "warnings": [asdict(f) for f in self.warnings],
            "coverage": [
                {
                    "gate": row.gate.id,
                    "status": row.gate.status.value,
                    "kind": row.gate.kind.value,
                    "bindings": [str(loc) for loc in row.bindings],
                    "falsifiers": [str(loc) for loc in row.falsifiers],
                    "latest": row.verdicts[0][1] if row.verdicts else None,
                }
                for row in self.rows
            ],
        }


class Checker:
    """Collects findings while walking one repository."""

    def __init__(self, root: Path, spec: Spec) -> None:
        self.root = root.resolve()
        self.spec = spec
        self.violations: list[Finding] = []
        self.warnings: list[Finding] = []
        self._sha_cache: dict[Path, str] = {}

    def fail(self, rule: str, file: Path | str, record: str, message: str) -> None:
        self.violations.append(Finding(rule, self._rel(file), record, message))

    def warn(self, rule: str, file: Path | str, record: str, message: str) -> None:
        self.warnings.append(Finding(rule, self._rel(file), record, message))

    def _rel(self, file: Path | str) -> str:
        path = Path(file)
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _sha256(self, path: Path) -> str:
        if path not in self._sha_cache:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            self._sha_cache[path] = digest.hexdigest()
        return self._sha_cache[path]

    def check_file_ref(
        self, file: Path, record: str, base: Path, within: Path, rel: str, sha256: str, size: int
    ) -> None:
        """A cited path: relative, inside `within`, present, with the right size and checksum."""
        if Path(rel).is_absolute() or rel.startswith("~"):
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} is absolute; cite it relative")
            return
        target = (base / rel).resolve()
        if not target.is_relative_to(within):
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} leaves {self._rel(within) or '.'}")
            return
        if not target.is_file():
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} does not exist")
            return
        if target.stat().st_size != size:
            self.fail(INTEG_EVIDENCE, file, record, f"{rel}: {target.stat().st_size} bytes, cited {size}")
        elif self._sha256(target) != sha256:
            self.fail(INTEG_EVIDENCE, file, record, f"{rel}: sha256 does not match the cited one")

    def check_record(self, loaded: LoadedEvidence, within: Path, in_ledger: bool) -> None:
        """Schema, run id, cited gates (and their revisions) and artifacts of one record."""
        if loaded.record is None:
            self.fail(INTEG_EVIDENCE, loaded.path, "", f"does not validate: {loaded.error}")
            return
        record = loaded.record
        run_id = record.run.id
        if in_ledger and loaded.path.parent.name != run_id:
            self.fail(
                INTEG_EVIDENCE,
                loaded.path,
                run_id,
                f"run id differs from its directory {loaded.path.parent.name!r}",
            )
        for result in record.gates:
            gate = self.spec.gates.get(result.id)
            if gate is None:
                self.fail(INTEG_EVIDENCE, loaded.path, run_id, f"cites unknown gate {result.id}")
            elif result.revision > gate.revision:
                self.fail(
                    INTEG_EVIDENCE,
                    loaded.path,
                    run_id,
                    f"{result.id} rev {result.revision} is newer than the spec's rev {gate.revision}",
                )
            elif result.revision < gate.revision:
                self.warn(
                    "OUTDATED",
                    loaded.path,
                    run_id,
                    f"{result.id} judged under rev {result.revision}; the spec is at rev {gate.revision}",
                )
        for waiver in record.waivers:
            if waiver.gate not in self.spec.gates:
                self.fail(INTEG_EVIDENCE, loaded.path, run_id, f"waives unknown gate {waiver.gate}")
        for art in record.artifacts:
            self.check_file_ref(
                loaded.path, run_id, loaded.path.parent, within, art.path, art.sha256, art.bytes
            )

    def check_commits(self, records: list[LoadedEvidence]) -> None:
        """Every cited git sha is a commit of this repository's history."""
        cited: dict[str, list[LoadedEvidence]] = {}
        for loaded in records:
            if loaded.record is None:
                continue
            sha = loaded.record.code.git_sha
            if sha is None:
                self.fail(INTEG_EVIDENCE, loaded.path, loaded.record.run.id, "records no git commit")
            else:
                cited.setdefault(sha, []).append(loaded)
        missing = set(cited) - self._known_commits(list(cited))
        for sha in sorted(missing):
            for loaded in cited[sha]:
                assert loaded.record is not None
                self.fail(
                    INTEG_EVIDENCE,
                    loaded.path,
                    loaded.record.run.id,
                    f"git sha {sha[:12]} is not in this repository's history",
                )

    def _known_commits(self, shas: list[str]) -> set[str]:
        if not shas:
            return set()
        proc = subprocess.run(
            ["git", "-C", str(self.root), "cat-file", "--batch-check"],
            input="".join(f"{s}^{{commit}}\n" for s in shas).encode(),
            capture_output=True,
            check=False,
        )
        known = set()
        for line in proc.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "commit":
                known.add(parts[0])
        return known

    def check_registry(self, registry: Registry, records: dict[str, EvidenceRecord]) -> None:
        """Released models cite existing, clean evidence and files that match their checksums."""
        path = self.root / REGISTRY_FILE
        versions = {e.version for e in self.spec.header.changelog}
        for model in registry.models:
            name = f"{model.name}@{model.version}"
            if model.spec_version not in versions:
                self.fail(
                    INTEG_EVIDENCE,
                    path,
                    name,
                    f"spec_version {model.spec_version} is not in the spec's changelog",
                )
            if model.git_sha not in self._known_commits([model.git_sha]):
                self.fail(
                    INTEG_EVIDENCE,
                    path,
                    name,
                    f"git sha {model.git_sha[:12]} is not in this repository's history",
                )
            for run_id in model.evidence:
                record = records.get(run_id)
                if record is None:
                    self.fail(
                        INTEG_EVIDENCE,
                        path,
                        name,
                        f"cites evidence run {run_id!r}, which is not under {RUNS_DIR}",
                    )
                elif record.code.git_dirty:
                    self.fail(
                        INTEG_EVIDENCE, path, name, f"evidence run {run_id!r} was made from a dirty tree"
                    )
            for art in model.artifacts:
                if art.path is not None:
                    self.check_file_ref(path, name, self.root, self.root, art.path, art.sha256, art.bytes)
            card = (self.root / model.card).resolve()
            if not card.is_relative_to(self.root) or not card.is_file():
                self.fail(
                    INTEG_EVIDENCE,
                    path,
                    name,
                    f"model card {model.card!r} does not resolve inside the repository",
                )

    def check_citations(self) -> None:
        """Every gate id cited in code, tests, docs, evidence or README is in the spec."""
        for gate_id, places in scan_citations(self.root).items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(INTEG_EVIDENCE, loc.file, f"line {loc.line}", f"cites unknown gate {gate_id}")

    def check_coverage(self, rows: list[CoverageRow], bindings: dict, falsifiers: dict) -> None:
        """ACTIVE gates have falsifiers (and runtime ones bindings); nothing binds an unknown gate."""
        for gate_id, places in bindings.items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(
                        INTEG_COVERAGE,
                        loc.file,
                        f"line {loc.line}",
                        f"orphan binding: {gate_id} is not in the spec",
                    )
        for gate_id, places in falsifiers.items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(INTEG_COVERAGE, loc.file, loc.name, f"falsifier cites unknown gate {gate_id}")
        for row in rows:
            gate = row.gate
            where = f"spec/{self.spec.gate_files[gate.id]}"
            if not active(gate):
                if gate.status.value == "PROPOSED" and not row.covered:
                    self.warn("PROPOSED", where, gate.id, "not yet covered (no falsifier or binding)")
                continue
            if not row.falsifiers:
                self.fail(
                    INTEG_COVERAGE, where, gate.id, "ACTIVE gate has no falsifier test (@pytest.mark.gate)"
                )
            if gate.kind is GateKind.RUNTIME and not row.bindings:
                self.fail(INTEG_COVERAGE, where, gate.id, "ACTIVE runtime gate has no contract binding")


def run_checks(root: Path, extra_runs: list[Path]) -> Report:
    """Every check over one repository (and any extra run directories)."""
    root = root.resolve()
    try:
        spec = load_spec_from(root / "spec")
    except BadInput as exc:
        finding = Finding(INTEG_EVIDENCE, "spec", "", str(exc))
        return Report([finding], [], [], 0)
    checker = Checker(root, spec)
    ledger = [load_evidence(p) for p in evidence_paths(root)]
    for loaded in ledger:
        checker.check_record(loaded, root, in_ledger=True)
    extra = []
    for run_dir in extra_runs:
        loaded = load_evidence(run_dir / "metadata.json")
        extra.append(loaded)
        checker.check_record(loaded, run_dir.resolve(), in_ledger=False)
    checker.check_commits(ledger + extra)
    try:
        registry = read_registry(root / REGISTRY_FILE)
    except BadInput as exc:
        checker.fail(INTEG_EVIDENCE, root / REGISTRY_FILE, "", str(exc))
    else:
        by_id = {e.record.run.id: e.record for e in ledger if e.record is not None}
        checker.check_registry(registry, by_id)
    checker.check_citations()
    bindings, falsifiers = scan_bindings(root), scan_falsifiers(root)
    rows = coverage(spec, bindings, falsifiers, ledger + extra)
    checker.check_coverage(rows, bindings, falsifiers)
    return Report(checker.violations, checker.warnings, rows, len(ledger) + len(extra))


def render_human(report: Report) -> str:
    """The report as a person reads it: coverage table, then warnings, then violations."""
    lines = ["gate               status      kind       bindings  falsifiers  latest"]
    for row in report.rows:
        latest = row.verdicts[0][1] if row.verdicts else "-"
        lines.append(
            f"{row.gate.id:<18} {row.gate.status.value:<11} {row.gate.kind.value:<10} "
            f"{len(row.bindings):>8}  {len(row.falsifiers):>10}  {latest}"
        )
    active_rows = [r for r in report.rows if active(r.gate)]
    covered = sum(r.covered for r in active_rows)
    lines.append(
        f"\n{covered}/{len(active_rows)} ACTIVE gates covered; {report.records} evidence record(s) checked"
    )
    for finding in report.warnings:
        lines.append(f"warning  {finding.line()}")
    for finding in report.violations:
        lines.append(f"VIOLATION  {finding.line()}")
    lines.append(
        "integrity: OK" if not report.violations else f"integrity: {len(report.violations)} violation(s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="repository to check (default: this one)",
    )
    parser.add_argument(
        "--run", type=Path, action="append", default=[], help="also check the evidence of this run directory"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not (args.root / "spec").is_dir():
        print(
            f"check_integrity: {args.root} has no spec/ directory; pass --root the repository",
            file=sys.stderr,
        )
        return 2
    for run_dir in args.run:
        if not (run_dir / "metadata.json").is_file():
            print(f"check_integrity: {run_dir} has no metadata.json; pass a run directory", file=sys.stderr)
            return 2
    report = run_checks(args.root, args.run)
    print(json.dumps(report.to_json(), indent=2) if args.json else render_human(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
