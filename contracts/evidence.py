"""The evidence record (`metadata.json`): its schema, how it is filled, and its one writer.

Every tool that leaves evidence (train, trace, benchmarks) builds an `EvidenceRecord` and hands
it to `write_evidence`, which writes atomically: a temporary file in the same directory,
fsync, then rename. A reader therefore sees the old record or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import BadInput
from contracts.files import atomic_write_bytes, sha256_file
from contracts.signing import configured_key, sign_record
from contracts.spec import GATE_ID_PATTERN, PolicyRef, Spec, load_spec

# 2: gate results carry their thresholds' digest and message, records their checkpoint's hashes.
# A version-1 record cannot be re-judged (its measured values predate the judges): it is stale.
SCHEMA_VERSION = 2
EVIDENCE_FILE = "metadata.json"
# What a tool says of a `--run PATH` that `records_named` finds no record in (`runs_named`).
NO_RECORD = (
    f"holds no {EVIDENCE_FILE}, nor does any directory in it; pass a run directory, "
    "or a ledger of them (the folder --evidence-dir files records in)"
)
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a run id is also a directory name
RUN_ID_STAMP = "%Y%m%dT%H%M%S"  # the UTC second `run_id` names, read back by `stamped_at`
STAMPED_ID_RE = re.compile(r"-(\d{8}T\d{6})(?:-\d+)?$")
LEDGER_DIR = Path("evidence") / "runs"  # the repository's ledger of runs, relative to its root
REPO_ROOT = Path(__file__).resolve().parent.parent

JsonScalar = str | int | float | bool | None
JsonValue = JsonScalar | list[Any] | dict[str, Any]


class Record(BaseModel):
    """Base of the evidence schema: unknown keys are refused so tampering shows."""

    model_config = ConfigDict(extra="forbid")


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    WAIVED = "WAIVED"
    NOT_RUN = "NOT_RUN"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    HALTED = "halted"  # a gate fired
    FAILED = "failed"  # anything else went wrong
    EXHAUSTED = "exhausted"  # the corpus ran out with data.wrap=false; the last step is checkpointed


class RunInfo(Record):
    id: str = Field(pattern=RUN_ID_PATTERN)
    kind: str  # train | trace | benchmark | ...
    argv: list[str]
    # Each word of argv that named a file or directory where the run started, resolved there
    # (absolute, links followed): what the command's recorded paths must be, or lie under.
    places: dict[str, str] | None = None
    started: datetime
    finished: datetime | None = None
    status: RunStatus
    stop_reason: str | None = None


class CodeInfo(Record):
    git_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    git_dirty: bool
    diff_sha256: str | None = None


class EnvInfo(Record):
    python: str
    platform: str
    # The CPU's model name (a benchmark's ratio moves with it: tracing's on one core, a GPU run's
    # host-bound share); None where the system does not say, and in records made before it was kept.
    processor: str | None = None
    torch: str | None = None
    triton: str | None = None
    cuda: str | None = None
    device: str


class Determinism(Record):
    seeds: dict[str, int] = Field(default_factory=dict)
    flags: dict[str, JsonValue] = Field(default_factory=dict)


class SpecRef(Record):
    """The spec that judged the record: its version, the digest of its files, and (since 1.7.0) the
    revision and content digest of each policy file that decided what the record must judge."""

    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    policies: dict[str, PolicyRef] = Field(default_factory=dict)


class DataRef(Record):
    manifest_sha256: str | None = None
    tokenizer_sha256: str | None = None


class GateResult(Record):
    id: str = Field(pattern=GATE_ID_PATTERN)
    revision: int = Field(ge=1)
    thresholds_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    verdict: Verdict
    measured: JsonValue = None
    threshold: JsonValue = None  # the thresholds of `revision` that judged `measured`
    step: int | None = None
    message: str | None = None


class Waiver(Record):
    gate: str = Field(pattern=GATE_ID_PATTERN)
    reason: str = Field(min_length=1)


class Artifact(Record):
    path: str  # relative to the directory holding metadata.json
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class FileHash(Record):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class CheckpointRef(Record):
    """The run's last checkpoint by content: a filed copy of the record keeps these hashes, so a
    released weights file can be traced to the checkpoint it came from."""

    name: str
    step: int = Field(ge=0)
    files: dict[str, FileHash]


# The role of the parent a resumed leg of a training run names: the newest filed leg of the same
# run, with the weights the leg resumed from (stack.outputs.ledger, tools/lineage.py).
RESUMES = "resumes"
# A run filed more than once (each resumed leg: `stack train --resume RUN --evidence-dir LEDGER`)
# is filed as <run-id>, then <run-id>-leg2, <run-id>-leg3, ...: one record per leg, none replaced.
LEG_SUFFIX = re.compile(r"-leg(?P<n>[2-9]|[1-9][0-9]+)$")


def leg_id(run_id: str, leg: int) -> str:
    """The ledger id of leg `leg` (1, 2, ...) of run `run_id`: the run id itself for the first."""
    return run_id if leg == 1 else f"{run_id}-leg{leg}"


# A set-up refusal is filed as `<run-id>-refused-<UTC time>` (`.2`, `.3`, … within one second).
REFUSED = "-refused"
REFUSED_SUFFIX = re.compile(rf"{REFUSED}-\d{{8}}T\d{{6}}(?:\.\d+)?$")


def run_named(record_id: str) -> str:
    """The run a ledger id is a record of: a set-up refusal's (`base-refused-20261125T100625`) and
    a resumed leg's (`base-leg2`) are the run `base`'s."""
    return leg_of(REFUSED_SUFFIX.sub("", record_id))[0]


def leg_of(record_id: str) -> tuple[str, int]:
    """(run id, leg) of a ledger id: `base-leg3` is leg 3 of `base`; any other id is leg 1 of itself."""
    found = LEG_SUFFIX.search(record_id)
    return (record_id[: found.start()], int(found.group("n"))) if found else (record_id, 1)


class ParentRef(Record):
    """A model that a record's model was made from, by content (tools/integrity/lineage.py checks it)."""

    role: str = Field(min_length=1)  # init | reference | teacher | source | resumes (RESUMES)
    run: str | None = Field(default=None, pattern=RUN_ID_PATTERN)  # its record's id; None: it has none
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the sha256 of the weights file read
    path: str | None = None  # where it was read, as given


