"""A gpu-check record from its own steps: the cases, runs and timings each step keeps.

`make gpu-check` (tools/gpu_check.py) runs its steps on a CUDA GPU and files one record whose
`metrics.steps` holds every step's status and measurements. What the record says on top of
them is derived from them here: each kernel parity case's verdict, judged again by
GATE-KERNEL-001's judge from the case's own deviations; a step that passed over a failing case,
a resume that differed or a training run that exited badly; the record's status from its steps
(the check's own rule, `check_status`); and its benchmark numbers (the attention ratio, the
compile step's overhead) by the formulas of contracts/derive/benchmarks.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.benchmarks import (
    Identity,
    Metrics,
    attention_identities,
    goals_met,
    overhead,
    problems_of,
    quotient,
)
from contracts.evidence import RunStatus
from contracts.judges import judge

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
KERNEL_GATE = "GATE-KERNEL-001"
PARITY_STEP = "kernel parity"  # the step that runs GATE-KERNEL-001's cases
# The one input precision GATE-KERNEL-001 holds to its fp32 tolerances; inputs rounded to bf16 or
# fp16 are held to its looser low-precision ones.
FULL_PRECISION = "fp32"


def low_precision(dtype: str) -> bool:
    """Whether a parity case whose inputs are `dtype` is judged by the low-precision tolerances."""
    return dtype != FULL_PRECISION


def largest_diff(measured: dict[str, Any]) -> float:
    """The largest |kernel - reference| over the outputs of one parity measurement ("inf" counts as inf)."""
    return max(float(values["max_abs_diff"]) for values in measured["outputs"].values())


def check_status(steps: Iterable[tuple[str, list[str]]]) -> RunStatus:
    """A gpu-check's status from its steps' (status, gates fired): halted when a gate fired, failed
    when a step failed otherwise, completed when every step that ran passed."""
    listed = list(steps)
    if any(fired for _status, fired in listed):
        return RunStatus.HALTED
    if any(status == FAIL for status, _fired in listed):
        return RunStatus.FAILED
    return RunStatus.COMPLETED


def _steps(metrics: Metrics) -> dict[str, dict[str, Any]]:
    return {str(s.get("name")): s for s in metrics.get("steps") or [] if isinstance(s, dict)}


def parity_cases(metrics: Metrics) -> list[dict[str, Any]]:
    """The cases a gpu-check's kernel parity step states ([] where it has none)."""
    measured = _steps(metrics).get(PARITY_STEP, {}).get("measured")
    cases = measured.get("cases") if isinstance(measured, dict) else None
    return [c for c in cases if isinstance(c, dict)] if isinstance(cases, list) else []


def gpu_check_identities(m: Metrics) -> Iterator[Identity]:
    """A gpu-check's headline numbers from its steps (the attention shapes, the compile runs), and
    each goal's measured value as the headline states it."""
    steps = {name: step.get("measured") or {} for name, step in _steps(m).items()}
    speed = steps.get("attention speed", {})
    if "shapes" in speed:
        where = "metrics.steps[attention speed].measured.shapes"
        yield from attention_identities(where, speed["shapes"], m.get("ratio"))
        if "ratio" in speed:  # the step's own statement of the ratio the record's headline states
            yield Identity(
                "metrics.steps[attention speed].measured.ratio", speed["ratio"], _same, (m.get("ratio"),)
            )
    compiled = steps.get("compile", {})
    if "plain_tokens_per_s" in compiled:
        args = (compiled.get("plain_tokens_per_s"), compiled.get("stack_tokens_per_s"))
        yield Identity("metrics.overhead", m.get("overhead"), overhead, args)
        if compiled.get("compiled_tokens_per_s") is not None:
            args = (compiled.get("compiled_tokens_per_s"), compiled.get("plain_tokens_per_s"))
            yield Identity("metrics.compiled_speedup", m.get("compiled_speedup"), quotient, args)
    for name, row in (m.get("goals") or {}).items():
        if isinstance(row, dict) and row.get("metric") in m:
            yield Identity(f"metrics.goals.{name}.measured", row.get("measured"), _same, (m[row["metric"]],))


def _same(value: float) -> float:
    """A value stated twice in one record."""
    return value


def _parity(inputs: Inputs, step: dict[str, Any], derived: Derivation) -> None:
    """Each case judged by the tolerances of its inputs' precision, its `ok` judged again from its
    deviations, and each precision's largest difference over its cases; a passing step over a
    failing case."""
    where = f"metrics.steps[{PARITY_STEP}]"
    cases = parity_cases(inputs.record.metrics)
    derived.problems += _precision_problems(where, cases)
    derived.problems += _largest_diff_problems(where, step.get("measured") or {}, cases)
    if KERNEL_GATE in inputs.stale or KERNEL_GATE not in inputs.spec.gates:
        return
    thresholds = inputs.spec.gates[KERNEL_GATE].threshold_values
    for index, case in enumerate(cases):
        holds = not judge(KERNEL_GATE, case.get("measured"), thresholds)
        if case.get("ok") is not holds:
            derived.problems.append(
                f"{where}.measured.cases[{index}] ({case.get('dtype')} {case.get('case')}) says ok is "
                f"{str(case.get('ok')).lower()}, but {KERNEL_GATE}'s judge finds its deviations "
                f"{'within' if holds else 'beyond'} tolerance"
            )
    if step.get("status") == PASS and not all(case.get("ok") is True for case in cases):
        derived.problems.append(f"{where} is PASS over a case out of tolerance")


