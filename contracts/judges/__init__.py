"""One judge per gate: the rule itself, as a pure function of measured values and thresholds.

A judge takes what a run measured (a JSON object) and the thresholds of the gate's revision,
and returns the problems it finds; no problem means the gate held. The runtime binding calls
the judge to decide (`contracts.gates.measure`), and `tools/check_integrity.py` calls the same
judge on every recorded result to recompute its verdict. So a record cannot say PASS over
numbers that fail, and the rule lives in exactly one place.

The judges live by area, one module per spec/gates/<area>.yaml (contracts/judges/data.py holds
the judges of spec/gates/data.yaml, and so on), on what they share in contracts/judges/base.py.
This module is the registry: it imports every area and gathers their tables into `JUDGES` and
`CHECKS`. No area imports it, so the imports run one way: registry → areas → base.

Judges never read the stack, the clock or the disk. Measured values that are missing or of the
wrong type are a problem in themselves: a tampered or truncated record must not pass by
omission. So every gate declares, with its judge, the measured keys each of its checks needs:
before the rule runs, `judge` refuses as Malformed values that hold none of the checks, a check
with some of its own keys but not all, and an empty collection where a check needs items (a key
written `name+`). Which checks a completed record of a run kind must hold is policy, in
spec/run_kinds.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from contracts.judges import (
    arch,
    ckpt,
    data,
    dist,
    dpo,
    es,
    eval,
    export,
    ft,
    integ,
    kd,
    kernel,
    lens,
    lora,
    model,
    sft,
    surgery,
    synth,
    trace,
    train,
)
from contracts.judges.base import (
    MAIN_CHECK,
    CheckReader,
    Judge,
    Judges,
    Malformed,
    Measured,
    Thresholds,
    bare,
    check_readers,
)
from contracts.judges.integ import TEST_FAILED, TEST_PASSED, TEST_SKIPPED
from contracts.spec import load_spec

__all__ = [
    "CHECKS",
    "JUDGES",
    "MAIN_CHECK",
    "TEST_FAILED",
    "TEST_PASSED",
    "TEST_SKIPPED",
    "Malformed",
    "Measured",
    "Thresholds",
    "bare",
    "check_readers",
    "forced_off",
    "judge",
    "present_checks",
]

# Area name (the stem of its spec/gates/<area>.yaml) → that area's table of judges.
AREAS: dict[str, Judges] = {
    module.__name__.rpartition(".")[2]: module.judges
    for module in (
        arch,
        ckpt,
        data,
        dist,
        dpo,
        es,
        eval,
        export,
        ft,
        integ,
        kd,
        kernel,
        lens,
        lora,
        model,
        sft,
        surgery,
        synth,
        trace,
        train,
    )
}


def _gathered() -> tuple[dict[str, Judge], dict[str, dict[str, tuple[str, ...]]]]:
    """Every area's judges and declared checks in one table; a gate two areas judge is refused."""
    rules: dict[str, Judge] = {}
    checks: dict[str, dict[str, tuple[str, ...]]] = {}
    for area, table in AREAS.items():
        for gate_id, rule in table.rules.items():
            if gate_id in rules:
                raise ValueError(f"{gate_id} is judged in two areas (the second: {area})")
            rules[gate_id] = rule
            checks[gate_id] = table.checks[gate_id]
    return rules, checks


JUDGES, CHECKS = _gathered()
# gate id → its checks as `present_checks` reads them (worked out once, here).
_READERS: dict[str, list[CheckReader]] = {
    gate_id: check_readers(declared) for gate_id, declared in CHECKS.items()
}

# The gates the pytest plugin has switched off in this process (`forced_off`), nothing else.
_FORCED_OFF: set[str] = set()


@contextmanager
def forced_off(gate_id: str) -> Iterator[None]:
    """Switch `gate_id`'s judge off in this process for the block: the proof by mutation.

    Only the pytest plugin of this repository calls it (tests/gate_plugin.py): no environment
    variable, no command-line flag and no file can switch a gate off, so a `stack` command or the
    integrity check started from a shell always judges. Refused outside a pytest process.
    """
    if "_pytest" not in sys.modules:
        raise RuntimeError("gates are forced off only by the test runner's proof by mutation")
    _FORCED_OFF.add(gate_id)
    try:
        yield
    finally:
        _FORCED_OFF.discard(gate_id)


def present_checks(gate_id: str, measured: Measured) -> list[str]:
    """The checks of `gate_id` whose every key `measured` holds, after refusing what cannot be read.

    Malformed: no check present; a check with some of its own keys but not all; a check present
    whose `key+` is missing items (a check over nothing has shown nothing).
    """
    readers = _READERS.get(gate_id, [])
    present = []
    for check in readers:
        have = [k for k in check.keys if k in measured]
        if len(have) == len(check.keys):
            for key in check.nonempty:
                value = measured[key]
                if not isinstance(value, list | Mapping) or not value:
                    where = "" if check.name == MAIN_CHECK else f" (check {check.name})"
                    raise Malformed(f"{key!r} is {value!r}: no items to judge{where}")
            present.append(check.name)
        elif ran := check.own.intersection(have):
            lacking = [k for k in check.keys if k not in measured]
            raise Malformed(f"check {check.name} has {', '.join(sorted(ran))} but lacks {', '.join(lacking)}")
    if readers and not present:
        names = " or ".join("+".join(c.keys) or "(nothing)" for c in readers)
        raise Malformed(f"none of the checks' values are present (expected {names})")
    return present


def judge(gate_id: str, measured: Any, thresholds: Thresholds | None = None) -> list[str]:
    """The problems `measured` shows under `thresholds` (default: the current spec's); [] = holds."""
    if gate_id in _FORCED_OFF:
        return []
    if thresholds is None:
        thresholds = load_spec().gate(gate_id).threshold_values
    rule = JUDGES.get(gate_id)
    if rule is None:
        return [f"{gate_id} has no judge in contracts.judges"]
    if not isinstance(measured, Mapping):
        return [f"measured values are {type(measured).__name__}, not an object of named values"]
    try:
        present_checks(gate_id, measured)
        return rule(measured, thresholds)
    except Malformed as exc:
        return [f"measured values are malformed: {exc}"]
