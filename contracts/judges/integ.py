"""The judges of the integrity gates (spec/gates/integ.yaml), judged by the conformance and
falsify records: the evidence resolves, and every active gate turns red with its judge off.

`falsifiers_pass` is how every gate that a conformance record judges by its falsifier tests
(kernel, model, trace, checkpoint, distributed) reads the outcomes of those tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has

judges = Judges()


# Outcomes of a falsifier test as the conformance record writes them.
TEST_PASSED, TEST_FAILED, TEST_SKIPPED = "passed", "failed", "skipped"


@judges("GATE-INTEG-001", checks={"check": ("violations",), "falsifiers": ("falsifiers+",)})
def _evidence_resolves(m: Measured, t: Thresholds) -> list[str]:
    """The integrity check's own verdict: no finding of this gate remains (or, in conformance, its tests)."""
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "violations") and (n := count(m, "violations")):
        problems.append(f"{n} integrity violation(s): the evidence does not resolve or is not true")
    return problems


def falsifiers_pass(m: Measured, t: Thresholds) -> list[str]:
    tests = m.get("falsifiers")
    if not isinstance(tests, Mapping) or not tests:
        raise Malformed("'falsifiers' must map at least one test to its outcome")
    failed = sorted(name for name, outcome in tests.items() if outcome == TEST_FAILED)
    unknown = sorted(
        name for name, outcome in tests.items() if outcome not in {TEST_PASSED, TEST_FAILED, TEST_SKIPPED}
    )
    problems = [f"falsifier(s) failed: {', '.join(failed)}"] if failed else []
    if unknown:
        problems.append(f"falsifier outcome(s) not understood: {', '.join(unknown)}")
    if not any(outcome == TEST_PASSED for outcome in tests.values()):
        problems.append("no falsifier ran to a pass (all skipped?)")
    return problems


@judges("GATE-INTEG-002", checks={"check": ("violations",), "proof": ("gates+",)})
def _every_gate_turns_red(m: Measured, t: Thresholds) -> list[str]:
    """A gate is proven only when its falsifiers pass with it on and every one fails with it forced off.

    Having a falsifier is not enough: a test that stays green with its gate switched off does
    not depend on the gate, so it cannot show the gate firing, and a gate marker on it claims
    a proof it does not give (a test that plants nothing is marked `holds` instead). `make
    falsify` measures this (the "proof"); the integrity check's own verdict over its coverage
    findings is the "check".
    """
    problems = _gates_turn_red(m) if has(m, "gates") else []
    if has(m, "violations") and (n := count(m, "violations")):
        problems.append(f"{n} coverage violation(s): a gate lacks a falsifier or a binding, or is unproven")
    return problems


def _gates_turn_red(m: Measured) -> list[str]:
    """The proof by mutation of a falsify record's summary: every gate green on and red off."""
    gates = m.get("gates")
    if not isinstance(gates, Mapping) or not gates:
        raise Malformed("'gates' must map at least one gate to its falsifiers' summary")
    untested, not_green, not_red = [], [], []
    for gate_id, summary in sorted(gates.items()):
        if not isinstance(summary, Mapping):
            raise Malformed(f"gate {gate_id!r} has no summary")
        if count(summary, "falsifiers") == 0:
            untested.append(gate_id)
            continue
        if not flag(summary, "passed_on"):
            not_green.append(gate_id)  # red with the gate off then proves nothing
        elif not flag(summary, "red_off") or count(summary, "stayed_green"):
            not_red.append(f"{gate_id} ({count(summary, 'stayed_green')} of {count(summary, 'falsifiers')})")
    problems = [f"no falsifier test: {', '.join(untested)}"] if untested else []
    if not_green:
        problems.append(f"falsifiers do not pass with the gate on: {', '.join(not_green)}")
    if not_red:
        problems.append(f"falsifiers stay green with the gate forced off: {', '.join(not_red)}")
    return problems
