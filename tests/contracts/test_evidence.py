"""The evidence writer is atomic and its records round-trip; schemas export as JSON Schema."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    LEDGER_DIR,
    CodeInfo,
    EvidenceRecord,
    RunInfo,
    RunStatus,
    SpecRef,
    atomic_write_bytes,
    collect_code,
    collect_env,
    now,
    read_evidence,
    write_evidence,
)
from contracts.judges import judge
from contracts.ledger import judged_message, judged_result
from contracts.schemas import json_schemas
from contracts.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def _record(run_id: str, metrics: dict) -> EvidenceRecord:
    spec = load_spec()
    return EvidenceRecord(
        run=RunInfo(id=run_id, kind="test", argv=["pytest"], started=now(), status=RunStatus.RUNNING),
        code=CodeInfo(git_sha=None, git_dirty=True),
        env=collect_env("cpu"),
        spec=SpecRef(version=spec.version, sha256=spec.sha256),
        contract_mode="full",
        metrics=metrics,
    )


json_leaf = st.one_of(
    st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.text()
)


@settings(max_examples=30)
@given(st.dictionaries(st.text(min_size=1, max_size=8), json_leaf, max_size=5))
def test_record_round_trips(tmp_path_factory: pytest.TempPathFactory, metrics: dict) -> None:
    run_dir = tmp_path_factory.mktemp("run")
    record = _record("round-trip", metrics)
    path = write_evidence(run_dir, record)
    assert read_evidence(path) == record
    assert [p.name for p in run_dir.iterdir()] == ["metadata.json"]  # no temp file left behind


def test_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metadata.json"
    atomic_write_bytes(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("contracts.files.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]


def test_invalid_record_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(BadInput, match="not a valid evidence record"):
        read_evidence(tmp_path / "metadata.json")


def test_code_info_names_this_commit() -> None:
    info = collect_code(ROOT)
    assert info.git_sha is None or len(info.git_sha) == 40


def test_code_info_tells_a_clean_tree_from_edits_and_new_files(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True)
        return done.stdout

    assert collect_code(tmp_path) == CodeInfo(git_sha=None, git_dirty=True, diff_sha256=None)  # no repository
    git("init", "-q")
    assert collect_code(tmp_path).git_sha is None  # no commit yet
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD").strip()
    assert collect_code(tmp_path) == CodeInfo(git_sha=head, git_dirty=False, diff_sha256=None)
    (tmp_path / "new.py").write_text("y = 2\n")  # untracked: dirty, though `git diff` shows nothing
    assert collect_code(tmp_path) == CodeInfo(git_sha=head, git_dirty=True, diff_sha256=None)
    (tmp_path / "code.py").write_text("x = 3\n")
    edited = collect_code(tmp_path)
    assert edited.git_dirty and edited.diff_sha256 == hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()


def test_records_filed_since_the_commit_leave_the_tree_clean(tmp_path: Path) -> None:
    """A session files each command's record into the ledger: the next command of the session
    still runs the committed code, so its record names a clean tree; anything else new is dirt."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True)
        return done.stdout

    git("init", "-q")
    committed = tmp_path / LEDGER_DIR / "prepare-20261125T000000"
    committed.mkdir(parents=True)
    (committed / EVIDENCE_FILE).write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD").strip()
    for run_id in ("eval-20261125T000001", "mix-run-20261127T1551-spec-1.39.0"):
        filed = tmp_path / LEDGER_DIR / run_id
        filed.mkdir()
        (filed / EVIDENCE_FILE).write_text("{}\n")
    assert collect_code(tmp_path) == CodeInfo(git_sha=head, git_dirty=False, diff_sha256=None)
    (committed / "extra.json").write_text("{}\n")  # a file added to a committed record is dirt
    assert collect_code(tmp_path).git_dirty
    (committed / "extra.json").unlink()
    (tmp_path / LEDGER_DIR.parent / "notes.txt").write_text("x\n")  # beside the ledger: dirt
    assert collect_code(tmp_path).git_dirty


def test_env_info_reads_versions_without_importing() -> None:
    env = collect_env("cpu")
    assert env.python.startswith("3.") and env.torch


def test_json_schemas_export() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"spec", "gates", "benchmarks", "registry", "evidence"}
    assert schemas["evidence"]["additionalProperties"] is False
    assert "gates" in schemas["evidence"]["properties"]


@settings(max_examples=40, deadline=None)
@given(
    objective=st.sampled_from([math.nan, math.inf, -math.inf, 0.9]),
    value=st.sampled_from([math.nan, math.inf, 0.25]),
)
def test_a_verdict_on_non_finite_values_is_given_again_from_the_record(
    tmp_path_factory: pytest.TempPathFactory, objective: float, value: float
) -> None:
    """A gate that judged NaN or ±Inf (a loss gone NaN, a mixture's terms over no token) keeps them
    in its record as "nan", "inf", "-inf", which JSON can hold and the judge reads back: written
    and read again, its values give the judge the message the run recorded (values written as null
    would leave it nothing to read: "'objective' is None, not a number")."""
    term = {"coefficient": 0.1, "value": value, "defined": value, "derivative": 0.1}
    measured = {"objective": objective, "ce": 0.69, "terms": {"load_balance": term}}
    result = judged_result(load_spec(), "GATE-ARCH-001", measured, waived=False)
    record = _record("nan-run", {})
    record.gates = [result]
    run = tmp_path_factory.mktemp("nan")
    (read,) = read_evidence(write_evidence(run, record)).gates
    assert judged_message(judge("GATE-ARCH-001", read.measured, read.threshold)) == result.message
