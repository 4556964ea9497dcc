"""Gate bindings: icontract pre/postconditions that speak in gate ids.

A binding ties one gate of the spec to one function of the stack:

    @gate_require("GATE-TRAIN-003", lambda loss, grad_norm: finite_outcome(loss, grad_norm))
    def optimizer_step(loss: float, grad_norm: float) -> None: ...

The check receives the function's arguments by name (icontract resolves them), measures, and
returns the `Outcome` that `measure` builds: the gate's judge in `contracts.judges` decides, the
same judge `tools/check_integrity.py` re-runs on the record. Every outcome is recorded in the
active `Ledger`, which is how verdicts reach the evidence record. A failure of a blocking gate
raises `GateViolation`; a failure of a warning gate, or of a waived one, is recorded as WARN or
WAIVED and the call goes on. Checks run on Python scalars at step boundaries, never per tensor
op, so a binding costs no device synchronisation.

Every binding is registered in `BINDINGS` at import time, so tools can list gate id → function.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import icontract

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Outcome, active_ledger, alone
from contracts.spec import load_spec

F = TypeVar("F", bound=Callable[..., Any])

MODE_ENV = "GATESTACK_CONTRACTS"


class Mode(StrEnum):
    """How much of the law runs: OFF (nothing), BOUNDARY (cheap checks), FULL (all checks)."""

    OFF = "off"
    BOUNDARY = "boundary"
    FULL = "full"


class Level(StrEnum):
    """The cost class of a binding: BOUNDARY checks run in BOUNDARY and FULL modes, FULL only in FULL."""

    BOUNDARY = "boundary"
    FULL = "full"


def contract_mode() -> Mode:
    """The mode from GATESTACK_CONTRACTS (default boundary); read at every call so tests can flip it."""
    raw = os.environ.get(MODE_ENV, Mode.BOUNDARY.value).strip().lower()
    try:
        return Mode(raw)
    except ValueError:
        valid = ", ".join(m.value for m in Mode)
        raise BadInput(f"{MODE_ENV}={raw!r} is not a contract mode; use one of: {valid}") from None


def weakest_mode(*modes: str) -> str:
    """The least of several contract modes: a run resumed under a weaker mode is only that strong."""
    order = [Mode.OFF.value, Mode.BOUNDARY.value, Mode.FULL.value]
    return min(modes, key=lambda m: order.index(m) if m in order else -1)


def _runs(level: Level) -> bool:
    mode = contract_mode()
    if mode is Mode.OFF:
        return False
    return mode is Mode.FULL or level is Level.BOUNDARY


def measure(gate_id: str, measured: dict[str, Any], *, step: int | None = None, holds: str = "") -> Outcome:
    """The outcome of one evaluation of a gate: its judge decides over `measured`.

    `holds` is the message when the gate holds (default: the gate's title); when it does not,
    the message is the judge's list of problems.
    """
    gate = load_spec().gate(gate_id)
    problems = judge(gate_id, measured, gate.threshold_values)
    message = "; ".join(problems) if problems else (holds or f"holds: {gate.title.lower()}")
    return Outcome(not problems, message, measured, gate.threshold_values, step, tuple(problems))


@dataclass(frozen=True)
class Binding:
    """One gate bound to one function, as listed by tools."""

    gate_id: str
    target: str
    kind: str  # "require" | "ensure"
    level: Level


BINDINGS: list[Binding] = []

# The failing outcome travels from the condition to icontract's error factory through here.
_failed = threading.local()


def violation(gate_id: str, outcome: Outcome) -> GateViolation:
    """A GateViolation for a failing outcome, stamped with the gate's current revision."""
    return GateViolation(
        gate_id,
        load_spec().gate(gate_id).revision,
        outcome.message,
        measured=outcome.measured,
        threshold=outcome.threshold,
    )


def warning_line(gate_id: str, message: str) -> str:
    """How a command says a warning gate's finding at its end: one indented line naming the gate, so
    `stack prepare`'s filter warnings and a training run's WARN verdicts read alike."""
    return f"  warning {gate_id}: {message}"


def _condition(gate_id: str, check: Callable[..., Outcome], level: Level) -> Callable[..., bool]:
    @functools.wraps(check)  # icontract reads the argument names through __wrapped__
    def condition(**kwargs: Any) -> bool:
        if not _runs(level):
            return True
        outcome = check(**kwargs)
        ledger = active_ledger()
        # Outside a run there is nothing to record the outcome in: its verdict alone is a new ledger's.
        verdict = alone(gate_id, outcome) if ledger is None else ledger.record_outcome(gate_id, outcome)
        if verdict is Verdict.FAIL:
            _failed.outcome = outcome
            return False
        return True

    return condition


def _error(gate_id: str) -> Callable[[], GateViolation]:
    def error() -> GateViolation:
        return violation(gate_id, _failed.__dict__.pop("outcome"))

    return error


def _bind(kind: str, gate_id: str, check: Callable[..., Outcome], level: Level) -> Callable[[F], F]:
    contract = icontract.require if kind == "require" else icontract.ensure

    def decorate(func: F) -> F:
        BINDINGS.append(Binding(gate_id, f"{func.__module__}.{func.__qualname__}", kind, level))
        wrapped = contract(_condition(gate_id, check, level), description=gate_id, error=_error(gate_id))(
            func
        )
        return wrapped  # type: ignore[return-value]

    return decorate


def gate_require(
    gate_id: str, check: Callable[..., Outcome], *, level: Level = Level.BOUNDARY
) -> Callable[[F], F]:
    """Bind a gate as a precondition: `check` sees the call's arguments before the body runs."""
    return _bind("require", gate_id, check, level)


def gate_ensure(
    gate_id: str, check: Callable[..., Outcome], *, level: Level = Level.BOUNDARY
) -> Callable[[F], F]:
    """Bind a gate as a postcondition: `check` also sees the return value as `result`."""
    return _bind("ensure", gate_id, check, level)


def bindings_by_gate() -> dict[str, list[str]]:
    """gate id → the functions bound to it (only modules imported so far are registered)."""
    table: dict[str, list[str]] = {}
    for binding in BINDINGS:
        table.setdefault(binding.gate_id, []).append(binding.target)
    return table
