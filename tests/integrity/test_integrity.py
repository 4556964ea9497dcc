"""Falsifiers of the integrity gates: plant one defect at a time and see check_integrity name it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.evidence import NO_RECORD, sha256_file
from contracts.judges import TEST_FAILED
from contracts.spec import load_spec_from
from tests.support.ledger_support import RECORDS
from tools.integrity.audit import LoadedEvidence, load_evidence
from tools.integrity.check import WARNINGS_SHOWN, Checker, Finding, Report, main, run_checks, warning_lines
from tools.records.scratch import bump_revision, commit_all, make_record, make_repo, passed, write_lock

ROOT = Path(__file__).resolve().parents[2]

# Ids the spec does not define, planted on purpose; the marker keeps the real check off them.
UNKNOWN = "GATE-NOPE-001"  # integrity: planted
UNKNOWN_IN_DOCS = "GATE-DATA-999"  # integrity: planted
GHOST_BINDING = "GATE-GHOST-001"  # integrity: planted
GHOST_TEST = "GATE-GHOST-002"  # integrity: planted
# Two real runs a gate halted at their first step: the same schedule, no step line.
HALTED_RUNS = ("det-off-true", "det-off-false")


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    root.mkdir()
    return root, make_repo(root)


def messages(root: Path) -> list[str]:
    return [f.line() for f in run_checks(root, []).violations]


@pytest.mark.holds("GATE-INTEG-001")
def test_clean_repository_passes(repo: tuple[Path, str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, passed("GATE-INTEG-001"), artifact_text="{}\n")
    assert messages(root) == []
    assert main(["--root", str(root)]) == 0


@pytest.mark.gate("GATE-INTEG-001")
def test_missing_artifact_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, artifact_text="{}\n")
    (root / "evidence/runs/run-a/metrics.jsonl").unlink()
    assert any("does not exist" in m and "run-a" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_checksum_mismatch_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, artifact_text='{"loss": 1.0}\n')
    (root / "evidence/runs/run-a/metrics.jsonl").write_text('{"loss": 0.5}\n')
    assert any("sha256 does not match" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_path_escaping_the_repository_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    path = make_record(root, "run-a", sha, artifact_text="{}\n")
    data = json.loads(path.read_text())
    data["artifacts"][0]["path"] = "../../../../etc/hostname"
    path.write_text(json.dumps(data))
    assert any("leaves" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_unknown_gate_id_in_evidence_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, passed(UNKNOWN))
    assert any(f"unknown gate {UNKNOWN}" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_unknown_gate_id_in_docs_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    (root / "docs").mkdir()
    (root / "docs" / "page.md").write_text(f"See GATE-DATA-001 and {UNKNOWN_IN_DOCS}.\n")
    found = messages(root)
    assert any("docs/page.md" in m and UNKNOWN_IN_DOCS in m for m in found)
    assert not any("GATE-DATA-001" in m for m in found)


def test_a_generated_site_page_is_not_read_as_the_repository(repo: tuple[Path, str]) -> None:
    """docs/reference/ is the site render_site builds (git ignores it): a gate id only a page
    there names is no citation, so the check judges the same tree whether or not, or while, the
    site is built; the same id in a page of docs/ beside it is one."""
    root, _ = repo
    generated = root / "docs" / "reference" / "gates"
    generated.mkdir(parents=True)
    (generated / "page.md").write_text(f"Built from a record citing {UNKNOWN_IN_DOCS}.\n")
    assert not any(UNKNOWN_IN_DOCS in m for m in messages(root))
    (root / "docs" / "page.md").write_text(f"See {UNKNOWN_IN_DOCS}.\n")
    found = [m for m in messages(root) if UNKNOWN_IN_DOCS in m]
    assert found and all("docs/page.md" in m for m in found), found


@pytest.mark.gate("GATE-INTEG-002")
def test_orphan_binding_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    (root / "stack").mkdir()
    (root / "stack" / "thing.py").write_text(
        "from contracts.gates import gate_require\n\n"
        f'@gate_require("{GHOST_BINDING}", lambda x: x)\n'
        "def f(x):\n    return x\n"
    )
    assert any(f"orphan binding: {GHOST_BINDING}" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-002")
def test_falsifier_citing_unknown_gate_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    (root / "tests" / "test_ghost.py").write_text(
        f'import pytest\n\n@pytest.mark.gate("{GHOST_TEST}")\ndef test_x():\n    assert False\n'
    )
    assert any(f"falsifier cites unknown gate {GHOST_TEST}" in m for m in messages(root))


# A gate mark on one parameter of a test: in the decorator, behind a module-level name, and in a
# comprehension over a table of gate ids. Each is a falsifier as much as a mark on the test.
PARAM_MARKS = {
    "in-decorator": (
        "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.gate('{gate}')), 0])\n"
    ),
    "behind-a-name": (
        "GHOST = '{gate}'\n"
        "CASES = pytest.mark.parametrize('x', [pytest.param(1, marks=[pytest.mark.gate(GHOST)])])\n"
        "\n\n@CASES\n"
    ),
    "in-a-comprehension": (
        "TABLE: dict[str, int] = {{'{gate}': 1}}\n\n\n"
        "@pytest.mark.parametrize('x', [pytest.param(g, marks=pytest.mark.gate(g)) for g in sorted(TABLE)])\n"
    ),
}


@pytest.mark.gate("GATE-INTEG-002")
@pytest.mark.parametrize("form", sorted(PARAM_MARKS))
def test_a_gate_marked_on_a_parameter_is_read_as_a_falsifier(repo: tuple[Path, str], form: str) -> None:
    root, _ = repo
    (root / "tests" / "test_ghost.py").write_text(
        "import pytest\n\n" + PARAM_MARKS[form].format(gate=GHOST_TEST) + "def test_x(x):\n    assert x\n"
    )
    assert any(f"falsifier cites unknown gate {GHOST_TEST}" in m for m in messages(root))


# Where pytest finds a marked test: on a class's method, under a module-level `if`, and the whole
# module by `pytestmark`.
PLACED_MARKS = {
    "in-a-class": (
        "class TestGhost:\n    @pytest.mark.gate('{gate}')\n    def test_x(self):\n        assert False\n"
    ),
    "under-an-if": "if True:\n\n    @pytest.mark.gate('{gate}')\n    def test_x():\n        assert False\n",
    "module-wide": "pytestmark = pytest.mark.gate('{gate}')\n\n\ndef test_x():\n    assert False\n",
}


@pytest.mark.gate("GATE-INTEG-002")
@pytest.mark.parametrize("form", sorted(PLACED_MARKS))
def test_a_gate_mark_is_read_where_pytest_collects_tests(repo: tuple[Path, str], form: str) -> None:
    root, _ = repo
    (root / "tests" / "test_ghost.py").write_text(
        "import pytest\n\n" + PLACED_MARKS[form].format(gate=GHOST_TEST)
    )
    assert any(f"falsifier cites unknown gate {GHOST_TEST}" in m for m in messages(root))


@pytest.mark.holds("GATE-INTEG-002")
def test_a_mark_on_a_function_inside_a_test_makes_no_falsifier(repo: tuple[Path, str]) -> None:
    """pytest collects no function defined inside a test, so its mark makes no falsifier of it."""
    root, _ = repo
    inside = "def test_x():\n    @pytest.mark.gate('{gate}')\n    def helper():\n        pass\n"
    (root / "tests" / "test_ghost.py").write_text("import pytest\n\n" + inside.format(gate=GHOST_TEST))
    assert not any(f"falsifier cites unknown gate {GHOST_TEST}" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-002")
def test_active_gate_without_falsifier_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    (root / "tests" / "test_integ.py").write_text(
        'import pytest\n\n@pytest.mark.gate("GATE-INTEG-001")\ndef test_x():\n    assert True\n'
    )
    assert any("GATE-INTEG-002" in m and "no falsifier" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-002")
def test_active_runtime_gate_without_binding_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    gates = root / "spec/gates/train.yaml"
    text = gates.read_text()
    start = text.index("id: GATE-TRAIN-003")
    end = text.index("status: PROPOSED", start)
    gates.write_text(text[:end] + "status: ACTIVE" + text[end + len("status: PROPOSED") :])
    (root / "tests" / "test_train.py").write_text(
        'import pytest\n\n@pytest.mark.gate("GATE-TRAIN-003")\ndef test_x():\n    assert True\n'
    )
    found = messages(root)
    assert any("GATE-TRAIN-003" in m and "no contract binding" in m for m in found)
    assert not any("GATE-TRAIN-003" in m and "no falsifier" in m for m in found)


@pytest.mark.gate("GATE-INTEG-001")
def test_tampered_evidence_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    path = make_record(root, "run-a", sha, passed("GATE-INTEG-001"))
    data = json.loads(path.read_text())
    data["gates"][0]["verdict"] = "PASSED WITH FLYING COLOURS"
    data["injected"] = True
    path.write_text(json.dumps(data))
    assert any("run-a/metadata.json" in m and "does not validate" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_duplicate_gate_id_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    integ = root / "spec/gates/integ.yaml"
    (root / "spec/gates/zz_copy.yaml").write_text(integ.read_text())
    found = messages(root)
    assert len(found) == 1 and "duplicate gate id GATE-INTEG-001" in found[0]


@pytest.mark.holds("GATE-INTEG-001")  # a revision bump is no defect: a warning, never a violation
def test_stale_revision_is_reported_stale(repo: tuple[Path, str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, passed("GATE-INTEG-001"))
    was = load_spec_from(root / "spec").gates["GATE-INTEG-001"].revision
    assert bump_revision(root, "GATE-INTEG-001") == was + 1
    report = run_checks(root, [])
    assert report.violations == []
    assert any(
        w.rule == "STALE" and "GATE-INTEG-001" in w.message and f"rev {was}" in w.message
        for w in report.warnings
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_revision_bump_without_history_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    was = load_spec_from(root / "spec").gates["GATE-INTEG-001"].revision
    integ = root / "spec/gates/integ.yaml"
    text = integ.read_text()
    gate = f"id: GATE-INTEG-001\n    revision: {was}\n"
    assert gate in text
    integ.write_text(text.replace(gate, f"id: GATE-INTEG-001\n    revision: {was + 1}\n"))
    found = messages(root)
    assert len(found) == 1 and f"GATE-INTEG-001 lists revisions {list(range(1, was + 1))}" in found[0]


@pytest.mark.gate("GATE-INTEG-001")
def test_unknown_commit_is_reported(repo: tuple[Path, str]) -> None:
    root, _ = repo
    make_record(root, "run-a", "0" * 40)
    assert any("not in this repository's history" in m for m in messages(root))


@pytest.mark.gate("GATE-INTEG-001")
def test_registry_citing_dirty_evidence_is_reported(repo: tuple[Path, str]) -> None:
    root, sha = repo
    dirty = sha256_file(make_record(root, "run-dirty", sha, dirty=True))
    (root / "MODEL_CARD.md").write_text("# tiny\n")
    (root / "evidence/registry.yaml").write_text(
        "models:\n"
        "  - name: tiny\n    version: 0.1.0\n    spec_version: 1.0.0\n"
        f"    git_sha: {sha}\n    evidence:\n"
        f"      - {{run: run-dirty, sha256: '{dirty}'}}\n      - {{run: run-missing, sha256: '{'0' * 64}'}}\n"
        "    license: Apache-2.0\n    card: MODEL_CARD.md\n"
    )
    found = messages(root)
    assert any("made from a dirty tree" in m for m in found)
    assert any("run-missing" in m for m in found)


@pytest.mark.gate("GATE-INTEG-001")
def test_registry_artifact_checksum_is_verified(repo: tuple[Path, str]) -> None:
    root, sha = repo
    record = sha256_file(make_record(root, "run-a", sha))
    (root / "weights.bin").write_bytes(b"\x00" * 16)
    (root / "MODEL_CARD.md").write_text("# tiny\n")
    commit_all(root, "weights")
    (root / "evidence/registry.yaml").write_text(
        "models:\n"
        "  - name: tiny\n    version: 0.1.0\n    spec_version: 1.0.0\n"
        f"    git_sha: {sha}\n    evidence: [{{run: run-a, sha256: '{record}'}}]\n"
        f"    artifacts:\n      - path: weights.bin\n        sha256: {'a' * 64}\n        bytes: 16\n"
        "    license: Apache-2.0\n    card: MODEL_CARD.md\n"
    )
    assert any("weights.bin: sha256 does not match" in m for m in messages(root))


@pytest.mark.holds("GATE-INTEG-001")
def test_extra_run_directory_is_checked(repo: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = repo
    path = make_record(root, "run-a", sha, artifact_text="{}\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "metadata.json").write_bytes(path.read_bytes())
    report = run_checks(root, [outside])
    assert any("metrics.jsonl" in f.message and "does not exist" in f.message for f in report.violations)


@pytest.mark.holds("GATE-INTEG-001")
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path)]) == 2
    assert "no spec/ directory" in capsys.readouterr().err
    assert main(["--root", str(Path(__file__).resolve().parents[2]), "--run", str(tmp_path)]) == 2


def test_a_broken_spec_in_gatestack_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    """The stack's own checks, replaying a record, read the spec GATESTACK_SPEC names: a broken one
    ended the check in a traceback from deep inside a replay. It is refused first, in one line."""
    spec = tmp_path / "spec"
    shutil.copytree(ROOT / "spec", spec)
    (spec / "run_kinds.yaml").unlink()
    run = min(p for p in RECORDS.iterdir() if p.name != "current")
    argv = [sys.executable, str(ROOT / "tools" / "check_integrity.py"), "--runs-only", "--run", str(run)]
    proc = subprocess.run(
        argv, env={**os.environ, "GATESTACK_SPEC": str(spec)}, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "run_kinds.yaml" in proc.stderr, proc.stderr


@pytest.mark.holds("GATE-INTEG-001")
def test_two_runs_halted_before_any_step_line_are_not_taken_for_copies() -> None:
    """Two H100 runs a gate halted at step 1 (train.deterministic off, one eager, one compiled) wrote
    the same metrics log: their schedule alone, no throughput, nothing of either run's own. The
    checker once called one a copy of the other. A copy under a new id that keeps the original's
    start time, commit and kind is still one."""
    records = [load_evidence(RECORDS / run / "metadata.json") for run in HALTED_RUNS]
    assert len({sha256_file(r.path.parent / "metrics.jsonl") for r in records}) == 1
    checker = Checker(ROOT, load_spec_from(ROOT / "spec"))
    checker.check_duplicates(records)
    assert checker.verdict() == []
    original = records[0].record
    assert original is not None
    copy = original.model_copy(update={"run": original.run.model_copy(update={"id": "det-off-copy"})})
    checker.check_duplicates([records[0], LoadedEvidence(records[0].path, copy, raw=b"")])
    (finding,) = checker.verdict()
    assert "start time, commit and kind" in finding.message and "a copy of another record" in finding.message


@pytest.mark.holds("GATE-INTEG-001")
def test_json_report_is_machine_readable(repo: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, sha = repo
    make_record(root, "run-a", sha, {"GATE-INTEG-001": TEST_FAILED})  # a halted run, truly FAIL
    assert main(["--root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = next(r for r in report["coverage"] if r["gate"] == "GATE-INTEG-001")
    assert report["ok"] and row["latest"] == "FAIL" and row["falsifiers"]


def test_a_kind_of_warning_is_counted_past_its_first_few_and_the_runs_asked_about_are_listed() -> None:
    """The repository's records' warnings of one kind beyond the first WARNINGS_SHOWN are one line
    that counts them; each about a --run directory is listed whatever the count, and
    `--all-warnings` (every=True) lists them all."""
    ledger = [
        Finding("UNSIGNED", f"evidence/runs/r{i}/metadata.json", f"r{i}", "is unsigned") for i in range(5)
    ]
    mine = Finding("UNSIGNED", "runs/mine/metadata.json", "mine", "is unsigned")
    neighbour = Finding("UNSIGNED", "runs/mine-2/metadata.json", "mine-2", "is unsigned")
    stale = [Finding("STALE", f"evidence/runs/s{i}/metadata.json", f"s{i}", "stale") for i in range(2)]
    report = Report([], [*ledger, stale[0], mine, neighbour, stale[1]], [], 9, runs=("runs/mine",))
    lines = warning_lines(report)
    unsigned = [line for line in lines if line.startswith("warning  UNSIGNED")]
    listed = [*(f"warning  {f.line()}" for f in ledger[:WARNINGS_SHOWN]), f"warning  {mine.line()}"]
    hidden = len(ledger) + 1 - WARNINGS_SHOWN  # runs/mine-2 is not inside runs/mine
    assert unsigned == [
        *listed,
        f"warning  UNSIGNED  and {hidden} more like these among the repository's "
        "records (--all-warnings lists every one)",
    ]
    assert lines[len(unsigned) :] == [f"warning  {f.line()}" for f in stale]
    assert warning_lines(report, every=True) == [
        f"warning  {f.line()}" for f in (*ledger, mine, neighbour, *stale)
    ]


def test_all_warnings_lists_each_one(repo: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, sha = repo
    for i in range(WARNINGS_SHOWN + 1):
        make_record(root, f"run-{i}", sha)
    assert main(["--root", str(root)]) == 0
    assert "warning  UNSIGNED  and 1 more like these" in capsys.readouterr().out
    assert main(["--root", str(root), "--all-warnings"]) == 0
    out = capsys.readouterr().out
    assert (
        out.count("warning  UNSIGNED  evidence/runs/run-") == WARNINGS_SHOWN + 1
        and "more like these" not in out
    )


def test_a_ledger_given_as_a_run_is_checked_whole(
    repo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--run LEDGER` (a folder of run directories, as --evidence-dir files them) checks each record
    in it; a folder with no record, in it or in any directory in it, is refused in one line."""
    root, sha = repo
    for name in ("run-a", "run-b"):
        make_record(root, name, sha)
    ledger = root / "evidence" / "runs"
    assert main(["--root", str(root), "--runs-only", "--run", str(ledger), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 2
    (tmp_path / "empty" / "run-c").mkdir(parents=True)
    assert main(["--root", str(root), "--runs-only", "--run", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'empty'} {NO_RECORD}" in err


@pytest.mark.holds("GATE-INTEG-002")  # nothing planted: the clean path, the constant read as a gate id
def test_falsifier_named_by_a_module_constant_counts(repo: tuple[Path, str]) -> None:
    root, _ = repo
    (root / "tests" / "test_integ.py").write_text(
        'import pytest\n\nGATE = "GATE-INTEG-002"\n\n'
        '@pytest.mark.gate("GATE-INTEG-001")\ndef test_a():\n    assert True\n\n'
        "@pytest.mark.gate(GATE)\ndef test_b():\n    assert True\n"
    )
    write_lock(root)  # the falsifiers changed, so they are proven again
    assert messages(root) == []


def test_run_directories_that_share_an_id_are_named_where_one_would_be_read_for_the_other(
    repo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two different records under one run id (training runs in two folders both called `run`, or
    runs stamped in one second), checked together: the record the joins pass over is named, and the
    same record given twice is not."""
    root, sha = repo
    dirs = []
    for minutes, folder in ((0, "first"), (1, "second")):
        made = make_record(root, "run", sha, minutes=minutes)
        dirs.append(shutil.copytree(made.parent, tmp_path / folder / "run"))
    assert main(["--root", str(root), "--runs-only", *(f"--run={d}" for d in dirs)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "SHARED-ID" in line]
    assert "first/run/metadata.json" in line and "shares its run id with" in line and "second/run" in line
    assert main(["--root", str(root), "--runs-only", f"--run={dirs[0]}", f"--run={dirs[0]}"]) == 0
    assert "SHARED-ID" not in capsys.readouterr().out
