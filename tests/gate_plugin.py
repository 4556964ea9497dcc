"""pytest plugin: evidence records written from the falsifier tests (`@pytest.mark.gate`), and the
proof by mutation re-checked on every `make test`.

Two records, each asked for by an option (DIR gets DIR/metadata.json; LEDGER files the record
append-only as LEDGER/<run-id>/, e.g. evidence/runs):

* `--conformance-record DIR` / `--conformance-ledger LEDGER`: a record of run kind
  "conformance". Test-kind gates have no runtime measurement; their verdict is their falsifiers'
  outcomes, judged by the gate's own judge like any other measured value.
* `--falsify-record DIR` / `--falsify-ledger LEDGER`: a record of run kind "falsify". Every
  gate-marked test that passes is run again once per gate it marks, with that gate forced off
  (`contracts.judges.forced_off`, a switch inside this process that no environment variable or
  flag reaches). A falsifier that stays green then does not depend on its gate, so a gate is
  proven only when at least one of its falsifiers turns red; GATE-INTEG-002 judges that. The
  record keeps each gate's code fingerprint (tools/fingerprints.py): what it proved.

`--reprove` (what `make test` passes): the falsifiers of every gate whose fingerprint differs
from the latest falsify record of evidence/runs (its stored fingerprints, and those of the commit
it names) run again with the gate forced off; a changed gate with a falsifier that stays green
fails the session.

The off runs reuse module- and session-scoped fixtures built with the gate on (only the test and
its function-scoped fixtures run with it off), so a falsifier must plant its bug in the test
itself, in this process. Under pytest-xdist (`make test` runs its workers) each worker runs its own
tests' off runs and hands what it saw to the controller when it ends, which alone judges and writes.

Off runs are not reported to pytest: they never change the terminal output or the exit status,
except that a record with a FAILed gate, or a changed gate that no longer turns red, makes the
session exit 1.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hypothesis
import pytest
import torch
from _pytest.runner import runtestprotocol
from audit import evidence_paths, load_evidence, scan_falsifiers
from fingerprints import changed_gates, fingerprints_at, gate_fingerprints
from hypothesis import Phase
from mutation import latest_of

from contracts.derive.proofs import FALSIFY_GATE, falsify_summary, outcome_counts
from contracts.errors import BadInput
from contracts.evidence import (
    EvidenceRecord,
    GateResult,
    RunStatus,
    Verdict,
    file_record,
    ledger_slot,
    new_record,
    now,
    run_id,
    write_evidence,
)
from contracts.gates import contract_mode
from contracts.judges import TEST_FAILED, TEST_PASSED, TEST_SKIPPED, forced_off, judge
from contracts.ledger import judged_result
from contracts.spec import GateStatus, Spec, load_spec

GATE_MARK = "gate"
# A test that shows a gate holds on a clean path plants nothing, so it is no falsifier; it still
# counts in the conformance record (a DDP regression must turn GATE-DIST-001 red there).
HOLDS_MARK = "holds"
CONFORMANCE, FALSIFY = "conformance", "falsify"
PLUGIN_NAME = "gatestack-gate-records"
# pytest's exit statuses that mean the tests ran to the end (some may have failed).
RAN_TO_END = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
REPROVE = "gatestack-reprove"
WORKER_OUTPUT = "gatestack-gate-tests"  # what an xdist worker hands its controller is kept under this
ROOT = Path(__file__).resolve().parent.parent  # the repository whose tests these are


@dataclass
class Destination:
    """Where one record goes: a run directory, or a ledger it is filed into append-only."""

    path: Path
    ledger: bool

    def write(self, record: EvidenceRecord) -> Path:
        """Write `record`; a ledger never replaces a record already filed (see `file_record`)."""
        return file_record(self.path, record) if self.ledger else write_evidence(self.path, record)


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
    group = parser.getgroup("gatestack", "gatestack evidence records from the gate-marked tests")
    for kind in (CONFORMANCE, FALSIFY):
        group.addoption(
            f"--{kind}-record", metavar="DIR", type=Path, help=f"write the {kind} record as DIR/metadata.json"
        )
        group.addoption(
            f"--{kind}-ledger",
            metavar="LEDGER",
            type=Path,
            help=f"file the {kind} record append-only as LEDGER/<run-id>/ (e.g. evidence/runs)",
        )
    group.addoption(
        "--reprove",
        action="store_true",
        help="re-run, with its gate forced off, each falsifier of a gate whose code changed since the "
        "latest falsify record in evidence/runs; fail on a gate that no longer turns red",
    )


def destination(config: pytest.Config, kind: str) -> Destination | None:
    """The destination the options give for records of `kind`; both forms at once are refused."""
    record, ledger = config.getoption(f"{kind}_record"), config.getoption(f"{kind}_ledger")
    if record is not None and ledger is not None:
        raise pytest.UsageError(f"give --{kind}-record or --{kind}-ledger, not both")
    if ledger is not None:
        return Destination(ledger, ledger=True)
    return Destination(record, ledger=False) if record is not None else None


def pytest_configure(config: pytest.Config) -> None:
    wanted = {kind: destination(config, kind) for kind in (CONFORMANCE, FALSIFY)}
    targets = {kind: dest for kind, dest in wanted.items() if dest is not None}
    if targets and config.getoption("collectonly"):
        raise pytest.UsageError("--collect-only runs no test, so it leaves no gate record; drop one of them")
    if targets:
        config.pluginmanager.register(GateRecorder(config, targets), PLUGIN_NAME)
    elif config.getoption("reprove") and not config.getoption("collectonly"):
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


def falsifiers_of(tests: dict[str, Falsifier], with_holds: bool = False) -> dict[str, dict[str, Falsifier]]:
    """gate id → nodeid → test, for every gate some test marks (`holds` marks too when asked)."""
    by_gate: dict[str, dict[str, Falsifier]] = {}
    for nodeid, test in tests.items():
        for gate_id in test.gates + (test.holds if with_holds else []):
            by_gate.setdefault(gate_id, {})[nodeid] = test
    return by_gate


def conformance_results(spec: Spec, tests: dict[str, Falsifier]) -> list[GateResult]:
    """One judged result per gate the conformance kind judges and the run has falsifiers of."""
    by_gate = falsifiers_of(tests, with_holds=True)
    results = []
    for gate_id in sorted(spec.required_gates(CONFORMANCE)):
        if gate_id in by_gate:
            measured = {"falsifiers": {nodeid: t.outcome for nodeid, t in sorted(by_gate[gate_id].items())}}
            results.append(judged_result(spec, gate_id, measured, waived=False))
    return results


def falsify_detail(spec: Spec, tests: dict[str, Falsifier]) -> dict[str, dict[str, dict]]:
    """Per ACTIVE gate: each falsifier's outcome with the gate on, and whether it went red off."""
    by_gate = falsifiers_of(tests)
    detail = {}
    for gate_id, gate in sorted(spec.gates.items()):
        if gate.status is not GateStatus.ACTIVE:
            continue
        mine = sorted(by_gate.get(gate_id, {}).items())
        detail[gate_id] = {
            "falsifiers": {nodeid: t.outcome for nodeid, t in mine},
            "red_with_gate_off": {nodeid: t.off.get(gate_id) == TEST_FAILED for nodeid, t in mine},
        }
    return detail


