"""The ledger: where gate verdicts of one run collect before they are written as evidence.

A binding that runs records its outcome in the active ledger (a context variable, so nested
runs and threads in tests don't mix). A FAIL or WARN sticks: a later PASS of the same gate does
not hide that the gate once fired, nor replace the numbers that made it fire. Outcomes of equal
or worse rank merge their measured values, so a gate judged by several checks (early stopping's
configuration and its standard error, say) keeps every check's values, and the verdict stored is
the judge's over all of them. Waivers turn a failure into WAIVED, with the user's reason.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from contracts.evidence import GateResult, Verdict, Waiver, plain
from contracts.judges import CHECKS, judge
from contracts.spec import Severity, Spec, load_spec

_ACTIVE: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("ledger", default=None)


@dataclass(frozen=True)
class Outcome:
    """What one check of a gate found: whether it holds, and the numbers that say so
    (contracts.gates.measure makes it, the ledger records it)."""

    ok: bool
    message: str
    measured: Any = None
    threshold: Any = None
    step: int | None = None
    # The judge's problems with `measured`, when the judge made this outcome (None: unknown, and
    # the ledger judges the values itself); the ledger does not judge the same values twice.
    problems: tuple[str, ...] | None = None


# A verdict only gives way to a worse one.
RANK = {Verdict.NOT_RUN: 0, Verdict.PASS: 1, Verdict.WAIVED: 2, Verdict.WARN: 3, Verdict.FAIL: 4}


def verdict_of(spec: Spec, gate_id: str, holds: bool, waived: bool) -> Verdict:
    """PASS when the gate holds; otherwise WAIVED, WARN or FAIL by waiver and severity.

    The one mapping from a judge's finding to a verdict, used by the ledger at run time and by
    the integrity check when it re-judges a record.
    """
    if holds:
        return Verdict.PASS
    if waived:
        return Verdict.WAIVED
    return Verdict.WARN if spec.gate(gate_id).severity is Severity.WARNING else Verdict.FAIL


def alone(gate_id: str, outcome: Outcome) -> Verdict:
    """The verdict a new ledger would give `outcome`, without the result it would keep: outside a
    run a gate binding's outcome is recorded nowhere, and a traced forward's hundreds of values
    were copied into that result (evidence.plain) only to be dropped."""
    spec, problems = load_spec(), outcome.problems
    if problems is None:
        problems = tuple(judge(gate_id, outcome.measured, spec.gate(gate_id).threshold_values))
    return verdict_of(spec, gate_id, not problems, waived=False)


def judged_message(problems: list[str]) -> str | None:
    """A gate result's message: its judge's problems, joined (None when it holds). The one rule,
    for the ledger at run time and the integrity check re-judging a record."""
    return "; ".join(problems) if problems else None


def judged_result(
    spec: Spec,
    gate_id: str,
    measured: Any,
    waived: bool,
    step: int | None = None,
    problems: Sequence[str] | None = None,
) -> GateResult:
    """A gate result whose verdict, thresholds and message come from the gate's judge: its
    `problems` with `measured` (None: judged here)."""
    gate = spec.gate(gate_id)
    if problems is None:
        problems = judge(gate_id, measured, gate.threshold_values)
    # model_construct: every step's bindings land here, and the fields are ours, not input.
    return GateResult.model_construct(
        id=gate_id,
        revision=gate.revision,
        thresholds_sha256=gate.thresholds_sha256,
        verdict=verdict_of(spec, gate_id, not problems, waived),
        measured=plain(measured),
        threshold=gate.threshold_values,
        step=step,
        message=judged_message(list(problems)),
    )


def settle(
    spec: Spec,
    gate_id: str,
    previous: GateResult | None,
    measured: Any,
    ok: bool,
    waived: bool,
    step: int | None = None,
    problems: Sequence[str] | None = None,
) -> GateResult | None:
    """A gate's result after one more outcome, or None when `previous` stands.

    `ok` is the judge's finding over this outcome's own `measured` values, and `problems` its
    problems when known: a result of those values alone is not judged again (a traced forward's
    GATE-TRACE-002 values are some hundred numbers, and every training step settles several gates).
    A verdict only gives way to one at least as bad; values of an equal or worse outcome merge into
    the earlier ones, and the merged values are judged again. A better outcome never hides a worse
    one: it adds only the values of checks the worse one did not measure (a gate waived for its size
    keeps the values of the checks it makes later, which a record of its kind must show), never
    replaces the numbers that made it fire, and the verdict stands. The run's ledger settles every
    outcome here, and the integrity check settles the outcomes a metrics log holds here too
    (contracts.derive).
    """
    verdict = verdict_of(spec, gate_id, ok, waived)
    if previous is not None and RANK[verdict] < RANK[previous.verdict]:
        return _joined(spec, gate_id, previous, measured, waived)
    if previous is not None and isinstance(previous.measured, dict) and isinstance(measured, dict):
        merged = {**_current(gate_id, previous.measured, measured), **measured}
        if merged.keys() != measured.keys():  # earlier values joined: not what was judged
            problems = None
        measured = merged
    elif previous is not None:
        problems = None
    return judged_result(spec, gate_id, measured, waived, step, problems)


def _current(gate_id: str, earlier: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """`earlier` values less those measured under a setting `measured` gives another value: the
    values of every check (CHECKS) that holds a key whose value changed, but the ones `measured`
    holds. A resume that lowers the clip makes the post-clip norm measured under the old clip
    another measurement's; judged against the new clip, it would fire on a run that clips."""
    changed = {key for key in earlier.keys() & measured.keys() if earlier[key] != measured[key]}
    stale = {
        key
        for keys in CHECKS.get(gate_id, {}).values()
        if changed & set(keys)
        for key in keys
        if key not in measured
    }
    return {key: value for key, value in earlier.items() if key not in stale}


