"""Retiring ledger records with proof (tools/retire.py, tools/retirement.py, evidence/retired.yaml).

Each test works in a scratch repository (tools/scratch.py) with synthetic records that are true as
written, so a test that plants one defect sees only that defect.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from contracts.registry import REGISTRY_FILE
from contracts.retirement import RETIRED_FILE, read_retirements
from tools.integrity.check import main as check_main
from tools.integrity.check import run_checks
from tools.records.retire import main as retire_main
from tools.records.scratch import commit_all, git, make_record, make_repo, passed

RUN = "run-a"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scratch repository with two committed records, run-a and run-b."""
    root = tmp_path / "repo"
    root.mkdir()
    sha = make_repo(root)
    make_record(root, RUN, sha, passed("GATE-INTEG-001"), artifact_text='{"loss": 1.0}\n')
    make_record(root, "run-b", sha, passed("GATE-INTEG-001"), minutes=1)
    commit_all(root, "two records")
    return root


def violations(root: Path) -> list[str]:
    return [f.line() for f in run_checks(root, []).violations]


def retired(root: Path, *runs: str) -> int:
    return retire_main([*runs, "--reason", "an example record", "--root", str(root)])


def test_a_retired_record_leaves_the_tree_and_stays_verifiable_from_history(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = git(repo, "rev-parse", f"HEAD:evidence/runs/{RUN}/metadata.json")
    assert retired(repo, RUN) == 0
    commit_all(repo, "retire run-a")
    assert not (repo / "evidence/runs" / RUN).exists()
    (entry,) = read_retirements(repo).retired
    assert entry.files == {"metadata.json": blob, "metrics.jsonl": entry.files["metrics.jsonl"]}
    assert violations(repo) == []
    capsys.readouterr()
    assert check_main(["--root", str(repo), "--record", RUN]) == 0
    assert f"{RUN}: retired (an example record)" in capsys.readouterr().out


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_removed_without_a_retirement_is_caught(repo: Path) -> None:
    shutil.rmtree(repo / "evidence/runs" / RUN)
    in_tree = violations(repo)
    assert any(
        "metadata.json" in v and "removed without a retirement entry in the working tree" in v
        for v in in_tree
    )
    commit_all(repo, "run-a deleted")
    committed = violations(repo)
    assert any("removed without a retirement entry in commit" in v for v in committed), committed


@pytest.mark.gate("GATE-INTEG-001")
def test_a_retirement_whose_blobs_git_does_not_hold_is_caught(repo: Path) -> None:
    assert retired(repo, RUN) == 0
    data = yaml.safe_load((repo / RETIRED_FILE).read_text())
    data["retired"][0]["files"]["metadata.json"] = "0" * 40
    (repo / RETIRED_FILE).write_text(yaml.safe_dump(data))
    commit_all(repo, "retire run-a with another blob")
    found = violations(repo)
    assert any("gives other blob ids for metadata.json" in v for v in found), found
    assert any("removed without a retirement entry" in v for v in found), found


@pytest.mark.gate("GATE-INTEG-001")
def test_a_retirement_entry_dropped_later_is_caught(repo: Path) -> None:
    assert retired(repo, RUN) == 0
    commit_all(repo, "retire run-a")
    (repo / RETIRED_FILE).write_text("retired: []\n")
    commit_all(repo, "forget it")
    found = violations(repo)
    assert any("evidence/runs/run-a" in v and "entry is gone or changed" in v for v in found), found


@pytest.mark.gate("GATE-INTEG-001")
def test_a_released_record_cannot_be_retired(repo: Path) -> None:
    """A retirement entry written by hand for the record a release cites: named, whatever else."""
    record = repo / "evidence/runs" / RUN / "metadata.json"
    release = {
        "name": "scratch",
        "version": "0.1.0",
        "spec_version": yaml.safe_load((repo / "spec/spec.yaml").read_text())["version"],
        "git_sha": git(repo, "rev-parse", "HEAD"),
        "evidence": [{"run": RUN, "sha256": hashlib.sha256(record.read_bytes()).hexdigest()}],
        "license": "Apache-2.0",
        "card": "evidence/models/scratch-0.1.0/MODEL_CARD.md",
    }
    (repo / REGISTRY_FILE).write_text(yaml.safe_dump({"models": [release]}))
    commit_all(repo, "a release citing run-a")
    assert retired(repo, RUN) == 2  # the tool refuses: the check finds the release needs it
    assert (repo / "evidence/runs" / RUN).is_dir() and not (repo / RETIRED_FILE).exists()
    entry = {
        "path": f"evidence/runs/{RUN}",
        "commit": git(repo, "rev-parse", "HEAD"),
        "files": {
            name: git(repo, "rev-parse", f"HEAD:evidence/runs/{RUN}/{name}")
            for name in ("metadata.json", "metrics.jsonl")
        },
        "reason": "forced",
        "verified_under": "0",
    }
    (repo / RETIRED_FILE).write_text(yaml.safe_dump({"retired": [entry]}))
    shutil.rmtree(repo / "evidence/runs" / RUN)
    commit_all(repo, "retire the released record by hand")
    found = violations(repo)
    assert any("backs a release in the registry, so it cannot be retired" in v for v in found), found


def test_a_retirement_of_a_record_still_in_the_tree_is_caught(repo: Path) -> None:
    assert retired(repo, RUN) == 0
    git(repo, "checkout", "HEAD", "--", f"evidence/runs/{RUN}")
    found = violations(repo)
    assert any("is retired, yet still in the working tree" in v for v in found), found


def test_retire_refuses_an_uncommitted_record(repo: Path) -> None:
    (repo / "evidence/runs" / RUN / "metrics.jsonl").write_text('{"loss": 2.0}\n')
    assert retired(repo, RUN) == 2
    assert not (repo / RETIRED_FILE).exists()


def test_retire_refuses_what_is_no_record_in_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory that is neither a ledger record nor a release's (evidence/models itself) is bad
    input: one line, exit 2, nothing written."""
    (repo / "evidence/models").mkdir(exist_ok=True)
    (repo / "evidence/models/notes.txt").write_text("x\n")
    commit_all(repo, "a file beside the releases")
    assert retire_main(["--path", "evidence/models", "--reason", "r", "--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a directory under evidence/" in err, err
    assert not (repo / RETIRED_FILE).exists() and (repo / "evidence/models/notes.txt").is_file()
