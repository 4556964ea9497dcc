"""What every area's judges share: the declaration of a judge and the readers of measured values.

A judge takes what a run measured (a JSON object) and the thresholds of the gate's revision, and
returns the problems it finds; no problem means the gate held. Measured values that are missing or
of the wrong type are a problem in themselves (`Malformed`): a tampered or truncated record must
not pass by omission. So every gate declares, with its judge, the measured keys each of its checks
needs (`needs=...` for one check, `checks={name: keys}` for several), and the readers below refuse
what they cannot read instead of guessing.

Each area module (contracts/judges/<area>.py, one per spec/gates/<area>.yaml) holds its own table,
`judges = Judges()`, and declares its judges with it as a decorator; contracts.judges gathers the
tables. This module imports no area and no registry, so any area may import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Measured = Mapping[str, Any]
Thresholds = Mapping[str, float | int]
Judge = Callable[[Measured, Thresholds], list[str]]
MAIN_CHECK = "main"  # the name of a gate's only check


class Malformed(ValueError):
    """Measured values a judge cannot read: missing keys or wrong types."""


class Judges:
    """The judges of one area's gates: gate id → judge, and gate id → check name → measured keys.

    An area module makes one table and declares each judge with it:
    `@judges("GATE-DATA-003", needs=(...))` for a gate with one check, `checks={name: keys}` for a
    gate several checks feed. A judge that declares neither reads no key before its rule runs;
    tests/contracts/test_judges_evidence.py refuses it."""

    def __init__(self) -> None:
        self.rules: dict[str, Judge] = {}
        self.checks: dict[str, dict[str, tuple[str, ...]]] = {}

    def __call__(
        self,
        *gate_ids: str,
        needs: tuple[str, ...] | None = None,
        checks: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Callable[[Judge], Judge]:
        if needs is not None and checks is not None:
            raise TypeError(
                "a judge declares needs=(...) for one check or checks={...} for several, not both"
            )
        declared = (
            dict(checks) if checks is not None else ({MAIN_CHECK: tuple(needs)} if needs is not None else {})
        )

        def register(func: Judge) -> Judge:
            for gate_id in gate_ids:
                if gate_id in self.rules:
                    raise ValueError(f"{gate_id} is given two judges")
                self.rules[gate_id] = func
                self.checks[gate_id] = declared
            return func

        return register


def bare(key: str) -> str:
    """A declared key without its non-empty mark."""
    return key.removesuffix("+")


@dataclass(frozen=True)
class CheckReader:
    """One declared check as read: its keys, those that need items, and those no other check has
    (their presence says the check ran)."""

    name: str
    keys: tuple[str, ...]
    nonempty: tuple[str, ...]
    own: frozenset[str]


def check_readers(checks: Mapping[str, tuple[str, ...]]) -> list[CheckReader]:
    """The declared checks of one gate, worked out for `present_checks`."""
    readers = []
    for name, keys in checks.items():
        others = {bare(k) for other, ks in checks.items() if other != name for k in ks}
        plain = tuple(bare(k) for k in keys)
        nonempty = tuple(bare(k) for k in keys if k.endswith("+"))
        readers.append(CheckReader(name, plain, nonempty, frozenset(plain) - others))
    return readers


def number(measured: Measured, key: str) -> float:
    """A real number (bools refused, non-finite strings such as 'nan' read as floats)."""
    if key not in measured:
        raise Malformed(f"{key!r} is missing")
    value = measured[key]
    if type(value) is float:  # nearly every value a judge reads
        return value
    if isinstance(value, str) and value.strip().lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{key!r} is {value!r}, not a number")
    return float(value)


def count(measured: Measured, key: str) -> int:
    """A non-negative integer."""
    value = measured.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{key!r} is {value!r}, not a count")
    return value


def flag(measured: Measured, key: str) -> bool:
    """A boolean."""
    value = measured.get(key)
    if not isinstance(value, bool):
        raise Malformed(f"{key!r} is {value!r}, not true/false")
    return value


def items(measured: Measured, key: str) -> list[Any]:
    """A list."""
    value = measured.get(key)
    if not isinstance(value, list):
        raise Malformed(f"{key!r} is {value!r}, not a list")
    return value


def has(measured: Measured, *keys: str) -> bool:
    """Whether a multi-check gate's record holds the values of one of its checks."""
    return all(key in measured for key in keys)


def same_number(a: float, b: float) -> bool:
    """Equal, NaN included: a value derived from the same losses by the same function is the same
    float, and a NaN loss (which other gates judge) must not read as a second disagreement."""
    return a == b or (math.isnan(a) and math.isnan(b))


def deviations(compared: Any, kind: str, atol: float, rtol: float) -> list[str]:
    """'<name> differs by …' for each entry of `compared` (name → {"max_abs_diff", "ref_absmax"})
    whose difference exceeds atol + rtol × its reference's largest magnitude."""
    if not isinstance(compared, Mapping) or not compared:
        raise Malformed(f"the {kind}s must name at least one compared {kind}")
    problems = []
    for name, values in sorted(compared.items()):
        if not isinstance(values, Mapping):
            raise Malformed(f"{kind} {name!r} has no values")
        diff, scale = number(values, "max_abs_diff"), number(values, "ref_absmax")
        allowed = atol + rtol * scale
        if not diff <= allowed:
            problems.append(f"{name} differs by {diff:.3g} (allowed {allowed:.3g})")
    return problems


def reals(m: Measured, key: str) -> list[float]:
    """A list of real numbers, each read as `number` reads one."""
    return [number({key: value}, key) for value in items(m, key)]
