"""The spec as typed data: spec/spec.yaml plus every spec/gates/*.yaml, validated on load.

Code never repeats a threshold as a literal; it asks `load_spec().threshold(gate_id, name)`.
Unknown fields, malformed ids and duplicate ids are errors, so a typo in the statute cannot
quietly disable a gate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from contracts.errors import BadInput
from contracts.reading import load_yaml

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
    # Strict: a YAML `true` or `"5"` is refused rather than read as 1 or 5.
    value: StrictFloat | StrictInt
    description: str

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | int) -> float | int:
        # NaN compares false with everything, so a NaN threshold would pass every measurement.
        if not math.isfinite(value):
            raise ValueError(f"a threshold must be a finite number, not {value}")
        return value


def thresholds_digest(thresholds: dict[str, float | int]) -> str:
    """sha256 of a gate's thresholds in canonical form (sorted names, values as floats).

    Stored in every gate result, so a record says exactly which numbers judged it, and a
    threshold edited without a revision bump cannot hide.
    """
    canonical = {name: float(value) for name, value in sorted(thresholds.items())}
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


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

    @property
    def threshold_values(self) -> dict[str, float | int]:
        """name → value of every threshold, as judges and gate results see them."""
        return {name: t.value for name, t in self.thresholds.items()}

    @cached_property
    def thresholds_sha256(self) -> str:
        """The digest of this revision's thresholds (see `thresholds_digest`); computed once, since
        every gate result of every step carries it."""
        return thresholds_digest(self.threshold_values)


class RevisionEntry(Strict):
    """One revision of one gate in spec/revisions.yaml: when it came, and its thresholds' digest."""

    revision: int = Field(ge=1)
    spec_version: str = Field(pattern=SEMVER_RE.pattern)
    thresholds_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class PolicyEntry(Strict):
    """One revision of one policy file (spec/run_kinds.yaml, ...): when it came, and its content digest."""

    revision: int = Field(ge=1)
    spec_version: str = Field(pattern=SEMVER_RE.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class PolicyRef(Strict):
    """The revision of a policy file in force, and its content digest (records carry one per policy)."""

    revision: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RevisionsFile(Strict):
    revisions: dict[str, list[RevisionEntry]]
    policies: dict[str, list[PolicyEntry]]


class OptionGates(Strict):
    """Gates a record must also judge, and checks it must also show, when its config turns an
    option on.

    A gate that only applies to an option (the MoE gates to a model with experts), or a check
    made only under a setting (warmup's rising rate when there is a warmup), cannot be required of
    every record of the kind, yet must not be skippable where the option is on: the option is a
    key of the record's config (dotted, or a top-level one: an eval record's split), on when its
    value is truthy (a non-zero count, true, a non-empty list).
    """

    option: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)*$")
    gates: list[str] = Field(default_factory=list)
    checks: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _asks_something(self) -> OptionGates:
        if not self.gates and not self.checks:
            raise ValueError(f"option {self.option} names no gate and no check")
        return self


class RunKind(Strict):
    """A kind of evidence record and the gates every completed record of that kind must judge.

    `checks` names, for a gate several checks feed (contracts.judges declares them), the checks a
    completed record of the kind must hold values of: each one runs on every path of the kind, so
    a record without its values did not show it. `since` names, for a gate the kind came to
    require after the gate itself existed, the spec version from which it does: a record made,
    or a model released, under an older version is not held to it.
    """

    description: str
    gates: list[str] = Field(default_factory=list)
    options: list[OptionGates] = Field(default_factory=list)
    checks: dict[str, list[str]] = Field(default_factory=dict)
    since: dict[str, str] = Field(default_factory=dict)


class RunKindsFile(Strict):
    run_kinds: dict[str, RunKind]


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


# spec/signing.yaml's names, beside run kinds: released models (stack release), and every kind.
RELEASE_KIND = "release"
ANY_KIND = "*"


class TrustedKey(Strict):
    """A public key (PEM) the ledger trusts to sign what is of `kinds`: run kinds, "release" for
    released models, or "*" for everything (contracts.signing)."""

    name: str = Field(min_length=1)
    public_key: str = Field(pattern=r"^-----BEGIN PUBLIC KEY-----")
    kinds: list[str] = Field(min_length=1)