class Lineage(Record):
    """A derived model's parents; and, for a command whose record names its input as `checkpoint`
    (an export, an import, a surgery or merge), the sha256 of the weights it made."""

    parents: list[ParentRef] = Field(default_factory=list)
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class EvidenceRecord(Record):
    schema_version: int = SCHEMA_VERSION
    run: RunInfo
    code: CodeInfo
    env: EnvInfo
    determinism: Determinism = Field(default_factory=Determinism)
    spec: SpecRef
    contract_mode: str
    config: dict[str, JsonValue] = Field(default_factory=dict)
    config_sha256: str | None = None
    data: DataRef = Field(default_factory=DataRef)
    gates: list[GateResult] = Field(default_factory=list)
    waivers: list[Waiver] = Field(default_factory=list)
    metrics: dict[str, JsonValue] = Field(default_factory=dict)
    artifacts: list[Artifact] = Field(default_factory=list)
    checkpoint: CheckpointRef | None = None
    lineage: Lineage | None = None


def now() -> datetime:
    """The current time in UTC, the only clock evidence uses."""
    return datetime.now(UTC)


def plain(value: Any) -> Any:
    """`value` as strict JSON data: NaN and ±Inf become the strings "nan", "inf", "-inf", which
    the judges read back as those floats (contracts.judges.base.number); JSON has neither, and a
    writer that turned them into null would leave a record whose verdict no judge can give again."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # most leaves: taken as they are
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def canonical_sha256(value: JsonValue) -> str:
    """Hex sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def artifact(path: Path, run_dir: Path) -> Artifact:
    """Describe one file produced by a run, by its path relative to the run directory."""
    return Artifact(
        path=path.relative_to(run_dir).as_posix(),
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
    )


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)


