"""The proof by mutation: the gate plugin (--reprove, --update-lock), the GATE-INTEG-002 judge, the
test-only switch, and the proof lock the integrity check holds against the code (tools/mutation.py).

The plugin runs in a separate pytest on a tiny test file of its own, so the lock it writes comes
from tests whose outcomes are known: one falsifier that calls the stack's judge (red with its gate
forced off) and one that does not (green either way).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.judges import judge
from contracts.proof_lock import LOCK_FILE, entry_problems, read_lock
from contracts.spec import load_spec, load_spec_from
from tools.integrity.check import run_checks
from tools.integrity.proofs.fingerprints import gate_fingerprints
from tools.integrity.proofs.mutation import lock_findings
from tools.records.scratch import commit_all, make_repo, write_lock

TESTS = Path(__file__).resolve().parents[1]
PROVEN = "GATE-INTEG-002"
INI = "[pytest]\nmarkers =\n    gate(id): a falsifier of the named gate\n    holds(id): holds\n"
# One process, or two xdist workers sharing the tests out one by one (`make test` runs xdist): the
# lock and verdicts must not depend on which process ran which test.
WORKERS, WORKER_IDS = [[], ["-n", "2", "--dist", "load"]], ["one process", "two xdist workers"]
PROCESSES = pytest.mark.parametrize("workers", WORKERS, ids=WORKER_IDS)
REPROVE_TINY = """import pytest

from contracts.judges import judge


@pytest.mark.gate("GATE-TRAIN-003")
def test_depends_on_its_gate():
    assert judge("GATE-TRAIN-003", {"loss": float("nan"), "grad_norm": 1.0})


@pytest.mark.gate("GATE-TRAIN-004")
def test_plants_nothing_the_gate_sees():
    assert True
