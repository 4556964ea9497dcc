"""Gate bindings fire, record verdicts, respect waivers, severity and the contract mode."""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stack
from contracts import gates as gates_module
from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict, Waiver
from contracts.gates import BINDINGS, Outcome, contract_mode, gate_ensure, gate_require, measure
from contracts.ledger import Ledger, alone, recording
from contracts.spec import load_spec
from tools.integrity.audit import scan_bindings

ROOT = Path(__file__).resolve().parents[2]

# A blocking gate and a warning gate from the real spec: bindings must speak the spec's ids.
BLOCKING = "GATE-TRAIN-003"
WARNING = "GATE-DATA-004"


@gate_require(BLOCKING, lambda x: measure(BLOCKING, {"loss": x, "grad_norm": 1.0}))
def _needs_finite(x: float) -> float:
    return x


# Repeats of 50 are far past DATA-004's max_repeats; 1e9 tokens per parameter are plenty.
@gate_ensure(WARNING, lambda result: measure(WARNING, {"repeats": result, "tokens_per_parameter": 1e9}))
def _small(x: float) -> float:
    return x


NAN = float("nan")


def test_failing_precondition_raises_gate_violation() -> None:
    with pytest.raises(GateViolation) as info:
        _needs_finite(NAN)
    error = info.value
    assert error.gate_id == BLOCKING
    assert error.revision == load_spec().gate(BLOCKING).revision
    assert math.isnan(error.measured["loss"])
    assert error.threshold == load_spec().gate(BLOCKING).threshold_values
    assert str(error).startswith(f"{BLOCKING} rev ")


def test_verdicts_land_in_the_active_ledger() -> None:
    ledger = Ledger()
    with recording(ledger):
        _needs_finite(1.0)
        assert ledger.results[BLOCKING].verdict is Verdict.PASS
        with pytest.raises(GateViolation):
            _needs_finite(math.inf)
        _needs_finite(3.0)  # a later PASS does not hide the FAIL, nor its numbers
    result = ledger.results[BLOCKING]
    assert result.verdict is Verdict.FAIL
    assert result.measured == {"loss": "inf", "grad_norm": 1.0}  # strict JSON, as the record keeps it
    assert result.thresholds_sha256 == load_spec().gate(BLOCKING).thresholds_sha256
    assert result.message and "not finite" in result.message


def test_checks_of_one_gate_merge_and_the_worst_stands() -> None:
    """EVAL-002 is judged by its configuration and by each standard error: the record keeps both."""
    ledger = Ledger()
    with recording(ledger):
        ledger.record_outcome("GATE-EVAL-002", measure("GATE-EVAL-002", {"patience": 9, "min_epochs": 9}))
        ledger.record_outcome("GATE-EVAL-002", measure("GATE-EVAL-002", {"heldout_stderr": 0.0}))
        ledger.record_outcome("GATE-EVAL-002", measure("GATE-EVAL-002", {"heldout_stderr": 0.1}))
    result = ledger.results["GATE-EVAL-002"]
    assert result.verdict is Verdict.FAIL
    assert result.measured == {"patience": 9, "min_epochs": 9, "heldout_stderr": 0.0}


def test_carried_verdicts_are_rejudged_under_the_current_spec() -> None:
    """A resume re-judges what it carries: a PASS whose numbers fail today's thresholds is not kept."""
    ledger = Ledger()
    with recording(ledger):
        _small(1.0)
    carried = ledger.results[WARNING].model_copy(
        update={"measured": {"repeats": 50.0, "tokens_per_parameter": 1e9}}
    )
    fresh = Ledger()
    assert fresh.carry([carried]) == [WARNING]
    assert fresh.results[WARNING].verdict is Verdict.WARN


def test_warning_gate_records_warn_and_goes_on() -> None:
    ledger = Ledger()
    with recording(ledger):
        assert _small(50.0) == 50.0
    assert ledger.results[WARNING].verdict is Verdict.WARN


@pytest.mark.parametrize(
    ("gate", "outcome"),
    [
        (BLOCKING, measure(BLOCKING, {"loss": 1.0, "grad_norm": 1.0})),
        (BLOCKING, measure(BLOCKING, {"loss": NAN, "grad_norm": 1.0})),
        (WARNING, measure(WARNING, {"repeats": 50.0, "tokens_per_parameter": 1e9})),
        (BLOCKING, Outcome(True, "made by hand", {"loss": NAN, "grad_norm": 1.0})),  # judged from its values
        (BLOCKING, Outcome(False, "made by hand", {"loss": 1.0, "grad_norm": 1.0})),
    ],
    ids=["pass", "fail", "warn", "unjudged-fail", "unjudged-pass"],
)
def test_outside_a_run_an_outcome_gets_the_verdict_a_new_ledger_gives_it(gate: str, outcome: Outcome) -> None:
    """A binding called outside a run records its outcome nowhere: its verdict is a new ledger's,
    judged from the values where the outcome does not carry the judge's problems."""
    assert alone(gate, outcome) is Ledger().record_outcome(gate, outcome)