def _joined(spec: Spec, gate_id: str, worse: GateResult, measured: Any, waived: bool) -> GateResult | None:
    """`worse` with the keys of a better outcome's `measured` it lacks, or None when there are
    none (or the values are not tables): its step, and the verdict the judge gives it again."""
    if not (isinstance(worse.measured, dict) and isinstance(measured, dict)):
        return None
    added = {key: value for key, value in measured.items() if key not in worse.measured}
    if not added:
        return None
    joined = judged_result(spec, gate_id, {**worse.measured, **added}, waived, worse.step)
    return joined if joined.verdict is worse.verdict else None


class Ledger:
    """Verdicts of one run, keyed by gate id."""

    def __init__(self, waivers: list[Waiver] | None = None) -> None:
        self.waivers = {w.gate: w for w in (waivers or [])}
        for gate_id in self.waivers:
            load_spec().gate(gate_id)  # an unknown gate id in a waiver is bad input
        self.results: dict[str, GateResult] = {}

    def record_outcome(self, gate_id: str, outcome: Outcome) -> Verdict:
        """Record a binding's outcome; returns the verdict the gate now stands at."""
        spec, waived = load_spec(), gate_id in self.waivers
        previous, own = self.results.get(gate_id), verdict_of(spec, gate_id, outcome.ok, waived)
        result = settle(
            spec, gate_id, previous, outcome.measured, outcome.ok, waived, outcome.step, outcome.problems
        )
        if result is None:
            return own
        self.results[gate_id] = result
        # A better outcome joined to a worse one is still judged on its own (the worse one was
        # answered when it came).
        return own if previous is not None and RANK[own] < RANK[previous.verdict] else result.verdict

    def carry(self, results: list[GateResult]) -> list[str]:
        """Take verdicts from an earlier part of the same run (a resume), re-judged under this spec.

        A carried result is judged again from its own measured values with the current thresholds
        and stamped with the current revision, so no verdict keeps the name of a spec it was not
        judged under. Returns the ids whose verdict changed in re-judging.
        """
        spec = load_spec()
        changed = []
        for old in results:
            if old.verdict is Verdict.NOT_RUN or old.id not in spec.gates:
                continue
            new = judged_result(spec, old.id, old.measured, old.id in self.waivers, old.step)
            if new.verdict is not old.verdict:
                changed.append(old.id)
            self.results[old.id] = new
        return changed

    def gate_results(self, expected: list[str] | None = None) -> list[GateResult]:
        """Every recorded verdict, plus NOT_RUN for each expected gate that never ran."""
        results = dict(self.results)
        spec = load_spec()
        for gate_id in expected or []:
            if gate_id not in results:
                gate = spec.gate(gate_id)
                results[gate_id] = GateResult(
                    id=gate_id,
                    revision=gate.revision,
                    thresholds_sha256=gate.thresholds_sha256,
                    verdict=Verdict.NOT_RUN,
                    threshold=gate.threshold_values,
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