def counts_of(tests: dict[str, Falsifier]) -> dict[str, int]:
    """How many gate-marked tests passed, failed and were skipped with the gates on."""
    return outcome_counts(test.outcome for test in tests.values())


def fill_conformance(record: EvidenceRecord, spec: Spec, tests: dict[str, Falsifier]) -> None:
    """The conformance record's verdicts and counts."""
    record.gates = conformance_results(spec, tests)
    record.metrics = {"counts": {**counts_of(tests), "gates": len(record.gates)}}


def fill_falsify(record: EvidenceRecord, spec: Spec, tests: dict[str, Falsifier]) -> None:
    """The falsify record: the verdict of each gate its run kind judges, and the per-test detail."""
    detail = falsify_detail(spec, tests)
    measured = {"gates": falsify_summary(detail)}
    judged = spec.required_gates(FALSIFY)
    record.gates = [judged_result(spec, gate_id, measured, waived=False) for gate_id in judged]
    record.metrics = {
        "gates": detail,
        "counts": counts_of(tests),
        "fingerprints": gate_fingerprints(ROOT),
    }


FILLERS = {CONFORMANCE: fill_conformance, FALSIFY: fill_falsify}


def run_status(exitstatus: int, gates: list[GateResult]) -> RunStatus:
    """Halted when a gate FAILed (as a training run that a gate stopped), else how pytest ended."""
    if any(result.verdict is Verdict.FAIL for result in gates):
        return RunStatus.HALTED
    if exitstatus in RAN_TO_END:
        return RunStatus.COMPLETED
    return RunStatus.INTERRUPTED if exitstatus == pytest.ExitCode.INTERRUPTED else RunStatus.FAILED


