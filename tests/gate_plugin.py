"""pytest plugin: the proof by mutation, re-checked against the proof lock (evidence/proofs.lock).

A gate is proven when every falsifier test marked `@pytest.mark.gate(ID)` passes with the gate on
and at least one fails with it forced off (`contracts.judges.forced_off`, a switch inside this
process that no environment variable or flag reaches): a falsifier that stays green then does not
depend on its gate. The lock keeps, per ACTIVE gate, the code fingerprint it was proven for
(tools/fingerprints.py) and its tests' outcomes (contracts/proof_lock.py).

* `--reprove` (what `make test` passes): the falsifiers of every gate whose fingerprint differs
  from the lock's run again with the gate forced off; a changed gate with a falsifier that stays
  green fails the session. A clean checkout whose lock is current runs no test twice.
* `--update-lock` (with `--reprove`; what `make proofs` passes): only the tests of the changed
  gates are collected, and their entries are written into the lock in place; `--prove-all`
  treats every gate as changed.

The off runs reuse module- and session-scoped fixtures built with the gate on (only the test and
its function-scoped fixtures run with it off), so a falsifier must plant its bug in the test
itself, in this process. Under pytest-xdist (`make test` runs its workers) each worker runs its own
tests' off runs and hands what it saw to the controller when it ends, which alone judges and writes.
Off runs are not reported to pytest: they never change the terminal output or the exit status,
except that a changed gate that no longer turns red makes the session exit 1.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hypothesis
import pytest
from _pytest.runner import runtestprotocol
from hypothesis import Phase

from contracts.errors import BadInput
from contracts.judges import TEST_FAILED, TEST_PASSED, TEST_SKIPPED, forced_off
from contracts.proof_lock import (
    CONFORMANCE_KIND,
    LOCK_FILE,
    entry_problems,
    gate_entry,
    read_lock,
    write_lock,
)
from contracts.proof_lock import conformance_verdict as judged_conformance
from contracts.spec import GateStatus, load_spec
from tools.integrity.audit import scan_falsifiers
from tools.integrity.proofs.fingerprints import gate_fingerprints

GATE_MARK = "gate"
# A test that shows a gate holds on a clean path plants nothing, so it is no falsifier; it still
# counts in a conformance gate's verdict (a DDP regression must turn GATE-DIST-001 red there).
HOLDS_MARK = "holds"
REPROVE = "gatestack-reprove"
WORKER_OUTPUT = "gatestack-gate-tests"  # what an xdist worker hands its controller is kept under this


@dataclass
class Falsifier:
    """One gate-marked test: its gates, its phases' outcomes with the gates on, and its off outcomes.

    Plain data, so that an xdist worker can hand it to the controller."""

    gates: list[str]
    holds: list[str] = field(default_factory=list)  # gates this test shows holding (no plant)
    phases: list[str] = field(default_factory=list)  # setup, call and teardown: "passed", "failed"…
    off: dict[str, str] = field(default_factory=dict)  # gate id → outcome with that gate forced off

    @property
    def outcome(self) -> str:
        """The outcome with the gates on, from the reports pytest logged."""
        return outcome_of(self.phases)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gatestack", "gatestack's proof by mutation")
    group.addoption(
        "--reprove",
        action="store_true",
        help=f"re-run, with its gate forced off, each falsifier of a gate whose code changed since "
        f"{LOCK_FILE}; fail on a gate that no longer turns red",
    )
    group.addoption(
        "--update-lock",
        action="store_true",
        help=f"with --reprove: run only the changed gates' tests and write their entries into {LOCK_FILE}",
    )
    group.addoption("--prove-all", action="store_true", help="with --reprove: treat every gate as changed")


def pytest_configure(config: pytest.Config) -> None:
    wanted = config.getoption("reprove") or config.getoption("update_lock")
    if wanted and not config.getoption("collectonly"):
        if config.getoption("update_lock") and not config.getoption("reprove"):
            raise pytest.UsageError("--update-lock needs --reprove (make proofs passes both)")
        config.pluginmanager.register(Reprover(config), REPROVE)


def gate_ids(item: pytest.Item, mark_name: str = GATE_MARK) -> list[str]:
    """Every gate id the item's `mark_name` marks name (its own, its class's and its module's)."""
    return sorted({arg for mark in item.iter_markers(mark_name) for arg in mark.args if isinstance(arg, str)})