class SigningPolicy(Strict):
    """spec/signing.yaml: the keys trusted to sign, and the kinds whose records must be signed."""

    trusted_keys: list[TrustedKey] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)


class Spec(Strict):
    """The whole statute, loaded and cross-checked."""

    header: SpecHeader
    gates: dict[str, Gate]
    gate_files: dict[str, str]  # gate id -> file it is defined in, relative to the spec dir
    benchmarks: dict[str, BenchmarkGoal]
    revisions: dict[str, list[RevisionEntry]]
    policy_revisions: dict[str, list[PolicyEntry]]
    run_kinds: dict[str, RunKind]
    signing: SigningPolicy = Field(default_factory=SigningPolicy)
    sha256: str

    @cached_property
    def policies(self) -> dict[str, PolicyRef]:
        """Each policy file's revision in force and its digest: what a record made now carries."""
        return {
            name: PolicyRef(revision=history[-1].revision, sha256=history[-1].sha256)
            for name, history in self.policy_revisions.items()
        }

    @cached_property
    def versions(self) -> frozenset[str]:
        """The spec versions the changelog has."""
        return frozenset(entry.version for entry in self.header.changelog)

    def introduced(self, gate_or_policy: str, revision: int) -> str | None:
        """The spec version that brought `revision` of a gate or policy (None when there is none)."""
        history = self.revisions.get(gate_or_policy) or self.policy_revisions.get(gate_or_policy) or []
        return next((entry.spec_version for entry in history if entry.revision == revision), None)

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

    def required_gates(self, kind: str, config: dict[str, Any] | None = None) -> list[str]:
        """The gates a completed record of run kind `kind` must judge (none for an undeclared kind):
        the kind's own, and those of every option its `config` turns on."""
        entry = self.run_kinds.get(kind)
        return [] if entry is None else gates_required(entry, config)

    def revision_at(self, gate_or_policy: str, version: str) -> int | None:
        """The revision of a gate or policy file in force under spec `version` (None: it came
        later); kept per spec digest, since the checker asks it of every gate result of every
        record."""
        key = (self.sha256, gate_or_policy, version)
        if key not in _REVISION_AT:
            history = self.revisions.get(gate_or_policy) or self.policy_revisions.get(gate_or_policy) or []
            entries = [
                e.revision for e in history if _release_numbers(e.spec_version) <= _release_numbers(version)
            ]
            _REVISION_AT[key] = max(entries, default=None)
        return _REVISION_AT[key]

    def introduced_after(self, gate_id: str, version: str) -> str | None:
        """The spec version that brought `gate_id` in, when it is later than `version`; else None.

        A record made (or a model released) under `version` cannot have judged a gate that came
        later: the checkers call it stale for that gate, never a record that hid a verdict.
        """
        history = self.revisions.get(gate_id)
        if not history or _release_numbers(history[0].spec_version) <= _release_numbers(version):
            return None
        return history[0].spec_version

    def required_after(self, kind: str, gate_id: str, version: str) -> str | None:
        """The spec version from which a record of run kind `kind` must judge `gate_id`, when it is
        later than `version` (the gate came in later, or the kind came to require it later);
        else None."""
        since = [self.introduced_after(gate_id, version)]
        entry = self.run_kinds.get(kind)
        if entry is not None and gate_id in entry.since:
            since.append(entry.since[gate_id])
        later = [v for v in since if v is not None and _release_numbers(v) > _release_numbers(version)]
        return max(later, key=_release_numbers) if later else None

    def benchmark(self, name: str) -> BenchmarkGoal:
        """The goal of one benchmark in spec/benchmarks.yaml."""
        try:
            return self.benchmarks[name]
        except KeyError:
            raise BadInput(f"no benchmark goal named {name!r} in spec/benchmarks.yaml") from None


# Spec.revision_at's answers, by (spec sha256, gate or policy name, spec version).
_REVISION_AT: dict[tuple[str, str, str], int | None] = {}


@lru_cache(maxsize=1024)
def _release_numbers(version: str) -> tuple[int, ...]:
    """The numbers of a spec version (`1.7.0` → (1, 7, 0)); a pre-release suffix is left out."""
    return tuple(int(part) for part in version.split("-", 1)[0].split("."))


def default_spec_dir() -> Path:
    """spec/ beside the contracts package, unless GATESTACK_SPEC points elsewhere."""
    override = os.environ.get("GATESTACK_SPEC")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "spec"


