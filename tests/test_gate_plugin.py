"""The gate plugin's records, the GATE-INTEG-002 judge, the test-only switch and tools/mutation.py.

The plugin runs in a separate pytest on a tiny test file of its own, so the records it writes
come from tests whose outcomes are known: one falsifier that calls the stack's judge (red with
its gate forced off) and one that does not (green either way).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from audit import evidence_paths, load_evidence
from mutation import falsify_findings, latest_falsify
from record_checks import check_record_truth
from scratch import file_falsify_record, git, make_repo

from contracts.evidence import (
    RunStatus,
    Verdict,
    read_evidence,
)
from contracts.judges import TEST_FAILED, judge
from contracts.spec import load_spec, load_spec_from

TESTS = Path(__file__).resolve().parent
PROVEN = "GATE-INTEG-002"
DEPENDS = "test_tiny.py::test_depends_on_the_gate"
INDEPENDENT = "test_tiny.py::test_independent_of_the_gate"
TINY = """import pytest

from contracts.judges import judge


@pytest.mark.gate("GATE-TRAIN-003")
def test_depends_on_the_gate():
    assert judge("GATE-TRAIN-003", {{"loss": float("nan"), "grad_norm": 1.0}})


@pytest.mark.gate("GATE-TRAIN-003")
def test_independent_of_the_gate():
    assert True


@pytest.mark.gate(*{conformance!r})
def test_every_conformance_gate():
    assert True
