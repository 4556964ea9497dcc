"""Scratch repositories for auditing: a copy of the spec, a git history and evidence.

The integrity checker's tests plant one defect at a time in such a repository, and its
benchmark fills one with thousands of records. Both build it here, so the two cannot drift.
Two kinds are built: `make_repo`, a bare repository with the spec and synthetic records
(`make_record`), and `copy_repo`, a copy of this repository with its history, its ledger and
its registry, in which a real run can be trained and released.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from contracts.errors import BadInput
from contracts.evidence import (
    REPO_ROOT,
    Artifact,
    CodeInfo,
    EnvInfo,
    EvidenceRecord,
    GateResult,
    RunInfo,
    RunStatus,
    Verdict,
    now,
    sha256_file,
    spec_ref,
    write_evidence,
)
from contracts.judges import TEST_FAILED, TEST_PASSED
from contracts.ledger import judged_result
from contracts.proof_lock import CONFORMANCE_KIND, LOCK_FILE, conformance_verdict, gate_entry
from contracts.proof_lock import write_lock as write_lock_file
from contracts.reading import load_yaml
from contracts.spec import (
    POLICY_FILES,
    GateStatus,
    Spec,
    load_spec_from,
    policy_digest,
    spec_files,
    thresholds_digest,
)
from tools.integrity.audit import RUNS_DIR
from tools.integrity.proofs.falsifier_sources import MODULE_MARK, TestFile, modules_in
from tools.integrity.proofs.fingerprints import gate_fingerprints

FALSIFIERS = """import pytest


@pytest.mark.gate("GATE-INTEG-001")
def test_integ_001():
    assert True


@pytest.mark.gate("GATE-INTEG-002")
def test_integ_002():
    assert True