# The policy files: spec data that decides what a record must judge, under the same revision,
# content-digest and changelog rules as gate thresholds (name → file in the spec directory).
POLICY_FILES = {
    "run_kinds": "run_kinds.yaml",
    "options_matrix": "options_matrix.yaml",
    "benchmarks": "benchmarks.yaml",
    "signing": "signing.yaml",
}


def policy_digest(data: object) -> str:
    """sha256 of a policy file's content in canonical form (sorted keys; comments and layout are not
    policy, so they can change without a revision)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# The files of the spec directory, besides gates/*.yaml, whose bytes make up the spec's sha256, in
# the order they are hashed (tools/check_integrity.py digests spec/ at a record's commit the same way).
SPEC_TOP_FILES = (
    "spec.yaml",
    "benchmarks.yaml",
    "revisions.yaml",
    "run_kinds.yaml",
    "options_matrix.yaml",
    "signing.yaml",
)


def spec_files(spec_dir: Path) -> list[Path]:
    """The files whose bytes make up the spec, in a fixed order (hashed into evidence)."""
    files = [spec_dir / name for name in SPEC_TOP_FILES]
    files += sorted((spec_dir / "gates").glob("*.yaml"))
    return files


def _read_yaml(path: Path, files: Mapping[Path, bytes | None]) -> object:
    """The YAML of spec file `path`, from `files` (its bytes as `load_spec_from` read them)."""
    data = files[path]
    if data is None:
        raise BadInput(f"spec file missing: {path} (is GATESTACK_SPEC right?)")
    try:
        return load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"spec file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise BadInput(f"spec file {path} is not valid YAML: {exc}".replace("\n", " ")) from None


def _validated(model: type[BaseModel], data: object, path: Path) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        # gates.3.thresholds.x → GATE-…-NNN.thresholds.x: name the gate, not its position in the list.
        if len(loc) > 1 and loc[0] == "gates" and isinstance(loc[1], int) and isinstance(data, dict):
            with contextlib.suppress(KeyError, IndexError, TypeError):
                loc[:2] = [str(data["gates"][loc[1]]["id"])]
        where = ".".join(str(p) for p in loc)
        raise BadInput(f"{path}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None


def _bytes(path: Path) -> bytes | None:
    """A spec file's bytes, or None when it is missing (`_read_yaml` names it); one that is there
    but cannot be read (a directory, no permission) is refused here, naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(
            f"spec file {path} cannot be read ({exc.strerror}); make it a readable YAML file"
        ) from None


def load_spec_from(spec_dir: Path) -> Spec:
    """Load and cross-check the spec in `spec_dir`; raises BadInput naming the file at fault.

    The files are read on every call, and parsed once for each content they have, wherever the
    directory is: an integrity check loads the spec of its repository for every run it is asked
    about (and its tests check hundreds of copies of one repository), and parsing and validating
    the YAML was most of a one-run check. A Spec holds no path, only names inside spec/, so one
    parsed elsewhere is the same; it is frozen, so sharing it is safe. A refusal is never kept:
    it names the files of the directory it was read from.
    """
    spec_dir = Path(spec_dir)
    contents = tuple((path, _bytes(path)) for path in spec_files(spec_dir))
    key = tuple((path.relative_to(spec_dir).as_posix(), data) for path, data in contents)
    if (spec := _PARSED.get(key)) is None:
        spec = _parsed_spec(spec_dir, contents)
        while len(_PARSED) >= PARSED_KEPT:
            del _PARSED[next(iter(_PARSED))]  # the oldest first
        _PARSED[key] = spec
    return spec


# Specs parsed in this process, by their files' names inside spec/ and bytes (`load_spec_from`).
PARSED_KEPT = 16
_PARSED: dict[tuple[tuple[str, bytes | None], ...], Spec] = {}


