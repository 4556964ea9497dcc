"""What every derivation shares: the artifacts a record cites, the derivation they make, and the
comparison of a derivation with the record (`differences`).

A derivation reads the artifacts only through `Artifacts`, which knows just the files the record
cites, and says what the record's fields must be in a `Derivation`; `differences` names each field
the record contradicts. This module imports no derivation and no registry, so every kind's module
may import it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contracts.evidence import EvidenceRecord, Verdict
from contracts.ledger import RANK
from contracts.reading import read_text, safetensors_header
from contracts.spec import Spec

# A field of a record: ("metrics", "step"), ("gates", "GATE-TRAIN-004", "measured", "loss"),
# ("gates", "GATE-TRAIN-006", "verdict"), ("config_sha256",), ...
FieldPath = tuple[str, ...]


ABSENT = object()  # what `recorded` returns for a field the record does not have


# Floats derived again agree with the record to this relative tolerance: an older stack summed a
# window's statistics in another order, and the last bit of a float is not a tampering.
FLOAT_RTOL = 1e-12


class Artifacts:
    """The files a record cites, by their path relative to the record's directory.

    Only cited files that exist are readable (the checker has verified their hashes first); a
    derivation asks for them by name and is told None when the record does not cite one. Each is
    read through contracts.reading: one that is not UTF-8 text, or too large, or a link out of the
    record's directory raises `Unreadable`.
    """

    def __init__(self, directory: Path, cited: list[str]) -> None:
        self.directory = Path(directory)
        self.cited = set(cited)
        self._text: dict[str, str] = {}

    def has(self, name: str) -> bool:
        """Whether the record cites `name` and the file is there."""
        return name in self.cited and (self.directory / name).is_file()

    def text(self, name: str) -> str | None:
        """The file's text, or None when the record does not cite it."""
        if not self.has(name):
            return None
        if name not in self._text:
            self._text[name] = read_text(self.directory / name, self.directory)
        return self._text[name]

    def safetensors_header(self, name: str) -> dict[str, Any]:
        """The header of a safetensors file the record cites (contracts.reading.safetensors_header)."""
        return safetensors_header(self.directory / name, self.directory)

    def json(self, name: str) -> Any:
        """The file parsed as JSON, or None when the record does not cite it (bad JSON raises ValueError)."""
        text = self.text(name)
        return None if text is None else json.loads(text)

    def lines(self, name: str) -> Iterator[tuple[int, str]]:
        """(line number, line) for every non-blank line of the file."""
        for number, line in enumerate((self.text(name) or "").splitlines(), 1):
            if line.strip():
                yield number, line


@dataclass
class Inputs:
    """What one derivation reads: the record (for its config, waivers, stale gates), its artifacts,
    and the spec whose thresholds re-judge the values derived."""

    record: EvidenceRecord
    artifacts: Artifacts
    spec: Spec
    stale: frozenset[str] = frozenset()  # gates judged under an older revision: not re-derived


@dataclass
class Derivation:
    """What the artifacts say the record's fields are.

    `fields` maps a field to its derived value; a field in `optional` may be absent from the
    record (a check that runs only on some paths) but, when present, must agree. `problems` are
    contradictions inside the artifacts themselves (a skipped step, a line that is not JSON).
    `missing` names artifacts the kind must cite, each with the spec version that introduced it.
    `verdicts` are the verdicts the artifacts settle a gate at: exactly, or as a floor when the
    artifacts hold only some of the gate's checks. `primary` names gates whose recorded values
    are themselves the first evidence (a gate that halted the run at a step the log never got to
    write): they are not compared.
    """

    fields: dict[FieldPath, Any] = field(default_factory=dict)
    optional: set[FieldPath] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (artifact, since spec version)
    verdicts: dict[str, tuple[Verdict, bool]] = field(default_factory=dict)
    primary: set[str] = field(default_factory=set)
    since: dict[FieldPath, str] = field(default_factory=dict)  # fields compared from a spec version on

    def put(self, path: FieldPath, value: Any, optional: bool = False, since: str | None = None) -> None:
        self.fields[path] = value
        if optional:
            self.optional.add(path)
        if since is not None:
            self.since[path] = since

    def verdict(self, gate_id: str, verdict: Verdict, exact: bool = True) -> None:
        """The verdict the artifacts settle `gate_id` at (a floor unless `exact`)."""
        self.verdicts[gate_id] = (verdict, exact)

    def gate(self, gate_id: str, measured: dict[str, Any], optional: bool = False) -> None:
        """Derived measured values of one gate, key by key (keys not derived are not compared)."""
        for key, value in measured.items():
            self.put(("gates", gate_id, "measured", key), value, optional)