def outcome_of(phases: Sequence[str]) -> str:
    """One outcome for a test's setup, call and teardown (pytest's report outcomes): any failure
    fails it, then any skip."""
    if "failed" in phases:
        return TEST_FAILED
    if "skipped" in phases:
        return TEST_SKIPPED
    return TEST_PASSED


@contextmanager
def failing_once_is_enough(item: pytest.Item) -> Iterator[None]:
    """A property test run with its gate forced off need only fail once: Hypothesis neither shrinks
    the failing example (minutes per test, for a verdict that is already in) nor keeps it in its
    example database, where it would be replayed by every later run with the gate on."""
    test = getattr(item, "obj", None)
    used = getattr(test, "_hypothesis_internal_use_settings", None)
    if used is None:
        yield
        return
    quick = hypothesis.settings(used, phases=[p for p in used.phases if p is not Phase.shrink], database=None)
    test._hypothesis_internal_use_settings = quick  # type: ignore[union-attr]
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = used  # type: ignore[union-attr]


def run_off(item: pytest.Item, nextitem: pytest.Item | None, gate_ids: list[str]) -> dict[str, str]:
    """Run a test again once per gate of `gate_ids`, with that gate forced off in this process."""
    off = {}
    for gate_id in gate_ids:
        with forced_off(gate_id), failing_once_is_enough(item):
            reports = runtestprotocol(item, log=False, nextitem=nextitem)
            off[gate_id] = outcome_of([report.outcome for report in reports])
    return off