def filed_run(status_line: str) -> bool:
    """Whether a `git status --porcelain=v2` line is an untracked run directory of the ledger
    (`? evidence/runs/<run-id>/`): a record filed into this checkout's ledger since its commit.
    Such a record is no code that ran, so it leaves the tree clean; a file added to a committed run
    directory, or a committed record changed, is still dirt."""
    if not status_line.startswith("? ") or not status_line.endswith("/"):
        return False
    parts = Path(status_line[2:]).parts
    return (
        len(parts) == len(LEDGER_DIR.parts) + 1
        and parts[:-1] == LEDGER_DIR.parts
        and bool(re.fullmatch(RUN_ID_PATTERN, parts[-1]))
    )


def collect_code(repo: Path) -> CodeInfo:
    """The commit the code came from, whether the tree was dirty, and a hash of the diff.

    One `git status` gives the commit and the dirt (untracked files count: they may be the code
    that ran; the records a session files into the ledger do not, `filed_run`: each command of a
    session filing its record there would otherwise make the tree of the next one dirty, and
    every check made only of a clean record's commit would skip it); the diff is read only when
    there is dirt, since a clean tree has none.
    """
    status = _git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=normal")
    lines = status.stdout.decode(errors="replace").splitlines()
    head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if status.returncode != 0 or head is None or head == "(initial)":
        return CodeInfo(git_sha=None, git_dirty=True, diff_sha256=None)
    dirty = any(not ln.startswith("#") and not filed_run(ln) for ln in lines)
    diff = _git(repo, "diff", "HEAD").stdout if dirty else b""
    return CodeInfo(
        git_sha=head,
        git_dirty=dirty,
        diff_sha256=hashlib.sha256(diff).hexdigest() if diff else None,
    )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def processor_name() -> str | None:
    """The CPU's model name: Linux's /proc/cpuinfo `model name` (e.g. "AMD EPYC"), elsewhere what
    the platform module says; None when neither says anything."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def collect_env(device: str, cuda: str | None = None) -> EnvInfo:
    """Interpreter, platform and library versions; read from package metadata, importing nothing."""
    return EnvInfo(
        python=sys.version.split()[0],
        platform=platform.platform(),
        processor=processor_name(),
        torch=_version("torch"),
        triton=_version("triton"),
        cuda=cuda,
        device=device,
    )


def run_id(prefix: str) -> str:
    """A run id that sorts by time: `<prefix>-<UTC yyyymmddThhmmss>`."""
    return f"{prefix}-{now():{RUN_ID_STAMP}}"


def free_run_id(kind: str, place: Path | None) -> str:
    """A run id stamped now, `<kind>-<time>`, made unique within `place` (the ledger or directory
    its record is filed in) by `-1`, `-2`, … after it where a record of the same second is there:
    two commands of one kind in one second are two records, never a refused second one."""
    rid = run_id(kind)
    candidate, n = rid, 1
    while place is not None and (Path(place) / candidate).exists():
        candidate, n = f"{rid}-{n}", n + 1
    return candidate


def stamped_at(rid: str) -> datetime | None:
    """The UTC second a `run_id` stamped into `rid` (one a same-second suffix `-N` may follow, as a
    trace's does), or None when `rid` carries no stamp."""
    found = STAMPED_ID_RE.search(rid)
    if found is None:
        return None
    try:
        return datetime.strptime(found.group(1), RUN_ID_STAMP).replace(tzinfo=UTC)
    except ValueError:  # digits that are no date
        return None


def spec_ref(spec: Spec) -> SpecRef:
    """What a record made now says of the spec judging it."""
    return SpecRef(version=spec.version, sha256=spec.sha256, policies=spec.policies)


def places_named(argv: list[str]) -> dict[str, str]:
    """Each word of a command line after the program that names an existing file or directory,
    resolved: the checker cannot resolve a relative path or a link where the run was made."""
    places = {}
    for word in argv[1:]:
        try:
            if word and not word.startswith("-") and Path(word).exists():
                places[word] = str(Path(word).resolve())
        except (OSError, ValueError):
            continue  # not a name the filesystem takes
    return places


def new_record(
    kind: str, rid: str, argv: list[str], device: str, cuda: str | None = None, mode: str = "boundary"
) -> EvidenceRecord:
    """A record in status `running`, with code, environment and spec filled in.

    Every tool that leaves evidence starts from here, so no record misses its provenance.
    """
    spec = load_spec()
    return EvidenceRecord(
        run=RunInfo(
            id=rid, kind=kind, argv=argv, places=places_named(argv), started=now(), status=RunStatus.RUNNING
        ),
        code=collect_code(REPO_ROOT),
        env=collect_env(device, cuda),
        spec=spec_ref(spec),
        contract_mode=mode,
    )


def file_completed(record: EvidenceRecord) -> Path:
    """Mark `record` completed now and file it in the repository's ledger (benchmarks use this)."""
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    return file_record(REPO_ROOT / LEDGER_DIR, record)


def ledger_slot(ledger_dir: Path, run_id: str) -> Path:
    """Where `run_id` would be filed in `ledger_dir`; refused when a record is already there.

    The ledger is append-only: a record, once filed, is never replaced, so a run id can be filed
    once per ledger. Tools call this before they start work, so a clash costs nothing.
    """
    target = Path(ledger_dir) / run_id
    if target.exists():
        raise BadInput(
            f"{target} already exists and the ledger is append-only: a filed record is never replaced; "
            "give the run a new directory name (its run id), or file it into another --evidence-dir"
        )
    return target


def file_record(ledger_dir: Path, record: EvidenceRecord, files: tuple[Path, ...] = ()) -> Path:
    """File `record` (and copies of `files`, listed as its artifacts) as LEDGER_DIR/<run-id>/, signed
    when a signing key is configured (contracts.signing: every command files through here, so every
    filed record is signed the same way).

    The directory is created exclusively, so two writers cannot both file the same run id, and
    an existing record is never overwritten (see `ledger_slot`). A misconfigured key is refused
    before anything is filed.
    """
    key = configured_key(REPO_ROOT, ledger_dir)
    target = ledger_slot(ledger_dir, record.run.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.mkdir()
    except FileExistsError:
        ledger_slot(ledger_dir, record.run.id)  # raises the one-line refusal
        raise
    filed = record.model_copy(deep=True)
    filed.artifacts = []
    for source in files:
        shutil.copy2(source, target / source.name)
        filed.artifacts.append(artifact(target / source.name, target))
    path = write_evidence(target, filed)
    if key is not None:
        sign_record(target, read_evidence(path), key)
    return path


def records_named(path: Path) -> list[Path]:
    """The run directories a command line's `--run PATH` names: PATH itself when it holds a record,
    else each directory in it that holds one (a ledger, as `file_record` files records), sorted;
    none when neither. A ledger is read whole, so that the parents its records name are among them."""
    if (path / EVIDENCE_FILE).is_file():
        return [path]
    return sorted(child for child in path.glob("*") if (child / EVIDENCE_FILE).is_file())


def runs_named(paths: list[Path]) -> list[Path]:
    """Every run directory the `--run PATH` items of a command line name (`records_named` of each,
    in order); a PATH that names none is refused in one line that names both forms."""
    runs: list[Path] = []
    for path in paths:
        named = records_named(path)
        if not named:
            raise BadInput(f"{path} {NO_RECORD}")
        runs += named
    return runs


def read_evidence(path: Path) -> EvidenceRecord:
    """Load and validate one metadata.json; bad JSON or schema errors are BadInput."""
    try:
        return EvidenceRecord.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        raise BadInput(f"no evidence record at {path}") from None
    except ValueError as exc:
        first = str(exc).splitlines()
        raise BadInput(f"{path} is not a valid evidence record: {' '.join(first[:3])}") from None


def write_evidence(run_dir: Path, record: EvidenceRecord) -> Path:
    """Validate `record` and write it as run_dir/metadata.json, atomically."""
    record = EvidenceRecord.model_validate(record.model_dump())
    path = Path(run_dir) / EVIDENCE_FILE
    atomic_write_bytes(path, (record.model_dump_json(indent=2) + "\n").encode())
    return path