def test_outside_a_run_a_warning_goes_on_and_a_failure_stops_the_call() -> None:
    assert _small(50.0) == 50.0
    with pytest.raises(GateViolation, match=BLOCKING):
        _needs_finite(math.inf)


def test_waiver_turns_failure_into_waived() -> None:
    ledger = Ledger([Waiver(gate=BLOCKING, reason="probing negative inputs on purpose")])
    with recording(ledger):
        assert math.isnan(_needs_finite(NAN))
    assert ledger.results[BLOCKING].verdict is Verdict.WAIVED


def test_waiver_for_unknown_gate_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown gate id"):
        Ledger([Waiver(gate="GATE-NOPE-001", reason="x")])  # integrity: planted


def test_not_run_gates_are_listed() -> None:
    results = Ledger().gate_results(expected=[BLOCKING])
    assert [(r.id, r.verdict) for r in results] == [(BLOCKING, Verdict.NOT_RUN)]


def test_mode_off_disables_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATESTACK_CONTRACTS", "off")
    assert _needs_finite(math.inf) == math.inf


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


SIZE = {"heldout_batches": 2, "distinct_windows": 4, "batch_size": 4}  # GATE-EVAL-001's set check, failing
BIGGER = {"heldout_batches": 16, "distinct_windows": 64, "batch_size": 4}  # the same check, passing
PRECISION = {"precision": "fp32", "logits_dtypes": ["float32"], "scorings": 2}  # its precision check, passing


def test_a_waived_gate_keeps_the_values_of_the_checks_it_makes_later() -> None:
    """GATE-EVAL-001 waived at set-up for its set, then its precision check passing at the first
    evaluation: the record holds both checks' values (a run of its kind must show them) and the
    verdict stays WAIVED, its step the set-up's."""
    ledger = Ledger([Waiver(gate="GATE-EVAL-001", reason="a held-out set of repeated windows on purpose")])
    assert (
        ledger.record_outcome("GATE-EVAL-001", Outcome(False, "a held-out set that repeats windows", SIZE))
        is Verdict.WAIVED
    )
    assert ledger.record_outcome("GATE-EVAL-001", Outcome(True, "", PRECISION, step=5)) is Verdict.PASS
    result = ledger.results["GATE-EVAL-001"]
    assert (result.verdict, result.step, result.measured) == (Verdict.WAIVED, None, {**SIZE, **PRECISION})


def test_a_passing_check_never_replaces_the_numbers_that_made_a_gate_fire() -> None:
    """A later outcome that measures the failing check again and passes leaves its numbers as
    they were: only values of checks the worse outcome did not measure are added."""
    ledger = Ledger([Waiver(gate="GATE-EVAL-001", reason="a held-out set of repeated windows on purpose")])
    ledger.record_outcome("GATE-EVAL-001", Outcome(False, "a held-out set that repeats windows", SIZE))
    assert ledger.record_outcome("GATE-EVAL-001", Outcome(True, "", BIGGER, step=3)) is Verdict.PASS
    assert ledger.results["GATE-EVAL-001"].measured == SIZE


@settings(max_examples=40)
@given(
    st.lists(st.sampled_from([SIZE, BIGGER, PRECISION, {**SIZE, **PRECISION}]), min_size=1, max_size=5),
    st.booleans(),
)
def test_the_ledger_settles_a_judged_outcome_as_it_would_judge_its_values(
    sequence: list[dict[str, object]], waived: bool
) -> None:
    """An outcome `measure` made carries its judge's problems, which the ledger takes instead of
    judging the same values again: every verdict and result equals the ones a ledger reaches that
    judges each outcome's values itself (an outcome without problems)."""
    waivers = [Waiver(gate="GATE-EVAL-001", reason="a held-out set of repeated windows on purpose")]
    handed, judged = (Ledger(waivers if waived else None) for _ in range(2))
    for step, measured in enumerate(sequence):
        outcome = measure("GATE-EVAL-001", dict(measured), step=step)
        assert outcome.problems is not None
        bare = Outcome(outcome.ok, outcome.message, outcome.measured, outcome.threshold, outcome.step)
        assert handed.record_outcome("GATE-EVAL-001", outcome) is judged.record_outcome("GATE-EVAL-001", bare)
        assert handed.results == judged.results