class Reprover:
    """The falsifiers of the gates whose code changed since the lock, run again with their gate
    forced off; a changed gate whose falsifiers do not all turn red fails the session, and with
    `--update-lock` the changed gates' entries are written into the lock."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tests: dict[str, Falsifier] = {}
        self.root = Path(config.rootpath)
        self.spec = load_spec()
        self.now = gate_fingerprints(self.root)
        try:
            self.lock = read_lock(self.root) or {}
        except BadInput as exc:
            raise pytest.UsageError(str(exc)) from None
        active = {g for g, gate in self.spec.gates.items() if gate.status is GateStatus.ACTIVE}
        everything = config.getoption("prove_all")
        changed = {
            g
            for g in active
            if everything or g not in self.lock or self.lock[g]["fingerprint"] != self.now.get(g)
        }
        self.changed = sorted(changed)
        self.update = bool(config.getoption("update_lock"))
        self.judged: dict[str, tuple[str, dict | None]] = {}
        self.written: list[str] | None = None  # the gates whose entries this session wrote
        self.expected = {  # a test by name; a module marked whole by its file
            g: {loc.file if loc.name == "pytestmark" else loc.name for loc in locs}
            for g, locs in scan_falsifiers(self.root).items()
        }

    @property
    def worker(self) -> bool:
        """Whether this process is an xdist worker, whose controller judges and writes."""
        return hasattr(self.config, "workerinput")

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """With --update-lock, only the tests that mark a changed gate (gate or holds) are run."""
        if not self.update:
            return
        wanted = set(self.changed)
        keep = [i for i in items if wanted & {*gate_ids(i), *gate_ids(i, HOLDS_MARK)}]
        dropped = [i for i in items if i not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.get(report.nodeid)
        if test is not None:  # a controller's forwarded reports find no test until the merge
            test.phases.append(report.outcome)

    @pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
    def pytest_testnodedown(self, node: object, error: object) -> None:
        handed = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, {})
        self.tests.update({nodeid: Falsifier(**kept) for nodeid, kept in handed.items()})

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
        gates = [g for g in gate_ids(item) if g in self.changed]
        holds = [g for g in gate_ids(item, HOLDS_MARK) if g in self.changed]
        if gates or holds:
            self.tests[item.nodeid] = Falsifier(gates, holds)
        result = yield
        test = self.tests.get(item.nodeid)
        if test is not None and test.gates and test.outcome == TEST_PASSED:
            test.off.update(run_off(item, nextitem, test.gates))
        return result

    def _mine(self, gate_id: str) -> dict[str, Falsifier]:
        return {nodeid: t for nodeid, t in self.tests.items() if gate_id in t.gates}

    def entries(self) -> dict[str, tuple[str, dict | None]]:
        """gate id → (verdict, the lock entry this session proves or None): 'red' (proven again),
        'green' (a falsifier that passed stayed green with the gate forced off), or why it was not
        judged."""
        found: dict[str, tuple[str, dict | None]] = {}
        conformance = self.spec.required_gates(CONFORMANCE_KIND)
        for gate_id in self.changed:
            mine = self._mine(gate_id)
            ran = {part.split("[")[0] for nodeid in mine for part in nodeid.split("::")}
            if not mine:
                found[gate_id] = ("absent", None)
                continue
            if not self.expected.get(gate_id, set()) <= ran:
                found[gate_id] = ("not judged: not all of its falsifiers ran in this session", None)
                continue
            holds = {n: t.outcome for n, t in self.tests.items() if gate_id in t.holds}
            entry = gate_entry(
                self.now.get(gate_id, ""),
                {n: (t.outcome, t.off.get(gate_id)) for n, t in mine.items()},
                holds if gate_id in conformance else None,
                None,
            )
            if gate_id in conformance:
                entry["conformance"] = judged_conformance(self.spec, gate_id, entry)
            if any(t.outcome != TEST_PASSED for t in mine.values()):
                found[gate_id] = ("not judged: a falsifier failed with the gate on", None)
            else:
                found[gate_id] = ("green" if entry_problems(self.spec, gate_id, entry) else "red", entry)
        return found

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.worker:
            log = {nodeid: asdict(test) for nodeid, test in self.tests.items()}
            self.config.workeroutput[WORKER_OUTPUT] = log  # type: ignore[attr-defined]
            return
        self.judged = entries = self.entries()
        if self.update and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # nothing changed, so nothing to prove again
        if any(v == "green" for v, _ in entries.values()) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.update and session.exitstatus == pytest.ExitCode.OK:
            proven = {g: entry for g, (v, entry) in entries.items() if v == "red" and entry is not None}
            active = {g for g, gate in self.spec.gates.items() if gate.status is GateStatus.ACTIVE}
            lock = {g: e for g, e in {**self.lock, **proven}.items() if g in active}
            write_lock(self.root, lock)
            self.written = sorted(proven)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.worker:
            return
        entries = self.judged
        terminalreporter.section("proof by mutation, re-checked")
        terminalreporter.write_line(f"{len(self.changed)} ACTIVE gate(s) changed since {LOCK_FILE}")
        for gate_id, (verdict, _) in entries.items():
            if verdict == "green":
                green = sorted(n for n, t in self._mine(gate_id).items() if t.off.get(gate_id) != TEST_FAILED)
                terminalreporter.write_line(
                    f"{gate_id}: falsifier(s) stay green with the gate forced off, so they do not "
                    f"prove it: {', '.join(green)}"
                )
            elif verdict not in ("red", "absent"):
                terminalreporter.write_line(f"{gate_id}: {verdict}")
        proven = sorted(g for g, (v, _) in entries.items() if v == "red")
        terminalreporter.write_line(f"{len(proven)} changed gate(s) turn red with the gate forced off")
        if absent := sum(v == "absent" for v, _ in entries.values()):
            terminalreporter.write_line(f"{absent} changed gate(s) have no falsifier in this session")
        if self.update and self.written is None:
            terminalreporter.write_line(f"{LOCK_FILE} left as it was: the session did not pass")
        elif self.update:
            terminalreporter.write_line(
                f"{LOCK_FILE} written: {len(self.written)} gate(s) proven again ({', '.join(self.written)})"
            )
