"""The spec as typed data: spec/spec.yaml plus every spec/gates/*.yaml, validated on load.

Code never repeats a threshold as a literal; it asks `load_spec().threshold(gate_id, name)`.
Unknown fields, malformed ids and duplicate ids are errors, so a typo in the statute cannot
quietly disable a gate.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.errors import BadInput

GATE_ID_PATTERN = r"^(GATE)-[A-Z]+-\d{3}$"
GATE_ID_RE = re.compile(GATE_ID_PATTERN)
# The same shape, unanchored: finds gate ids cited inside any text.
GATE_ID_IN_TEXT_RE = re.compile(r"\bGATE-[A-Z]+-\d{3}\b")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


class Strict(BaseModel):
    """Base of every spec model: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GateKind(StrEnum):
    RUNTIME = "runtime"
    TEST = "test"
    INTEGRITY = "integrity"


class Severity(StrEnum):
    BLOCKING = "blocking"
    WARNING = "warning"


class GateStatus(StrEnum):
    PROPOSED = "PROPOSED"
    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"


class Threshold(Strict):
    value: float | int
    description: str


class Gate(Strict):
    id: str = Field(pattern=GATE_ID_PATTERN)
    revision: int = Field(ge=1)
    title: str
    statement: str
    origin: str
    kind: GateKind
    severity: Severity
    status: GateStatus
    thresholds: dict[str, Threshold] = Field(default_factory=dict)

    @property
    def area(self) -> str:
        """The middle part of the id: DATA, EVAL, TRAIN, ..."""
        return self.id.split("-")[1]


class ChangelogEntry(Strict):
    version: str = Field(pattern=SEMVER_RE.pattern)
    date: date
    summary: str


class SpecHeader(Strict):
    spec_id: str
    version: str = Field(pattern=SEMVER_RE.pattern)
    changelog: list[ChangelogEntry] = Field(min_length=1)

    @field_validator("changelog")
    @classmethod
    def _versions_unique(cls, entries: list[ChangelogEntry]) -> list[ChangelogEntry]:
        versions = [e.version for e in entries]
        if len(set(versions)) != len(versions):
            raise ValueError(f"changelog repeats a version: {versions}")
        return entries


class GateFile(Strict):
    gates: list[Gate]


class BenchmarkGoal(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    metric: str
    goal: float
    direction: str = Field(pattern=r"^(at_most|at_least)$")

    def met(self, measured: float) -> bool:
        """Whether a measured value meets this goal."""
        return measured <= self.goal if self.direction == "at_most" else measured >= self.goal


class BenchmarkFile(Strict):
    benchmarks: list[BenchmarkGoal]


class Spec(Strict):
    """The whole statute, loaded and cross-checked."""

    header: SpecHeader
    gates: dict[str, Gate]
    gate_files: dict[str, str]  # gate id -> file it is defined in, relative to the spec dir
    benchmarks: dict[str, BenchmarkGoal]
    sha256: str

    @property
    def version(self) -> str:
        return self.header.version

    def gate(self, gate_id: str) -> Gate:
        """The gate with this id; an unknown id is bad input naming the known areas."""
        try:
            return self.gates[gate_id]
        except KeyError:
            areas = sorted({g.area for g in self.gates.values()})
            raise BadInput(
                f"unknown gate id {gate_id!r}: ids look like GATE-<AREA>-NNN with AREA one of "
                f"{', '.join(areas)} (see `stack gates`)"
            ) from None

    def threshold(self, gate_id: str, name: str) -> float | int:
        """The value of one named threshold of one gate."""
        gate = self.gate(gate_id)
        try:
            return gate.thresholds[name].value
        except KeyError:
            raise BadInput(
                f"{gate_id} has no threshold {name!r}; it has: {', '.join(gate.thresholds) or 'none'}"
            ) from None

    def benchmark(self, name: str) -> BenchmarkGoal:
        """The goal of one benchmark in spec/benchmarks.yaml."""
        try:
            return self.benchmarks[name]
        except KeyError:
            raise BadInput(f"no benchmark goal named {name!r} in spec/benchmarks.yaml") from None


def default_spec_dir() -> Path:
    """spec/ beside the contracts package, unless GATESTACK_SPEC points elsewhere."""
    override = os.environ.get("GATESTACK_SPEC")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "spec"


def spec_files(spec_dir: Path) -> list[Path]:
    """The files whose bytes make up the spec, in a fixed order (hashed into evidence)."""
    files = [spec_dir / "spec.yaml", spec_dir / "benchmarks.yaml"]
    files += sorted((spec_dir / "gates").glob("*.yaml"))
    return files


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"spec file missing: {path} (is GATESTACK_SPEC right?)") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"spec file {path} is not valid YAML: {exc}".replace("\n", " ")) from None


def _validated(model: type[BaseModel], data: object, path: Path) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{path}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None


def load_spec_from(spec_dir: Path) -> Spec:
    """Load and cross-check the spec in `spec_dir`; raises BadInput naming the file at fault."""
    spec_dir = Path(spec_dir)
    header = _validated(SpecHeader, _read_yaml(spec_dir / "spec.yaml"), spec_dir / "spec.yaml")
    if header.changelog[0].version != header.version:
        raise BadInput(
            f"{spec_dir / 'spec.yaml'}: version {header.version} has no changelog entry "
            f"(the first entry is {header.changelog[0].version}); add one at the top"
        )
    gates: dict[str, Gate] = {}
    gate_files: dict[str, str] = {}
    for path in sorted((spec_dir / "gates").glob("*.yaml")):
        parsed = _validated(GateFile, _read_yaml(path), path)
        for gate in parsed.gates:
            if gate.id in gates:
                raise BadInput(
                    f"{path}: duplicate gate id {gate.id} (first defined in {gate_files[gate.id]})"
                )
            gates[gate.id] = gate
            gate_files[gate.id] = str(path.relative_to(spec_dir))
    bench_path = spec_dir / "benchmarks.yaml"
    bench = _validated(BenchmarkFile, _read_yaml(bench_path), bench_path)
    digest = hashlib.sha256()
    for path in spec_files(spec_dir):
        digest.update(path.relative_to(spec_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return Spec(
        header=header,
        gates=gates,
        gate_files=gate_files,
        benchmarks={b.name: b for b in bench.benchmarks},
        sha256=digest.hexdigest(),
    )


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """The project's spec, loaded once per process."""
    return load_spec_from(default_spec_dir())