"""
# What copy_repo takes from this repository's working tree: what the checker reads, and the
# sources a run trained inside the copy imports.
COPIED = (
    "spec",
    "evidence",
    "docs",
    "tests",
    "stack",
    "contracts",
    "README.md",
    "pyproject.toml",
    ".gitignore",
)
NOT_COPIED = shutil.ignore_patterns("__pycache__", "reference", ".pytest_cache")
# The run kind of `make_record`'s records, declared in a scratch spec by `make_repo`.
SYNTHETIC = "synthetic"


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity; returns stdout."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=scratch", "-c", "user.email=scratch@localhost", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in `repo`'s tree; returns the new commit's sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(root: Path, lock: bool = True) -> str:
    """A repository with this project's spec, falsifiers for the ACTIVE gates, an empty registry,
    and (unless `lock` is False) a proof lock that proves them; returns the sha of the commit
    that holds the code."""
    shutil.copytree(REPO_ROOT / "spec", root / "spec")
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_integ.py").write_text(FALSIFIERS)
    (root / "evidence" / "runs").mkdir(parents=True)
    (root / "evidence" / "registry.yaml").write_text("models: []\n")
    # The scratch spec keeps only INTEG in force, however many gates the real spec makes ACTIVE.
    for path in (root / "spec" / "gates").glob("*.yaml"):
        if path.name != "integ.yaml":
            path.write_text(path.read_text().replace("status: ACTIVE", "status: PROPOSED"))
    declare_run_kind(root, SYNTHETIC, "a scratch record of the integrity check's tests and benchmark")
    if lock:
        write_lock(root)
    git(root, "init", "-q", "-b", "main")
    return commit_all(root, "scratch")


def write_lock(root: Path, proven: bool = True) -> Path:
    """The proof lock `make proofs` would write for `root`'s working tree: every ACTIVE gate's
    marked tests passed with the gate on and, when `proven`, failed with it off, under the code
    fingerprints of the tree as it is."""
    spec = scratch_spec(root)
    fingerprints = gate_fingerprints(root)
    modules = dict(modules_in(root))
    conformance = spec.required_gates(CONFORMANCE_KIND)
    gates = {}
    for gate_id, gate in spec.gates.items():
        if gate.status is not GateStatus.ACTIVE:
            continue
        tests = marked_tests(modules, gate_id, "gate") or list(
            falsifier_measured(gate_id, TEST_PASSED)["falsifiers"]
        )
        off = TEST_FAILED if proven else TEST_PASSED
        holds = (
            dict.fromkeys(marked_tests(modules, gate_id, "holds"), TEST_PASSED)
            if gate_id in conformance
            else None
        )
        entry = gate_entry(
            fingerprints.get(gate_id, ""), dict.fromkeys(tests, (TEST_PASSED, off)), holds, None
        )
        if gate_id in conformance:
            entry["conformance"] = conformance_verdict(spec, gate_id, entry)
        gates[gate_id] = entry
    return write_lock_file(root, gates)


def marked_tests(modules: dict[str, TestFile | None], gate_id: str, mark: str) -> list[str]:
    """The node ids of the tests marked `mark` for `gate_id` (a test, a class, or each test of a
    module marked whole), as the plugin lists them and the checker reads them."""
    found = []
    for path, module in sorted(modules.items()):
        if module is None:
            continue
        for owner, gates in sorted(module.marked((mark,)).items()):
            if gate_id in gates:
                names = (
                    [owner] if owner != MODULE_MARK else sorted(n for n in module.defined if "::" not in n)
                )
                found.extend(f"{path}::{name}" for name in names)
    return found


def copy_repo(dst: Path) -> str:
    """A copy of this repository at `dst`: its git history, with today's working tree committed
    on top, with a proof lock for it; returns the sha of HEAD.

    The history is cloned because records and the registry cite commits of it; the working tree
    is copied (not checked out) because it is what the checker reads now, uncommitted edits
    included, and a lock that proves it is written. The copy's own
    stack/ and contracts/ make a run started inside it record the copy's
    commit, as a run of this repository records this one's.
    """
    # --no-local: git's own transport, so the history arrives as one pack of a few files instead of
    # thousands of loose objects, which every copy of the copy (tests make dozens) would copy again.
    clone = ["git", "clone", "-q", "--no-checkout", "--no-local", str(REPO_ROOT), str(dst)]
    subprocess.run(clone, check=True)
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dst / name, ignore=NOT_COPIED)
        elif source.is_file():
            shutil.copy2(source, dst / name)
    # The copy's code may not be what this repository's lock proved (uncommitted edits); a scratch
    # lock stands in, so the copy is clean whether or not this repository's own proof is current.
    write_lock(dst)
    return commit_all(dst, "scratch copy of the working tree")


def falsifier_measured(gate_id: str, outcome: str) -> dict[str, Any]:
    """Measured values of a test-judged gate: its scratch falsifier, and how that test ended."""
    name = "test_" + gate_id.removeprefix("GATE-").lower().replace("-", "_")
    return {"falsifiers": {f"tests/test_integ.py::{name}": outcome}}


@lru_cache(maxsize=8)
def _spec(spec_dir: Path, mtime_ns: int) -> Spec:
    return load_spec_from(spec_dir)


def scratch_spec(root: Path) -> Spec:
    """The spec of a scratch repository, loaded again only when one of its files changed."""
    spec_dir = root / "spec"
    return _spec(spec_dir, max(p.stat().st_mtime_ns for p in spec_files(spec_dir)))


def _result(spec: Spec, gate_id: str, outcome: str) -> GateResult:
    """The result the run's ledger would write for a gate whose falsifier ended with `outcome`."""
    measured = falsifier_measured(gate_id, outcome)
    if gate_id not in spec.gates:  # no judge to ask: written as claimed, for the checker to refuse
        return GateResult(id=gate_id, revision=1, verdict=Verdict.PASS, measured=measured)
    return judged_result(spec, gate_id, measured, waived=False)


def make_record(
    root: Path,
    run_id: str,
    git_sha: str,
    gates: dict[str, str] | None = None,
    artifact_text: str | None = None,
    dirty: bool = False,
    minutes: int = 0,
) -> Path:
    """Write evidence/runs/<run_id>/metadata.json, a schema-2 record, with optionally one artifact.

    `gates` maps a gate id to the outcome of its falsifier (TEST_PASSED, TEST_FAILED); each
    result is judged from it by the gate's own judge, and a run with a FAIL is halted. The record
    is thus true as written, so a test that plants one defect in it sees only that defect.
    """
    spec = scratch_spec(root)
    run_dir = root / RUNS_DIR / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    if artifact_text is not None:
        path = run_dir / "metrics.jsonl"
        path.write_text(artifact_text)
        artifacts.append(Artifact(path="metrics.jsonl", sha256=sha256_file(path), bytes=path.stat().st_size))
    results = [_result(spec, gate_id, outcome) for gate_id, outcome in (gates or {}).items()]
    halted = any(r.verdict is Verdict.FAIL for r in results)
    record = EvidenceRecord(
        run=RunInfo(
            id=run_id,
            kind=SYNTHETIC,
            argv=["scratch"],
            started=now() + timedelta(minutes=minutes),
            status=RunStatus.HALTED if halted else RunStatus.COMPLETED,
        ),
        code=CodeInfo(git_sha=git_sha, git_dirty=dirty),
        env=EnvInfo(python="3.11", platform="scratch", device="cpu"),
        spec=spec_ref(spec),
        contract_mode="full",
        gates=results,
        artifacts=artifacts,
    )
    return write_evidence(run_dir, record)


