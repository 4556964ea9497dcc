"""Gate bindings fire, record verdicts, respect waivers, severity and the contract mode."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from audit import scan_bindings

import stack
from contracts import gates as gates_module
from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict, Waiver
from contracts.gates import BINDINGS, Outcome, contract_mode, gate_ensure, gate_require
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent

# A blocking gate and a warning gate from the real spec: bindings must speak the spec's ids.
BLOCKING = "GATE-TRAIN-003"
WARNING = "GATE-DATA-004"


@gate_require(BLOCKING, lambda x: Outcome(ok=x >= 0, message="x is negative", measured=x, threshold=0))
def _needs_non_negative(x: float) -> float:
    return x


@gate_ensure(
    WARNING, lambda result: Outcome(ok=result < 10, message="too big", measured=result, threshold=10)
)
def _small(x: float) -> float:
    return x


def test_failing_precondition_raises_gate_violation() -> None:
    with pytest.raises(GateViolation) as info:
        _needs_non_negative(-1.0)
    error = info.value
    assert error.gate_id == BLOCKING
    assert error.revision == load_spec().gate(BLOCKING).revision
    assert (error.measured, error.threshold) == (-1.0, 0)
    assert str(error).startswith(f"{BLOCKING} rev ")


def test_verdicts_land_in_the_active_ledger() -> None:
    ledger = Ledger()
    with recording(ledger):
        _needs_non_negative(1.0)
        assert ledger.results[BLOCKING].verdict is Verdict.PASS
        with pytest.raises(GateViolation):
            _needs_non_negative(-2.0)
        _needs_non_negative(3.0)  # a later PASS does not hide the FAIL
    assert ledger.results[BLOCKING].verdict is Verdict.FAIL
    assert ledger.results[BLOCKING].measured == -2.0


def test_warning_gate_records_warn_and_goes_on() -> None:
    ledger = Ledger()
    with recording(ledger):
        assert _small(50.0) == 50.0
    assert ledger.results[WARNING].verdict is Verdict.WARN


def test_waiver_turns_failure_into_waived() -> None:
    ledger = Ledger([Waiver(gate=BLOCKING, reason="probing negative inputs on purpose")])
    with recording(ledger):
        assert _needs_non_negative(-1.0) == -1.0
    assert ledger.results[BLOCKING].verdict is Verdict.WAIVED


def test_waiver_for_unknown_gate_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown gate id"):
        Ledger([Waiver(gate="GATE-NOPE-001", reason="x")])  # integrity: planted


def test_not_run_gates_are_listed() -> None:
    results = Ledger().gate_results(expected=[BLOCKING])
    assert [(r.id, r.verdict) for r in results] == [(BLOCKING, Verdict.NOT_RUN)]


def test_mode_off_disables_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATESTACK_CONTRACTS", "off")
    assert _needs_non_negative(-1.0) == -1.0


def test_bad_mode_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATESTACK_CONTRACTS", "sometimes")
    with pytest.raises(BadInput, match="GATESTACK_CONTRACTS"):
        contract_mode()


def test_static_scan_finds_exactly_the_registered_bindings() -> None:
    """What check_integrity reads from the source equals what the stack registers when imported."""
    for module in pkgutil.walk_packages(stack.__path__, "stack."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    in_stack = {(b.gate_id, b.target.split(".")[0]) for b in BINDINGS if b.target.startswith("stack.")}
    runtime = sorted({gid for gid, _ in in_stack})
    static = sorted(
        gid for gid, locs in scan_bindings(ROOT).items() if any(loc.file.startswith("stack/") for loc in locs)
    )
    assert runtime == static
    assert gates_module.bindings_by_gate()[BLOCKING]
