"""Scratch repositories for auditing: a copy of the spec, a git history and synthetic evidence.

The integrity checker's tests plant one defect at a time in such a repository, and its
benchmark fills one with thousands of records. Both build it here, so the two cannot drift.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from audit import ROOT, RUNS_DIR

from contracts.evidence import (
    Artifact,
    CodeInfo,
    EnvInfo,
    EvidenceRecord,
    GateResult,
    RunInfo,
    RunStatus,
    SpecRef,
    Verdict,
    now,
    sha256_file,
    write_evidence,
)
from contracts.spec import Spec, load_spec_from

FALSIFIERS = """import pytest


@pytest.mark.gate("GATE-INTEG-001")
def test_integ_001():
    assert True


@pytest.mark.gate("GATE-INTEG-002")
def test_integ_002():
    assert True
"""


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity; returns stdout."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=scratch", "-c", "user.email=scratch@localhost", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(root: Path) -> str:
    """A repository with this project's spec, falsifiers for the ACTIVE gates, an empty registry
    and one commit; returns that commit's sha."""
    shutil.copytree(ROOT / "spec", root / "spec")
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_integ.py").write_text(FALSIFIERS)
    (root / "evidence" / "runs").mkdir(parents=True)
    (root / "evidence" / "registry.yaml").write_text("models: []\n")
    # Later issues may make more gates ACTIVE; the scratch spec keeps only INTEG in force.
    for path in (root / "spec" / "gates").glob("*.yaml"):
        if path.name != "integ.yaml":
            path.write_text(path.read_text().replace("status: ACTIVE", "status: PROPOSED"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "scratch")
    return git(root, "rev-parse", "HEAD")


@lru_cache(maxsize=8)
def _spec(spec_dir: Path, mtime_ns: int) -> Spec:
    return load_spec_from(spec_dir)


def make_record(
    root: Path,
    run_id: str,
    git_sha: str,
    gates: dict[str, Verdict] | None = None,
    artifact_text: str | None = None,
    dirty: bool = False,
    minutes: int = 0,
) -> Path:
    """Write evidence/runs/<run_id>/metadata.json citing `gates` and, optionally, one artifact."""
    gate_dir = root / "spec" / "gates"
    spec = _spec(root / "spec", max(p.stat().st_mtime_ns for p in gate_dir.iterdir()))
    run_dir = root / RUNS_DIR / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    if artifact_text is not None:
        path = run_dir / "metrics.jsonl"
        path.write_text(artifact_text)
        artifacts.append(Artifact(path="metrics.jsonl", sha256=sha256_file(path), bytes=path.stat().st_size))
    started = now() + timedelta(minutes=minutes)
    record = EvidenceRecord(
        run=RunInfo(
            id=run_id, kind="synthetic", argv=["scratch"], started=started, status=RunStatus.COMPLETED
        ),
        code=CodeInfo(git_sha=git_sha, git_dirty=dirty),
        env=EnvInfo(python="3.11", platform="scratch", device="cpu"),
        spec=SpecRef(version=spec.version, sha256=spec.sha256),
        contract_mode="full",
        gates=[
            GateResult(id=gid, revision=spec.gates[gid].revision if gid in spec.gates else 1, verdict=v)
            for gid, v in (gates or {}).items()
        ],
        artifacts=artifacts,
    )
    return write_evidence(run_dir, record)