def passed(*gate_ids: str) -> dict[str, str]:
    """`make_record`'s gates argument for gates whose falsifiers all passed."""
    return dict.fromkeys(gate_ids, TEST_PASSED)


def _gate_file(root: Path, gate_id: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    for path in sorted((root / "spec" / "gates").glob("*.yaml")):
        data = load_yaml(path.read_text(encoding="utf-8"))
        for gate in data["gates"]:
            if gate["id"] == gate_id:
                return path, data, gate
    raise KeyError(f"{gate_id} is in no spec/gates/*.yaml of {root}")


def edit_gate(root: Path, gate_id: str, revision: int | None = None, **thresholds: object) -> None:
    """Set one gate's revision and threshold values in place, and nothing else (no revision
    history, no changelog, no proof): the edit an author makes by hand. Comments of the file are
    lost."""
    path, data, gate = _gate_file(root, gate_id)
    if revision is not None:
        gate["revision"] = revision
    for name, value in thresholds.items():
        gate["thresholds"][name]["value"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def bump_revision(root: Path, gate_id: str, named: bool = True, **thresholds: float) -> int:
    """Raise `gate_id` to its next revision, with new threshold values if given, as the spec asks:
    the gate file, the new digest in spec/revisions.yaml and, when `named`, a changelog line
    naming 'GATE-… rev N' under the spec's current version; a repository with a proof lock has it
    written again, as `make proofs` would. Returns the new revision."""
    _, _, gate = _gate_file(root, gate_id)
    revision = gate["revision"] + 1
    edit_gate(root, gate_id, revision, **thresholds)
    _, _, gate = _gate_file(root, gate_id)
    values = {name: t["value"] for name, t in gate.get("thresholds", {}).items()}
    header_path, revisions_path = root / "spec" / "spec.yaml", root / "spec" / "revisions.yaml"
    header = load_yaml(header_path.read_text(encoding="utf-8"))
    history = load_yaml(revisions_path.read_text(encoding="utf-8"))
    history["revisions"][gate_id].append(
        {
            "revision": revision,
            "spec_version": header["version"],
            "thresholds_sha256": thresholds_digest(values),
        }
    )
    revisions_path.write_text(yaml.safe_dump(history, sort_keys=False), encoding="utf-8")
    if named:
        header["changelog"][0]["summary"] += f" {gate_id} rev {revision}."
        header_path.write_text(yaml.safe_dump(header, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if (root / LOCK_FILE).is_file():
        with contextlib.suppress(BadInput):  # a spec that no longer loads is the check's to report
            write_lock(root)
    return revision


def bump_policy(root: Path, name: str, named: bool = True) -> int:
    """Raise policy `name` (run_kinds, options_matrix, benchmarks) to its next revision for the file as
    it is now, as the spec asks: the new content digest in spec/revisions.yaml and, when `named`, a
    changelog line naming '<name> rev N'. Returns the new revision."""
    revisions_path, header_path = root / "spec" / "revisions.yaml", root / "spec" / "spec.yaml"
    history = load_yaml(revisions_path.read_text(encoding="utf-8"))
    header = load_yaml(header_path.read_text(encoding="utf-8"))
    content = load_yaml((root / "spec" / POLICY_FILES[name]).read_text(encoding="utf-8"))
    entries = history["policies"][name]
    revision = entries[-1]["revision"] + 1
    digest = policy_digest(content)
    entries.append({"revision": revision, "spec_version": header["version"], "sha256": digest})
    revisions_path.write_text(yaml.safe_dump(history, sort_keys=False), encoding="utf-8")
    if named:
        header["changelog"][0]["summary"] += f" {name} rev {revision}."
        header_path.write_text(yaml.safe_dump(header, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return revision


def declare_run_kind(root: Path, kind: str, description: str, gates: tuple[str, ...] = ()) -> int:
    """Add run kind `kind` to `root`'s spec/run_kinds.yaml under a new run_kinds revision."""
    path = root / "spec" / "run_kinds.yaml"
    data = load_yaml(path.read_text(encoding="utf-8"))
    data["run_kinds"][kind] = {"description": description, "gates": list(gates)}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return bump_policy(root, "run_kinds")