def _parsed_spec(spec_dir: Path, contents: tuple[tuple[Path, bytes | None], ...]) -> Spec:
    """The Spec the files `contents` (each spec file's path and bytes) make; `load_spec_from`."""
    files = dict(contents)
    header = _validated(SpecHeader, _read_yaml(spec_dir / "spec.yaml", files), spec_dir / "spec.yaml")
    if header.changelog[0].version != header.version:
        raise BadInput(
            f"{spec_dir / 'spec.yaml'}: version {header.version} has no changelog entry "
            f"(the first entry is {header.changelog[0].version}); add one at the top"
        )
    gates: dict[str, Gate] = {}
    gate_files: dict[str, str] = {}
    for path in (path for path in files if path.parent == spec_dir / "gates"):  # spec_files' order
        parsed = _validated(GateFile, _read_yaml(path, files), path)
        for gate in parsed.gates:
            if gate.id in gates:
                raise BadInput(
                    f"{path}: duplicate gate id {gate.id} (first defined in {gate_files[gate.id]})"
                )
            gates[gate.id] = gate
            gate_files[gate.id] = str(path.relative_to(spec_dir))
    policy_data = {name: _read_yaml(spec_dir / file, files) for name, file in POLICY_FILES.items()}
    bench_path = spec_dir / "benchmarks.yaml"
    bench = _validated(BenchmarkFile, policy_data["benchmarks"], bench_path)
    revisions_path = spec_dir / "revisions.yaml"
    history = _validated(RevisionsFile, _read_yaml(revisions_path, files), revisions_path)
    revisions = history.revisions
    _check_revisions(revisions_path, header, gates, revisions)
    digests = {name: policy_digest(data) for name, data in policy_data.items()}
    _check_policies(revisions_path, header, digests, history.policies)
    kinds_path = spec_dir / "run_kinds.yaml"
    kinds = _validated(RunKindsFile, policy_data["run_kinds"], kinds_path).run_kinds
    for name, kind in kinds.items():
        options = [g for option in kind.options for g in [*option.gates, *option.checks]]
        for gate_id in [*kind.gates, *options, *kind.checks]:
            if gate_id not in gates:
                raise BadInput(f"{kinds_path}: run kind {name!r} requires unknown gate {gate_id}")
    signing = _signing_policy(spec_dir / POLICY_FILES["signing"], policy_data["signing"], kinds)
    digest = hashlib.sha256()
    for path, data in contents:
        assert data is not None, path  # every spec file was parsed above; a missing one was refused
        digest.update(path.relative_to(spec_dir).as_posix().encode() + b"\0")
        digest.update(data + b"\0")
    return Spec(
        header=header,
        gates=gates,
        gate_files=gate_files,
        benchmarks={b.name: b for b in bench.benchmarks},
        revisions=revisions,
        policy_revisions=history.policies,
        run_kinds=kinds,
        signing=signing,
        sha256=digest.hexdigest(),
    )


def _signing_policy(path: Path, data: object, kinds: Mapping[str, RunKind]) -> SigningPolicy:
    """spec/signing.yaml, validated; every kind it names must be a run kind, "release" or "*", so a
    misspelt kind cannot quietly leave records unsigned that the policy means to require."""
    policy = _validated(SigningPolicy, data, path)
    assert isinstance(policy, SigningPolicy)
    named = [*policy.required, *(kind for key in policy.trusted_keys for kind in key.kinds)]
    for kind in named:
        if kind not in kinds and kind not in (ANY_KIND, RELEASE_KIND):
            raise BadInput(
                f"{path}: names {kind!r}, which is no run kind of spec/run_kinds.yaml, "
                f"{RELEASE_KIND!r} or {ANY_KIND!r}"
            )
    return policy