def _precision_problems(where: str, cases: list[dict[str, Any]]) -> list[str]:
    """Cases said to be judged at another precision than their inputs': an fp32 case held to the
    low-precision tolerances passes deviations its own would fail."""
    problems = []
    for index, case in enumerate(cases):
        measured, dtype = case.get("measured"), case.get("dtype")
        if not isinstance(measured, dict) or not isinstance(dtype, str) or "low_precision" not in measured:
            continue
        if measured["low_precision"] is not low_precision(dtype):
            problems.append(
                f"{where}.measured.cases[{index}] ({dtype} {case.get('case')}) says low_precision is "
                f"{str(measured['low_precision']).lower()}, but its inputs are {dtype}"
            )
    return problems


def _largest_diff_problems(where: str, measured: dict[str, Any], cases: list[dict[str, Any]]) -> list[str]:
    """The step's `largest_diff` of each precision is the largest difference of its cases."""
    stated = measured.get("largest_diff")
    if not isinstance(stated, dict):
        return []
    problems = []
    for dtype, value in stated.items():
        try:
            found = max(largest_diff(c["measured"]) for c in cases if c.get("dtype") == dtype)
        except (KeyError, TypeError, ValueError, AttributeError):
            problems.append(f"{where}.measured.largest_diff.{dtype}: no case of {dtype} states its outputs")
            continue
        if value != found:
            problems.append(
                f"{where}.measured.largest_diff.{dtype} is {value}, but its cases' largest difference is "
                f"{found}"
            )
    return problems


# The speeds the compile step's summary line restates, by the label it gives each (tools/gpu_check.py
# writes each rounded to whole tokens/s, with thousands separators, as the measured value is kept).
SUMMARY_SPEEDS = {
    "plain_tokens_per_s": "plain loop",
    "stack_tokens_per_s": "stack eager",
    "compiled_tokens_per_s": "stack compiled",
}


def _summary_problems(steps: dict[str, dict[str, Any]]) -> list[str]:
    """The compile step's summary says the speeds its measured values keep."""
    step = steps.get("compile", {})
    summary, measured = step.get("summary"), step.get("measured") or {}
    problems = []
    for key, label in SUMMARY_SPEEDS.items():
        value = measured.get(key)
        if not isinstance(summary, str) or label not in summary or not isinstance(value, int):
            continue
        if f"{label} {value:,}" not in summary:
            problems.append(
                f"metrics.steps[compile].measured.{key} is {value}, but the step's summary says "
                f"{summary[summary.index(label) :][:40]!r}"
            )
    return problems


def _step_problems(steps: dict[str, dict[str, Any]]) -> list[str]:
    """Steps whose status is none the check gives, and steps that say PASS over measurements that
    show them failing."""
    problems = [
        f"metrics.steps[{name}] has the status {step.get('status')!r}, not one of {PASS}, {FAIL}, {SKIPPED}"
        for name, step in steps.items()
        if step.get("status") not in (PASS, FAIL, SKIPPED)
    ]
    resume = steps.get("fp16 resume", {})
    if resume.get("status") == PASS and (resume.get("measured") or {}).get("mismatched"):
        problems.append("metrics.steps[fp16 resume] is PASS, but its straight and resumed runs differ")
    for name, step in steps.items():
        measured = step.get("measured") or {}
        if step.get("status") == PASS and (measured.get("exit", 0) != 0 or measured.get("violations")):
            problems.append(
                f"metrics.steps[{name}] is PASS, but its run exited {measured.get('exit')} "
                f"with violations {measured.get('violations')}"
            )
        if step.get("status") == PASS and step.get("fired"):
            problems.append(f"metrics.steps[{name}] is PASS, but it fired {', '.join(step['fired'])}")
    return problems


def _goal_metrics(inputs: Inputs, goals: Any) -> list[str]:
    """Each goal's `metric` is the one spec/benchmarks.yaml measures it by: the key its measured
    value is read from beside it, so a renamed one would leave that value underived."""
    benchmarks = inputs.spec.benchmarks
    return [
        f"metrics.goals.{name}.metric is {row.get('metric')!r}, but spec/benchmarks.yaml measures "
        f"{name} by {benchmarks[name].metric!r}"
        for name, row in (goals.items() if isinstance(goals, dict) else [])
        if isinstance(row, dict) and name in benchmarks and row.get("metric") != benchmarks[name].metric
    ]


@derives("gpu-check")
def gpu_check_record(inputs: Inputs) -> Derivation:
    """Everything a gpu-check's steps decide about the rest of its record."""
    derived = Derivation()
    metrics = inputs.record.metrics
    steps = _steps(metrics)
    if PARITY_STEP in steps:
        _parity(inputs, steps[PARITY_STEP], derived)
    derived.problems += _step_problems(steps)
    derived.problems += _summary_problems(steps)
    if steps:
        status = check_status((str(s.get("status")), list(s.get("fired") or [])) for s in steps.values())
        derived.put(("run", "status"), status.value)
    derived.problems += problems_of(gpu_check_identities(metrics))
    derived.problems += _goal_metrics(inputs, metrics.get("goals"))
    goals_met(inputs, derived)
    return derived
