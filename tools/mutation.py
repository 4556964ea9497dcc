"""Is the proof by mutation current? The latest falsify record, held against HEAD.

`make falsify` runs every ACTIVE gate's falsifier tests with the gate on and again with it
forced off, and files a record of run kind "falsify" whose GATE-INTEG-002 verdict says whether
every gate turned red. That proof holds for the code it ran and no other: once the stack, the
contracts, the gates or the tests change, a falsifier may no longer depend on its gate. So the
latest falsify record must come from a clean tree at a commit whose stack/, contracts/,
spec/gates/ and tests/ are HEAD's, its verdict must be PASS, and the code fingerprints it keeps
(tools/fingerprints.py) must be HEAD's: a record copied onto a commit whose gate code differs
still carries the fingerprints of the code it ran. (Its summary must also agree with its per-test
detail; that is derived with every record, contracts/derive/proofs.py.) `tools/check_integrity.py`
reports what `falsify_findings` returns as GATE-INTEG-002 violations; `make test --reprove`
re-runs the falsifiers of every gate whose code changed since the record (tests/gate_plugin.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from audit import RUNS_DIR, LoadedEvidence, evidence_paths, load_evidence
from fingerprints import fingerprints_at, gate_fingerprints

from contracts.derive.reports import version_key
from contracts.evidence import EvidenceRecord, Verdict
from contracts.spec import GateStatus, Spec

FALSIFY_KIND = "falsify"
# The trees a falsify record proves: a change to any of them makes the record stale.
PROVEN_TREES = ("stack", "contracts", "spec/gates", "tests")
# The spec version from which a falsify record keeps the code fingerprints of the gates it proved.
FINGERPRINTS_SINCE = "1.7.0"


def latest_of(records: list[LoadedEvidence]) -> tuple[Path, EvidenceRecord] | None:
    """The falsify record started last among `records`, with its path; None when there is none."""
    found = [
        (loaded.path, loaded.record)
        for loaded in records
        if loaded.record is not None and loaded.record.run.kind == FALSIFY_KIND
    ]
    return max(found, key=lambda pair: pair[1].run.started, default=None)


def latest_falsify(root: Path) -> tuple[Path, EvidenceRecord] | None:
    """The latest falsify record in `root`'s ledger, read from disk."""
    return latest_of([load_evidence(path) for path in evidence_paths(root)])


def _git_ok(root: Path, *args: str) -> bool:
    """Whether `git args` exits 0 in `root` (an unknown commit is an error, hence False)."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False).returncode == 0


def is_current(root: Path, sha: str) -> bool:
    """`sha` is HEAD or an ancestor of it, and the proven trees are the same at both."""
    return _git_ok(root, "merge-base", "--is-ancestor", sha, "HEAD") and _git_ok(
        root, "diff", "--quiet", sha, "HEAD", "--", *PROVEN_TREES
    )


def verdict_problems(record: EvidenceRecord, spec: Spec) -> list[str]:
    """The record must PASS every gate its kind judges, over every gate the spec has ACTIVE."""
    by_id = {result.id: result for result in record.gates}
    active = {gate_id for gate_id, gate in spec.gates.items() if gate.status is GateStatus.ACTIVE}
    problems = []
    for gate_id in spec.required_gates(FALSIFY_KIND):
        result = by_id.get(gate_id)
        if result is None:
            problems.append(f"judges no {gate_id}")
            continue
        if result.verdict is not Verdict.PASS:
            problems.append(f"{gate_id} is {result.verdict.value}: {result.message}")
        measured = result.measured if isinstance(result.measured, dict) else {}
        proven = measured.get("gates") if isinstance(measured.get("gates"), dict) else {}
        if missing := sorted(active - set(proven)):
            problems.append(f"{gate_id} leaves out ACTIVE gate(s) {', '.join(missing)}")
    return problems


def falsify_findings(root: Path, spec: Spec, records: list[LoadedEvidence]) -> list[str]:
    """Why the ledger's proof by mutation does not hold for HEAD (empty when it does).

    `records` are the ledger's records as the checker loaded them; each problem names the
    record and how to fix it.
    """
    latest = latest_of(records)
    if latest is None:
        return [f"no falsify record in {RUNS_DIR}: run `make falsify` on a clean tree and commit its record"]
    _, record = latest
    where = f"latest falsify record {record.run.id}"
    rerun = "run `make falsify` on a clean tree and commit its record"
    problems = []
    if record.code.git_dirty:
        problems.append(f"{where} was made from a dirty tree; {rerun}")
    sha = record.code.git_sha
    if sha is None or not is_current(Path(root), sha):
        trees = ", ".join(f"{tree}/" for tree in PROVEN_TREES)
        problems.append(
            f"{where} is not current: made at {str(sha)[:12]}, which is not HEAD or an ancestor of it "
            f"with the same {trees}; {rerun}"
        )
    elif not isinstance(kept := record.metrics.get("fingerprints"), dict):
        if version_key(record.spec.version) >= version_key(FINGERPRINTS_SINCE):
            problems.append(f"{where} keeps no code fingerprints of the gates it proved; {rerun}")
    else:
        now = fingerprints_at(Path(root), "HEAD") or gate_fingerprints(Path(root))
        differ = sorted(g for g, digest in now.items() if g in kept and kept[g] != digest)
        if differ:
            problems.append(
                f"{where} names commit {str(sha)[:12]}, but the gate code it proved is not HEAD's for "
                f"{', '.join(differ[:8])}{' …' if len(differ) > 8 else ''} (tools/fingerprints.py); {rerun}"
            )
    problems += [f"{where}: {problem}" for problem in verdict_problems(record, spec)]
    return problems