def _check_revisions(
    path: Path, header: SpecHeader, gates: dict[str, Gate], revisions: dict[str, list[RevisionEntry]]
) -> None:
    """The revision history must account for every gate's current thresholds.

    A threshold edited in place changes its digest; unless the gate's revision is bumped and the
    new digest added here, with the changelog naming `GATE-… rev N`, the spec refuses to load.
    """
    changelog = {entry.version: entry.summary for entry in header.changelog}
    for gate_id in revisions:
        if gate_id not in gates:
            raise BadInput(f"{path}: lists {gate_id}, which no spec/gates/*.yaml defines")
    for gate_id, gate in gates.items():
        history = revisions.get(gate_id)
        if not history:
            raise BadInput(
                f"{path}: {gate_id} has no revision history; add revision {gate.revision} with "
                f"thresholds_sha256 {gate.thresholds_sha256}"
            )
        numbers = [entry.revision for entry in history]
        if numbers != list(range(1, len(numbers) + 1)) or numbers[-1] != gate.revision:
            raise BadInput(
                f"{path}: {gate_id} lists revisions {numbers}, but the gate is at revision {gate.revision}; "
                "the history must run 1, 2, ... up to it"
            )
        current = history[-1]
        if current.thresholds_sha256 != gate.thresholds_sha256:
            raise BadInput(
                f"{gate_id} rev {gate.revision}: thresholds changed without a revision bump (their "
                f"sha256 is {gate.thresholds_sha256}, {path.name} records {current.thresholds_sha256}); "
                "bump the gate's revision, add the new digest and name the change in the changelog"
            )
        for entry in history:
            if entry.spec_version not in changelog:
                raise BadInput(
                    f"{path}: {gate_id} rev {entry.revision} cites spec version {entry.spec_version}, "
                    "which has no changelog entry"
                )
            if entry.revision > 1 and f"{gate_id} rev {entry.revision}" not in changelog[entry.spec_version]:
                raise BadInput(
                    f"{path}: the changelog of {entry.spec_version} does not name '{gate_id} rev "
                    f"{entry.revision}'; every revision bump is named in the changelog"
                )


def _check_policies(
    path: Path, header: SpecHeader, digests: dict[str, str], policies: dict[str, list[PolicyEntry]]
) -> None:
    """Each policy file's content must be the digest of its latest revision, as gate thresholds must.

    A requirement deleted from spec/run_kinds.yaml, a run kind invented, a benchmark goal moved:
    each changes the file's digest, and the spec refuses to load until the policy's revision is
    bumped in `policies:` of spec/revisions.yaml with the new digest and the changelog names it
    as '<policy> rev N'.
    """
    changelog = {entry.version: entry.summary for entry in header.changelog}
    for name in policies:
        if name not in digests:
            raise BadInput(
                f"{path}: policies lists {name!r}, which is not a policy file ({', '.join(digests)})"
            )
    for name, digest in digests.items():
        history = policies.get(name)
        file = POLICY_FILES[name]
        if not history:
            raise BadInput(
                f"{path}: policy {name} ({file}) has no revision history; add revision 1 with sha256 {digest}"
            )
        numbers = [entry.revision for entry in history]
        if numbers != list(range(1, len(numbers) + 1)):
            raise BadInput(f"{path}: policy {name} lists revisions {numbers}; the history must run 1, 2, ...")
        if history[-1].sha256 != digest:
            raise BadInput(
                f"{file} changed without a revision bump (its content digest is {digest}, {path.name} "
                f"records {history[-1].sha256} for {name} rev {numbers[-1]}); add {name} rev "
                f"{numbers[-1] + 1} with the new digest and name the change in the changelog"
            )
        for entry in history:
            if entry.spec_version not in changelog:
                raise BadInput(
                    f"{path}: policy {name} rev {entry.revision} cites spec version {entry.spec_version}, "
                    "which has no changelog entry"
                )
            if entry.revision > 1 and f"{name} rev {entry.revision}" not in changelog[entry.spec_version]:
                raise BadInput(
                    f"{path}: the changelog of {entry.spec_version} does not name "
                    f"'{name} rev {entry.revision}'; every revision bump is named in the changelog"
                )


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """The project's spec, loaded once per process."""
    return load_spec_from(default_spec_dir())


def gates_required(entry: RunKind, config: dict[str, Any] | None = None) -> list[str]:
    """The gates a completed record of run kind `entry` must judge: the kind's own, and those of
    every option its `config` turns on (of today's spec/run_kinds.yaml, or of an older revision's)."""
    required = list(entry.gates)
    for option in entry.options:
        if _option_on(config or {}, option.option):
            required += [g for g in option.gates if g not in required]
    return required


def checks_required(entry: RunKind, config: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """gate id → the checks a completed record of run kind `entry` must show values of: the
    kind's own, and those of every option its `config` turns on."""
    required = {gate_id: list(names) for gate_id, names in entry.checks.items()}
    for option in entry.options:
        if _option_on(config or {}, option.option):
            for gate_id, names in option.checks.items():
                have = required.setdefault(gate_id, [])
                have += [n for n in names if n not in have]
    return required


def _option_on(config: dict[str, Any], dotted: str) -> bool:
    """Whether the config value at a dotted key (model.moe_experts) is truthy; absent is off."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return bool(value)
