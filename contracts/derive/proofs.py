"""Records whose claims are verdicts over their own details: the proof by mutation and the benchmarks.

A falsify record (`make falsify`) keeps, per ACTIVE gate, each falsifier test's outcome with the
gate on and whether it went red with the gate forced off (`metrics.gates`, the per-test detail).
GATE-INTEG-002 judges a summary of that detail; the summary is derived here from the detail, by
the function the pytest plugin writes it with, so a summary that says `red_off: true` over tests
that all stayed green is a contradiction the checker names.

A benchmark record says whether its measurement met its goal (`met`); that is re-judged here from
the value measured, the goal the record states and the direction of spec/benchmarks.yaml, and the
goal itself must be the spec's when the record cites the benchmarks policy the spec is at.
"""

from __future__ import annotations

from typing import Any

from contracts.derive import Derivation, Inputs, derives
from contracts.judges import TEST_FAILED, TEST_PASSED

FALSIFY_GATE = "GATE-INTEG-002"


def falsify_summary(detail: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, int | bool]]:
    """GATE-INTEG-002's measured value: per gate, how many falsifiers, green with it on, red with it off."""
    summary: dict[str, dict[str, int | bool]] = {}
    for gate_id, gate in detail.items():
        outcomes = list(gate["falsifiers"].values())
        summary[gate_id] = {
            "falsifiers": len(outcomes),
            "passed_on": TEST_PASSED in outcomes and TEST_FAILED not in outcomes,
            "red_off": any(gate["red_with_gate_off"].values()),
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
    if FALSIFY_GATE not in inputs.stale:
        derived.gate(FALSIFY_GATE, {"gates": summary})
    return derived


def _met(inputs: Inputs, name: str, measured: Any, goal: Any) -> bool | None:
    """Whether `measured` meets `goal` in the direction the spec gives benchmark `name`."""
    spec_goal = inputs.spec.benchmarks.get(name)
    if spec_goal is None or not isinstance(measured, int | float) or not isinstance(goal, int | float):
        return None
    return spec_goal.model_copy(update={"goal": float(goal)}).met(float(measured))


@derives("benchmark", "gpu-check")
def benchmark_record(inputs: Inputs) -> Derivation:
    """`met` from the value and the goal, for the main benchmark and every goal the record states."""
    derived = Derivation()
    metrics, spec = inputs.record.metrics, inputs.spec
    goals = metrics.get("goals")
    if isinstance(goals, dict):  # several goals, each with its own measurement
        for name, row in goals.items():
            if isinstance(row, dict) and name in spec.benchmarks:
                derived.put(
                    ("metrics", "goals", name, "met"),
                    _met(inputs, name, row.get("measured"), row.get("goal")),
                )
        return derived
    name = metrics.get("benchmark")
    if not isinstance(name, str) or name not in spec.benchmarks:
        return derived
    # Where the record states each goal it was measured against: `goal` for the main benchmark,
    # `goal_<metric>` for each benchmark of several.
    stated = [(name, "goal")] if "goal" in metrics else []
    for other in [name, *(metrics.get("also") or [])]:
        if other in spec.benchmarks and f"goal_{spec.benchmarks[other].metric}" in metrics:
            stated.append((other, f"goal_{spec.benchmarks[other].metric}"))
    verdicts = [
        _met(inputs, bench, metrics.get(spec.benchmarks[bench].metric), metrics[key]) for bench, key in stated
    ]
    if verdicts:
        derived.put(("metrics", "met"), None if None in verdicts else all(verdicts))
    cited = inputs.record.spec.policies.get("benchmarks")
    current = spec.policies.get("benchmarks")
    if cited is not None and current is not None and cited.revision == current.revision:
        for bench, key in stated:  # judged under the spec's own goals: the record states them
            derived.put(("metrics", key), spec.benchmarks[bench].goal)
    return derived
