"""The ledger: where gate verdicts of one run collect before they are written as evidence.

A binding that runs records its outcome in the active ledger (a context variable, so nested
runs and threads in tests don't mix). A FAIL or WARN sticks: a later PASS of the same gate does
not hide that the gate once fired. Waivers turn a failure into WAIVED, with the user's reason.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from contracts.evidence import GateResult, Verdict, Waiver
from contracts.spec import Severity, load_spec

if TYPE_CHECKING:
    from contracts.gates import Outcome

_ACTIVE: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("ledger", default=None)

# A verdict only gives way to a worse one.
_RANK = {Verdict.NOT_RUN: 0, Verdict.PASS: 1, Verdict.WAIVED: 2, Verdict.WARN: 3, Verdict.FAIL: 4}


class Ledger:
    """Verdicts of one run, keyed by gate id."""

    def __init__(self, waivers: list[Waiver] | None = None) -> None:
        self.waivers = {w.gate: w for w in (waivers or [])}
        for gate_id in self.waivers:
            load_spec().gate(gate_id)  # an unknown gate id in a waiver is bad input
        self.results: dict[str, GateResult] = {}

    def verdict_for(self, gate_id: str, ok: bool) -> Verdict:
        """PASS when the check holds; otherwise WAIVED, WARN or FAIL by waiver and severity."""
        if ok:
            return Verdict.PASS
        if gate_id in self.waivers:
            return Verdict.WAIVED
        if load_spec().gate(gate_id).severity is Severity.WARNING:
            return Verdict.WARN
        return Verdict.FAIL

    def record(
        self,
        gate_id: str,
        verdict: Verdict,
        measured: Any = None,
        threshold: Any = None,
        step: int | None = None,
    ) -> Verdict:
        """Record one evaluation; keeps the worst verdict seen and its numbers."""
        previous = self.results.get(gate_id)
        if previous is None or _RANK[verdict] >= _RANK[previous.verdict]:
            # model_construct: every step's bindings land here, and the fields are ours, not input.
            self.results[gate_id] = GateResult.model_construct(
                id=gate_id,
                revision=load_spec().gate(gate_id).revision,
                verdict=verdict,
                measured=measured,
                threshold=threshold,
                step=step,
            )
        return verdict

    def record_outcome(self, gate_id: str, outcome: Outcome) -> Verdict:
        """Record a binding's outcome and return the verdict it earned."""
        verdict = self.verdict_for(gate_id, outcome.ok)
        return self.record(gate_id, verdict, outcome.measured, outcome.threshold, outcome.step)

    def gate_results(self, expected: list[str] | None = None) -> list[GateResult]:
        """Every recorded verdict, plus NOT_RUN for each expected gate that never ran."""
        results = dict(self.results)
        spec = load_spec()
        for gate_id in expected or []:
            if gate_id not in results:
                results[gate_id] = GateResult(
                    id=gate_id, revision=spec.gate(gate_id).revision, verdict=Verdict.NOT_RUN
                )
        return [results[k] for k in sorted(results)]


def active_ledger() -> Ledger | None:
    """The ledger of the run in progress, if any."""
    return _ACTIVE.get()


@contextmanager
def recording(ledger: Ledger) -> Iterator[Ledger]:
    """Make `ledger` the active one for the duration of a run."""
    token = _ACTIVE.set(ledger)
    try:
        yield ledger
    finally:
        _ACTIVE.reset(token)