"""
INI = "[pytest]\nmarkers =\n    gate(id): a falsifier of the named gate\n"
# One process, or two xdist workers sharing the tests out one by one (`make test` runs xdist): the
# records and verdicts must not depend on which process ran which test.
WORKERS, WORKER_IDS = [[], ["-n", "2", "--dist", "load"]], ["one process", "two xdist workers"]
PROCESSES = pytest.mark.parametrize("workers", WORKERS, ids=WORKER_IDS)


@pytest.fixture(scope="module", params=WORKERS, ids=WORKER_IDS)
def tiny_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One pytest over the tiny file writing both records; returns the process and its directory."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "pytest.ini").write_text(INI)
    (root / "test_tiny.py").write_text(TINY.format(conformance=load_spec().required_gates("conformance")))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent / "tools"), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "pytest", "-p", "gate_plugin", "-p", "no:cacheprovider", "-q"]
    argv += ["test_tiny.py", "--conformance-record", "conformance", "--falsify-record", "falsify"]
    argv += request.param
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return proc, root


def test_falsify_record_tells_a_dependent_falsifier_from_one_that_is_not(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, root = tiny_run
    record = read_evidence(root / "falsify" / "metadata.json")
    detail = record.metrics["gates"]["GATE-TRAIN-003"]
    assert detail["falsifiers"] == {DEPENDS: "passed", INDEPENDENT: "passed"}
    assert detail["red_with_gate_off"] == {DEPENDS: True, INDEPENDENT: False}
    (result,) = record.gates
    assert result.id == PROVEN
    summary = result.measured["gates"]["GATE-TRAIN-003"]
    assert summary == {"falsifiers": 2, "passed_on": True, "red_off": True, "stayed_green": 1}
    # The other ACTIVE gates have no falsifier in this run, and one of GATE-TRAIN-003's does not
    # depend on it: the gate fails and pytest exits 1.
    assert result.verdict is Verdict.FAIL and "no falsifier test" in str(result.message)
    message = str(result.message)
    assert "stay green with the gate forced off: " in message and "GATE-TRAIN-003 (1 of 2)" in message
    assert record.run.status is RunStatus.HALTED and record.code.git_sha is not None
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert record.metrics["counts"] == {"tests": 3, "passed": 3, "failed": 0, "skipped": 0}
    assert check_record_truth(record, root / "falsify", load_spec()).violations == []


def test_conformance_record_is_true_and_re_judges_equal(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, root = tiny_run
    spec = load_spec()
    record = read_evidence(root / "conformance" / "metadata.json")
    assert record.run.kind == "conformance" and record.run.status is RunStatus.COMPLETED
    assert record.code.git_sha is not None
    assert sorted(g.id for g in record.gates) == sorted(spec.required_gates("conformance"))
    assert all(g.verdict is Verdict.PASS for g in record.gates)
    assert check_record_truth(record, root / "conformance", spec).violations == []
    # A falsifier that failed under a PASS: re-judging catches it.
    record.gates[0].measured["falsifiers"]["test_tiny.py::test_every_conformance_gate"] = TEST_FAILED
    assert check_record_truth(record, root / "conformance", spec).violations != []


@pytest.mark.gate(PROVEN)
def test_integ_002_judge_wants_every_gate_green_on_and_red_off() -> None:
    proven = {"falsifiers": 2, "passed_on": True, "red_off": True, "stayed_green": 0}
    assert judge(PROVEN, {"gates": {"GATE-TRAIN-003": proven}}) == []
    defects = {
        "GATE-TRAIN-003": ({**proven, "falsifiers": 0, "passed_on": False, "red_off": False}, "no falsifier"),
        "GATE-DATA-001": ({**proven, "passed_on": False}, "do not pass with the gate on"),
        "GATE-EVAL-001": (
            {**proven, "red_off": False, "stayed_green": 2},
            "stay green with the gate forced off",
        ),
        # One of two red is not enough: the other cannot show the gate firing.
        "GATE-EVAL-002": (
            {**proven, "stayed_green": 1},
            "stay green with the gate forced off: GATE-EVAL-002 (1 of 2)",
        ),
    }
    for gate_id, (summary, why) in defects.items():
        (problem,) = judge(PROVEN, {"gates": {"GATE-TRAIN-004": proven, gate_id: summary}})
        assert why in problem and gate_id in problem and "GATE-TRAIN-004" not in problem
    assert judge(PROVEN, {"gates": {}}) and judge(PROVEN, {"gates": {"GATE-TRAIN-003": {"falsifiers": 1}}})


FORCE_PASS = "GATESTACK_FORCE_PASS"  # the environment switch of spec 1.6.0, read by nothing since


def test_no_environment_variable_switches_a_gate_off_outside_pytest() -> None:
    """The old switch's variables change nothing, and the in-process switch refuses without pytest."""
    env = {**os.environ, "PYTEST_CURRENT_TEST": "x", FORCE_PASS: "GATE-TRAIN-003"}
    code = (
        "import sys\n"
        "from contracts.judges import forced_off, judge\n"
        "assert judge('GATE-TRAIN-003', {'loss': float('nan'), 'grad_norm': 1.0}), 'switched off'\n"
        "try:\n    forced_off('GATE-TRAIN-003').__enter__()\nexcept RuntimeError as exc:\n"
        "    print(exc)\n    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test runner" in proc.stdout


# -- tools/mutation.py: is the latest falsify record current? --------------------------------


def findings(root: Path) -> list[str]:
    """What the integrity check would report of `root`'s proof by mutation."""
    return falsify_findings(
        root, load_spec_from(root / "spec"), [load_evidence(p) for p in evidence_paths(root)]
    )


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    root.mkdir()
    return root, make_repo(root, falsify=False)


def test_no_falsify_record_is_a_finding(scratch: tuple[Path, str]) -> None:
    root, _ = scratch
    assert latest_falsify(root) is None
    assert any("no falsify record" in f for f in findings(root))


def test_current_record_holds_until_a_proven_tree_changes(scratch: tuple[Path, str]) -> None:
    root, sha = scratch
    file_falsify_record(root, sha, "falsify-a")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "file the falsify record")
    assert findings(root) == []
    (root / "NOTES.md").write_text("outside the proven trees\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "notes")
    assert findings(root) == []
    (root / "tests" / "test_integ.py").write_text("def test_nothing():\n    assert True\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a falsifier changed")
    assert any("not current" in f for f in findings(root))


def test_dirty_or_failing_latest_record_is_a_finding(scratch: tuple[Path, str]) -> None:
    root, sha = scratch
    file_falsify_record(root, sha, "falsify-a", dirty=True)
    assert any("dirty tree" in f for f in findings(root))
    file_falsify_record(root, sha, "falsify-b", proven=False)
    latest = latest_falsify(root)
    assert latest is not None and latest[1].run.id == "falsify-b"
    assert any(f"{PROVEN} is FAIL" in f for f in findings(root))


# -- --reprove: make test re-checks the proof of every gate whose code changed ------------------

REPROVE_TINY = """import pytest

from contracts.judges import judge


@pytest.mark.gate("GATE-TRAIN-003")
def test_depends_on_its_gate():
    assert judge("GATE-TRAIN-003", {"loss": float("nan"), "grad_norm": 1.0})


@pytest.mark.gate("GATE-TRAIN-004")
def test_plants_nothing_the_gate_sees():
    assert True
"""


def reprove(tmp_path: Path, tests: str, workers: list[str]) -> subprocess.CompletedProcess[str]:
    """`pytest --reprove` over `tests` (one test file's text) in a fresh directory, with `workers`
    (pytest-xdist's options, or none)."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_tiny.py").write_text(tests)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent / "tools"), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "pytest", "-p", "gate_plugin", "-p", "no:cacheprovider", "-q", "--reprove"]
    return subprocess.run(
        [*argv, *workers, "tests"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


@PROCESSES
def test_reprove_fails_a_changed_gate_whose_falsifiers_stay_green_with_it_off(
    tmp_path: Path, workers: list[str]
) -> None:
    """With no falsify record every gate counts as changed: GATE-TRAIN-003's falsifier turns red with
    its gate off, GATE-TRAIN-004's does not, and that fails the session."""
    proc = reprove(tmp_path, REPROVE_TINY, workers)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout  # the tests themselves pass: only the proof fails
    assert "GATE-TRAIN-004: falsifier(s) stay green with the gate forced off" in proc.stdout
    assert "1 changed gate(s) turn red with the gate forced off" in proc.stdout


@PROCESSES
def test_reprove_fails_a_gate_with_one_falsifier_red_and_one_green(
    tmp_path: Path, workers: list[str]
) -> None:
    """One dependent falsifier does not excuse a second that plants nothing the gate sees (spec
    1.9.0), whichever worker ran each of them."""
    proc = reprove(tmp_path, REPROVE_TINY.replace("GATE-TRAIN-004", "GATE-TRAIN-003"), workers)
    assert proc.returncode == 1 and "2 passed" in proc.stdout, proc.stdout + proc.stderr
    assert (
        "GATE-TRAIN-003: falsifier(s) stay green with the gate forced off, so they do not prove it: "
        "tests/test_tiny.py::test_plants_nothing_the_gate_sees"
    ) in proc.stdout
    assert "0 changed gate(s) turn red with the gate forced off" in proc.stdout