class GateTests:
    """The gate-marked tests a session ran, whichever process ran them.

    The hooks here log the tests this process runs (all of them without xdist). An xdist worker
    hands its log to the controller when it ends (`hand_over`); the controller, which runs no test,
    merges each worker's log as the worker goes down, so it alone sees the whole session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tests: dict[str, Falsifier] = {}

    @property
    def worker(self) -> bool:
        """Whether this process is an xdist worker, whose controller judges and writes."""
        return hasattr(self.config, "workerinput")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.get(report.nodeid)
        if test is not None:  # a controller's forwarded reports find no test until the merge
            test.phases.append(report.outcome)

    @pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
    def pytest_testnodedown(self, node: object, error: object) -> None:
        handed = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, {})
        self.tests.update({nodeid: Falsifier(**kept) for nodeid, kept in handed.items()})

    def hand_over(self) -> bool:
        """In an xdist worker, leave this worker's log for the controller and say so."""
        if self.worker:
            log = {nodeid: asdict(test) for nodeid, test in self.tests.items()}
            self.config.workeroutput[WORKER_OUTPUT] = log  # type: ignore[attr-defined]
        return self.worker


class GateRecorder(GateTests):
    """Collects the gate-marked tests' outcomes, runs the off runs, and writes the records."""

    def __init__(self, config: pytest.Config, targets: dict[str, Destination]) -> None:
        super().__init__(config)
        self.targets = targets
        self.spec = load_spec()
        self.written: dict[str, tuple[Path, EvidenceRecord]] = {}
        argv = ["pytest", *config.invocation_params.args]
        # Only the process that writes starts records (and claims their ledger slots).
        self.records = {} if self.worker else {k: self._start(k, d, argv) for k, d in targets.items()}

    @staticmethod
    def _start(kind: str, dest: Destination, argv: list[str]) -> EvidenceRecord:
        """A running record, made before any test runs so it names the code that is tested."""
        rid = run_id(kind)
        if dest.ledger:
            try:
                ledger_slot(dest.path, rid)  # refuse a clash now, not after the tests
            except BadInput as exc:
                raise pytest.UsageError(str(exc)) from None
        cuda = torch.cuda.is_available()  # the kernel falsifiers run on the GPU when there is one
        device, version = ("cuda", torch.version.cuda) if cuda else ("cpu", None)
        return new_record(kind, rid, argv, device=device, cuda=version, mode=contract_mode().value)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
        gates, holds = gate_ids(item), gate_ids(item, HOLDS_MARK)
        if gates or holds:
            self.tests[item.nodeid] = Falsifier(gates, holds)
        result = yield
        if gates and FALSIFY in self.targets:
            self._run_off(item, nextitem)
        return result

    def _run_off(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Run a test that passed again, once per ACTIVE gate it marks, with that gate forced off."""
        test = self.tests[item.nodeid]
        if test.outcome != TEST_PASSED:
            return  # red with the gate off proves nothing about a test that is not green with it on
        active = [
            g for g in test.gates if g in self.spec.gates and self.spec.gates[g].status is GateStatus.ACTIVE
        ]
        test.off.update(run_off(item, nextitem, active))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.hand_over():
            return
        for kind, record in self.records.items():
            FILLERS[kind](record, self.spec, self.tests)
            record.run.status, record.run.finished = run_status(exitstatus, record.gates), now()
            failed = [g for g in record.gates if g.verdict is Verdict.FAIL]
            if failed:
                record.run.stop_reason = f"gate(s) FAILed: {', '.join(g.id for g in failed)}"
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a FAILed gate is not a green run
            self.written[kind] = (self.targets[kind].write(record), record)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for kind, (path, record) in sorted(self.written.items()):
            terminalreporter.section(f"{kind} record")
            terminalreporter.write_line(f"{path}  ({record.run.status.value})")
            for result in record.gates:
                verdict = f"{result.id:<18} {result.verdict.value:<5} {result.message or ''}"
                terminalreporter.write_line(verdict)
                if kind == FALSIFY:
                    self._summarise_falsify(terminalreporter, result)

    @staticmethod
    def _summarise_falsify(terminalreporter: pytest.TerminalReporter, result: GateResult) -> None:
        """The per-gate table: falsifiers, green with the gate on, red with it forced off."""
        terminalreporter.write_line("gate               falsifiers  green-on  red-off")
        assert isinstance(result.measured, dict)
        for gate_id, row in result.measured["gates"].items():
            terminalreporter.write_line(
                f"{gate_id:<18} {row['falsifiers']:>10}  {'yes' if row['passed_on'] else 'no':>8}  "
                f"{'yes' if row['red_off'] else 'no':>7}"
            )


class Reprover(GateTests):
    """`--reprove`: the falsifiers of the gates whose code changed since the latest falsify record,
    run again with their gate forced off; a changed gate whose falsifiers all stay green fails."""

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        root = Path(config.rootpath)
        now = gate_fingerprints(root)
        latest = latest_of([load_evidence(path) for path in evidence_paths(root)])
        stored, at_commit = None, None
        if latest is not None:
            record = latest[1]
            kept = record.metrics.get("fingerprints")
            stored = kept if isinstance(kept, dict) else None
            at_commit = fingerprints_at(root, record.code.git_sha) if record.code.git_sha else None
        # What the record's fingerprints or those of its commit do not vouch for is proven again;
        # with neither known (no record), every gate is.
        changed = set(now) if stored is None and at_commit is None else set()
        for then in (stored, at_commit):
            if then is not None:
                changed |= changed_gates(now, then)
        spec = load_spec()
        active = {g for g, gate in spec.gates.items() if gate.status is GateStatus.ACTIVE}
        self.changed = sorted(changed & active)
        self.expected = {  # a test by name; a module marked whole by its file
            g: {loc.file if loc.name == "pytestmark" else loc.name for loc in locs}
            for g, locs in scan_falsifiers(root).items()
        }
        self.source = latest[1].run.id if latest is not None else None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
        gates = [g for g in gate_ids(item) if g in self.changed]
        if gates:
            self.tests[item.nodeid] = Falsifier(gates)
        result = yield
        test = self.tests.get(item.nodeid)
        if test is not None and test.outcome == TEST_PASSED:
            test.off.update(run_off(item, nextitem, test.gates))
        return result

    def verdicts(self) -> dict[str, str]:
        """gate id → 'red' (proven again), 'green' (a falsifier that passed stayed green with the gate
        forced off), or why it was not judged."""
        found = {}
        for gate_id in self.changed:
            mine = {nodeid: t for nodeid, t in self.tests.items() if gate_id in t.gates}
            ran = {part.split("[")[0] for nodeid in mine for part in nodeid.split("::")}
            if not mine:
                found[gate_id] = "absent"
            elif not self.expected.get(gate_id, set()) <= ran:
                found[gate_id] = "not judged: not all of its falsifiers ran in this session"
            elif any(t.outcome != TEST_PASSED for t in mine.values()):
                found[gate_id] = "not judged: a falsifier failed with the gate on"
            else:  # GATE-INTEG-002's judge over this gate's summary, as the falsify record's
                detail = {
                    "falsifiers": {nodeid: t.outcome for nodeid, t in mine.items()},
                    "red_with_gate_off": {
                        nodeid: t.off.get(gate_id) == TEST_FAILED for nodeid, t in mine.items()
                    },
                }
                summary = falsify_summary({gate_id: detail})
                found[gate_id] = "green" if judge(FALSIFY_GATE, {"gates": summary}) else "red"
        return found

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.hand_over():
            return
        if any(v == "green" for v in self.verdicts().values()) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.worker:
            return
        verdicts = self.verdicts()
        terminalreporter.section("proof by mutation, re-checked")
        since = f"the falsify record {self.source}" if self.source else "no falsify record"
        terminalreporter.write_line(f"{len(self.changed)} ACTIVE gate(s) changed since {since}")
        for gate_id, verdict in verdicts.items():
            if verdict == "green":
                green = sorted(
                    nodeid
                    for nodeid, t in self.tests.items()
                    if gate_id in t.gates and t.off.get(gate_id) != TEST_FAILED
                )
                terminalreporter.write_line(
                    f"{gate_id}: falsifier(s) stay green with the gate forced off, so they do not "
                    f"prove it: {', '.join(green)}"
                )
            elif verdict not in ("red", "absent"):
                terminalreporter.write_line(f"{gate_id}: {verdict}")
        proven = sum(v == "red" for v in verdicts.values())
        terminalreporter.write_line(f"{proven} changed gate(s) turn red with the gate forced off")
        if absent := sum(v == "absent" for v in verdicts.values()):
            terminalreporter.write_line(f"{absent} changed gate(s) have no falsifier in this session")