"""


def reprove(
    tmp_path: Path, tests: str, workers: list[str], *options: str
) -> subprocess.CompletedProcess[str]:
    """`pytest --reprove` over `tests` (one test file's text) in a fresh directory, with `workers`
    (pytest-xdist's options, or none) and any other `options` (--update-lock)."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_tiny.py").write_text(tests)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "pytest", "-p", "gate_plugin", "-p", "no:cacheprovider", "-q", "--reprove"]
    return subprocess.run(
        [*argv, *options, *workers, "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@PROCESSES
def test_reprove_fails_a_changed_gate_whose_falsifiers_stay_green_with_it_off(
    tmp_path: Path, workers: list[str]
) -> None:
    """With no lock every gate counts as changed: GATE-TRAIN-003's falsifier turns red with its gate
    off, GATE-TRAIN-004's does not, and that fails the session."""
    proc = reprove(tmp_path, REPROVE_TINY, workers)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout  # the tests themselves pass: only the proof fails
    assert "GATE-TRAIN-004: falsifier(s) stay green with the gate forced off" in proc.stdout
    assert "1 changed gate(s) turn red with the gate forced off" in proc.stdout


@PROCESSES
def test_reprove_fails_a_gate_with_one_falsifier_red_and_one_green(
    tmp_path: Path, workers: list[str]
) -> None:
    """One dependent falsifier does not excuse a second that plants nothing the gate sees, whichever
    worker ran each of them."""
    proc = reprove(tmp_path, REPROVE_TINY.replace("GATE-TRAIN-004", "GATE-TRAIN-003"), workers)
    assert proc.returncode == 1 and "2 passed" in proc.stdout, proc.stdout + proc.stderr
    assert (
        "GATE-TRAIN-003: falsifier(s) stay green with the gate forced off, so they do not prove it: "
        "tests/test_tiny.py::test_plants_nothing_the_gate_sees"
    ) in proc.stdout
    assert "0 changed gate(s) turn red with the gate forced off" in proc.stdout


def changed_count(proc: subprocess.CompletedProcess[str]) -> int:
    """How many ACTIVE gates a --reprove session found changed since the lock."""
    found = re.search(r"(\d+) ACTIVE gate\(s\) changed", proc.stdout)
    assert found, proc.stdout
    return int(found.group(1))


@PROCESSES
def test_update_lock_writes_the_proven_gates_and_then_nothing_is_changed(
    tmp_path: Path, workers: list[str]
) -> None:
    """A session that proves its changed gates writes their entries; the next session finds no gate
    changed and runs nothing off. A session whose proof fails leaves the lock as it was."""
    only_red = REPROVE_TINY.split('@pytest.mark.gate("GATE-TRAIN-004")')[0]
    proc = reprove(tmp_path, only_red, workers, "--update-lock")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lock = read_lock(tmp_path)
    assert lock is not None and set(lock) == {"GATE-TRAIN-003"}
    entry = lock["GATE-TRAIN-003"]
    assert entry["falsifiers"] == {
        "tests/test_tiny.py::test_depends_on_its_gate": {"on": "passed", "off": "failed"}
    }
    assert entry_problems(load_spec(), "GATE-TRAIN-003", entry) == []
    again = reprove(tmp_path, only_red, workers, "--update-lock")
    assert again.returncode == 0, again.stdout + again.stderr
    assert changed_count(again) == changed_count(proc) - 1  # GATE-TRAIN-003 is proven for this code
    assert read_lock(tmp_path) == lock
    before = (tmp_path / LOCK_FILE).read_bytes()
    failing = reprove(
        tmp_path, REPROVE_TINY.replace("GATE-TRAIN-004", "GATE-TRAIN-003"), workers, "--update-lock"
    )
    assert failing.returncode == 1 and "left as it was" in failing.stdout, failing.stdout
    assert (tmp_path / LOCK_FILE).read_bytes() == before


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


# -- tools/mutation.py: does the proof lock prove the code as it stands? -------------------------


def findings(root: Path) -> list[str]:
    """What the integrity check finds of `root`'s proof by mutation, before any judge decides."""
    return lock_findings(root, load_spec_from(root / "spec"))


def verdicts(root: Path) -> list[str]:
    """The violations of `root` that stand once GATE-INTEG-002's judge has decided over them."""
    return [f.line() for f in run_checks(root, []).violations]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    make_repo(root, lock=False)
    return root


def test_no_lock_is_a_finding(scratch: Path) -> None:
    assert any("there is no proof lock" in f for f in findings(scratch))


@pytest.mark.gate(PROVEN)
def test_a_lock_holds_until_a_gates_code_changes(scratch: Path) -> None:
    """A lock proves the code it was written for; a falsifier edited afterwards names its gate."""
    write_lock(scratch)
    commit_all(scratch, "the proof lock")
    assert verdicts(scratch) == []
    (scratch / "NOTES.md").write_text("outside the fingerprinted trees\n")
    assert verdicts(scratch) == []
    tests = scratch / "tests" / "test_integ.py"
    tests.write_text(
        tests.read_text().replace(
            "def test_integ_001():\n    assert True", "def test_integ_001():\n    assert 1"
        )
    )
    found = verdicts(scratch)
    assert any("GATE-INTEG-001 was proven for other code than today's" in f for f in found), found


@pytest.mark.gate(PROVEN)
def test_a_lock_whose_falsifiers_stay_green_or_whose_tests_differ_is_a_finding(scratch: Path) -> None:
    write_lock(scratch, proven=False)
    assert any(
        "GATE-INTEG-001" in f and "stay green with the gate forced off" in f for f in findings(scratch)
    )
    write_lock(scratch)
    lock = json.loads((scratch / LOCK_FILE).read_text())
    tests = lock["gates"]["GATE-INTEG-001"]["falsifiers"]
    tests["tests/test_integ.py::test_gone"] = tests.pop("tests/test_integ.py::test_integ_001")
    (scratch / LOCK_FILE).write_text(json.dumps(lock))
    found = findings(scratch)
    assert any(
        "lists tests/test_integ.py::test_gone under GATE-INTEG-001, but there is no such test" in f
        for f in found
    )
    assert any("lists no outcome of tests/test_integ.py::test_integ_001" in f for f in found), found


HELPERS = """
def _planted():
    return {"value": 2}


LIMIT = 1


@pytest.mark.gate("GATE-INTEG-001")
def test_integ_helped():
    assert _planted()["value"] > LIMIT
"""


def test_a_falsifiers_fingerprint_is_its_code_not_where_the_code_stands(scratch: Path) -> None:
    """A gate's fingerprint rests on its falsifiers and the helpers they read: tests inserted above
    them (moving them past line 9, 99: their places no longer sort as before), or the helpers
    reordered, leave it, so no proof is asked for again; a helper's body changed moves it."""
    module = scratch / "tests" / "test_helped.py"
    module.write_text("import pytest\n" + HELPERS)
    before = gate_fingerprints(scratch)["GATE-INTEG-001"]
    for inserted in (3, 100):
        above = "".join(f"\n\ndef test_unrelated_{i}():\n    assert {i} >= 0\n" for i in range(inserted))
        module.write_text("import pytest\n" + above + HELPERS)
        assert gate_fingerprints(scratch)["GATE-INTEG-001"] == before, inserted
    helper, limit, test = HELPERS.split("\n\n\n")
    module.write_text("import pytest\n" + "\n\n\n".join([limit, test, helper]))
    assert gate_fingerprints(scratch)["GATE-INTEG-001"] == before
    module.write_text("import pytest\n" + HELPERS.replace('{"value": 2}', '{"value": 3}'))
    assert gate_fingerprints(scratch)["GATE-INTEG-001"] != before


def test_a_malformed_lock_is_a_finding_not_a_crash(scratch: Path) -> None:
    for text in ("{", '{"schema": 1}', '{"schema": 1, "gates": {"GATE-INTEG-001": {"fingerprint": 3}}}'):
        (scratch / LOCK_FILE).write_text(text)
        (found,) = findings(scratch)
        assert str(LOCK_FILE) in found and "make proofs" in found