@dataclass(frozen=True)
class Difference:
    """One field whose recorded value is not what the record's artifacts derive (`since`: the spec
    version from which the field is compared, when not always)."""

    field: str
    recorded: Any
    derived: Any
    since: str | None = None

    def sentence(self) -> str:
        shown = "(absent)" if self.recorded is ABSENT else _short(self.recorded)
        return f"{self.field} is {shown}, but its artifacts derive {_short(self.derived)}"


Registered = TypeVar("Registered", bound=Callable[..., Any])


def registrar(table: dict[str, Any]) -> Callable[..., Callable[[Registered], Registered]]:
    """A decorator factory filing the decorated function in `table` under each name it is given."""

    def under(*names: str) -> Callable[[Registered], Registered]:
        def register(func: Registered) -> Registered:
            for name in names:
                table[name] = func
            return func

        return register

    return under


Deriver = Callable[[Inputs], Derivation]


def field_name(path: FieldPath) -> str:
    """A field path as the report shows it: metrics.step, gates[GATE-TRAIN-004].measured.loss."""
    if path[0] == "gates" and len(path) > 1:
        return ".".join([f"gates[{path[1]}]", *path[2:]])
    return ".".join(path)


def recorded(record: EvidenceRecord, dumped: dict[str, Any], path: FieldPath) -> Any:
    """The record's value at `path`, or ABSENT."""
    if path[0] == "gates":
        result = next((g for g in record.gates if g.id == path[1]), None)
        if result is None:
            return ABSENT
        value: Any = {"verdict": result.verdict.value, "measured": result.measured, "step": result.step}
        rest = path[2:]
    else:
        value, rest = dumped, path
    for part in rest:
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def differences(record: EvidenceRecord, derivation: Derivation) -> list[Difference]:
    """Every derived field the record contradicts (or lacks, unless the field is optional).

    A verdict derived exactly must be the record's; a floor must not be better than the record's,
    and a record worse than the floor (a check the artifacts do not hold fired) keeps its own
    values for that gate.
    """
    if not derivation.fields and not derivation.verdicts:
        return []
    results = {g.id: g for g in record.gates}
    found, skipped = [], set(derivation.primary)
    for gate_id, (verdict, exact) in sorted(derivation.verdicts.items()):
        result = results.get(gate_id)
        if result is None or gate_id in skipped:
            continue
        if exact and result.verdict is not verdict:
            found.append(Difference(f"gates[{gate_id}].verdict", result.verdict.value, verdict.value))
        elif not exact and RANK[result.verdict] < RANK[verdict]:
            found.append(
                Difference(f"gates[{gate_id}].verdict", result.verdict.value, f"{verdict.value} or worse")
            )
        elif not exact and RANK[result.verdict] > RANK[verdict]:
            skipped.add(gate_id)
    dumped = record.model_dump(mode="json")
    for path, value in derivation.fields.items():
        if path[0] == "gates" and path[1] in skipped:
            continue
        have = recorded(record, dumped, path)
        if have is ABSENT and path in derivation.optional:
            continue
        if have is ABSENT or not same(have, value):
            where, have, value = first_difference(field_name(path), have, value)
            found.append(Difference(where, have, value, derivation.since.get(path)))
    return found


def first_difference(where: str, recorded: Any, derived: Any) -> tuple[str, Any, Any]:
    """The innermost place two JSON values part: metrics.rows[2].bits_per_byte rather than all rows."""
    if isinstance(recorded, dict) and isinstance(derived, dict) and recorded.keys() == derived.keys():
        key = next((k for k in derived if not same(recorded[k], derived[k])), None)
        if key is not None:
            return first_difference(f"{where}.{key}", recorded[key], derived[key])
    if isinstance(recorded, list) and isinstance(derived, list) and len(recorded) == len(derived):
        index = next(
            (i for i, (a, b) in enumerate(zip(recorded, derived, strict=True)) if not same(a, b)), None
        )
        if index is not None:
            return first_difference(f"{where}[{index}]", recorded[index], derived[index])
    return where, recorded, derived


def same(a: Any, b: Any) -> bool:
    """JSON equality, with numbers compared by value (1 == 1.0) but booleans kept apart from them."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
