"""Records whose claims are verdicts over their own details: the proof by mutation and the conformance run.

A falsify record (`make falsify`) keeps, per ACTIVE gate, each falsifier test's outcome with the
gate on and whether it went red with the gate forced off (`metrics.gates`, the per-test detail).
GATE-INTEG-002 judges a summary of that detail; the summary is derived here from the detail, by
the function the pytest plugin writes it with, so a summary that says `red_off: true` over tests
that all stayed green is a contradiction the checker names.

A conformance record (`make conformance`) keeps each test-kind gate's falsifier outcomes as its
measured values, which the checker re-judges, and counts of every gate-marked test it ran; the
counts must add up and hold at least the outcomes the gates list.

A benchmark's own details are derived in contracts/derive/benchmarks.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contracts.derive import Derivation, Inputs, derives
from contracts.judges import TEST_FAILED, TEST_PASSED, TEST_SKIPPED

FALSIFY_GATE = "GATE-INTEG-002"
OUTCOMES = (TEST_PASSED, TEST_FAILED, TEST_SKIPPED)


def outcome_counts(outcomes: Iterable[str]) -> dict[str, int]:
    """How many tests ran, and how many of them passed, failed and were skipped: a proof's counts."""
    listed = list(outcomes)
    return {"tests": len(listed), **{name: listed.count(name) for name in OUTCOMES}}


def count_problems(counts: Any, listed: dict[str, str]) -> list[str]:
    """Where a record's counts contradict themselves or the outcomes it lists (test id -> outcome).

    The counts cover every gate-marked test of the session, more than the record lists by name,
    so they must add up and hold at least the listed tests of each outcome.
    """
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in ("tests", *OUTCOMES)):
        return [f"metrics.counts is {counts!r}, not the count of tests and of each outcome"]
    problems = []
    parts = sum(counts[name] for name in OUTCOMES)
    if counts["tests"] != parts:
        problems.append(f"metrics.counts.tests is {counts['tests']}, but its outcomes add up to {parts}")
    for name, shown in outcome_counts(listed.values()).items():
        if counts[name] < shown:
            problems.append(
                f"metrics.counts.{name} is {counts[name]}, but the record lists {shown} such tests"
            )
    return problems


def falsify_summary(detail: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, int | bool]]:
    """GATE-INTEG-002's measured value: per gate, how many falsifiers, green with it on, red with it
    off, and how many passed with it on yet stayed green with it off (each one a test that cannot
    show its gate firing)."""
    summary: dict[str, dict[str, int | bool]] = {}
    for gate_id, gate in detail.items():
        outcomes = list(gate["falsifiers"].values())
        red = gate["red_with_gate_off"]
        summary[gate_id] = {
            "falsifiers": len(outcomes),
            "passed_on": TEST_PASSED in outcomes and TEST_FAILED not in outcomes,
            "red_off": any(red.values()),
            "stayed_green": sum(
                outcome == TEST_PASSED and not red.get(name) for name, outcome in gate["falsifiers"].items()
            ),
        }
    return summary


@derives("falsify")
def falsify_record(inputs: Inputs) -> Derivation:
    """GATE-INTEG-002's summary from the record's per-test detail."""
    derived = Derivation()
    detail = inputs.record.metrics.get("gates")
    if not isinstance(detail, dict):
        derived.problems.append("a falsify record without its per-test detail (metrics.gates)")
        return derived
    try:
        summary = falsify_summary(detail)
    except (KeyError, TypeError, AttributeError) as exc:
        derived.problems.append(f"metrics.gates is not a per-test detail of falsifiers ({exc!r})")
        return derived
    for gate_id, gate in detail.items():
        names = set(gate.get("falsifiers", {}))
        if names != set(gate.get("red_with_gate_off", {})):
            derived.problems.append(f"metrics.gates[{gate_id}] names other tests on than off")
    listed = {name: outcome for gate in detail.values() for name, outcome in gate["falsifiers"].items()}
    derived.problems += count_problems(inputs.record.metrics.get("counts"), listed)
    if FALSIFY_GATE not in inputs.stale:
        derived.gate(FALSIFY_GATE, {"gates": summary})
    return derived


@derives("conformance")
def conformance_record(inputs: Inputs) -> Derivation:
    """The counts of a conformance record against themselves and the falsifiers its gates list."""
    derived = Derivation()
    listed = {}
    for result in inputs.record.gates:
        falsifiers = result.measured.get("falsifiers") if isinstance(result.measured, dict) else None
        listed.update(falsifiers if isinstance(falsifiers, dict) else {})
    counts = inputs.record.metrics.get("counts")
    derived.problems += count_problems(counts, listed)
    if isinstance(counts, dict) and "gates" in counts:
        derived.put(("metrics", "counts", "gates"), len(inputs.record.gates))
    return derived
