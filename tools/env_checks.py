"""What a record's `env` says of where it ran, against itself: a CPU-only build of torch runs nowhere
else.

A torch wheel built for the CPU alone carries the local version `+cpu` (`2.13.0+cpu`) and has no CUDA
(torch.version.cuda is None): a run under it ran on the CPU, whatever `env.device` and `env.cuda`
claim, and every generator it drew with was a CPU one. Round-8 ledger audit W44: a fine-tune's env
restated as a CUDA run (device cuda, cuda 12.4) beside its own env.torch 2.13.0+cpu and its
GATE-TRAIN-005 generator_device cpu, and nothing held one to the other.

A forger who restates the build too (`2.13.0+cu128`, cuda 12.8, device cuda: round-9 audit X61) is
held to what the run measured: every generator a gate watched was made on the run's device (the
training loop's, `stack sample`'s --device, the spread probe's on its prompt's:
stack/model/sampling_checks.py), so the device type of each `generator_device` a gate measured is
env.device's.

The libraries a report of the run lists under `versions` (export.json, import.json, an adapter's
record: stack.export.deps.versions, package metadata read by the run's own process) are the
record's env: its torch is env.torch (round-9 audit X01: export.json's torch restated as a CUDA
build beside env.torch's CPU one), and the project's own version is the one pyproject.toml at the
record's commit declares (X02: gatestack 0.1.0 restated as 0.3.0); a dirty tree's is warned of. A
torch build labelled for a CUDA version (`+cu128`) has that CUDA, which env.cuda, where stated, is.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import torch
from spec_history import files_at

from contracts.evidence import EvidenceRecord

# The local version label of a CPU-only torch build.
CPU_ONLY = "+cpu"
# The measured key naming the device a gate's generator drew on (torch.Generator.device.type).
MEASURED_DEVICE = "generator_device"
# The local version label of a torch build for one CUDA version: `+cu128` is CUDA 12.8.
CUDA_BUILD = re.compile(r"\+cu(\d+)(\d)$")
# The file that declares the project's name and version at a commit.
PYPROJECT = "pyproject.toml"
# The key of a report that lists the versions of the libraries the run used.
VERSIONS = "versions"


def env_problems(record: EvidenceRecord) -> list[str]:
    """What the record's env says against what it measured (`measured_device_problems`) and, where
    it names a CPU-only torch build, a device, a CUDA version or a gate's generator device that is
    not the CPU's."""
    env = record.env
    problems = measured_device_problems(record)
    built_for = CUDA_BUILD.search(env.torch or "")
    if built_for is not None and env.cuda is not None and env.cuda != ".".join(built_for.groups()):
        problems.append(
            f"env.cuda is {env.cuda!r}, but env.torch {env.torch!r} is a build for CUDA "
            f"{'.'.join(built_for.groups())}"
        )
    if not (env.torch or "").endswith(CPU_ONLY):
        return problems
    build = f"env.torch {env.torch!r} is a CPU-only build"
    if env.device.split(":")[0] != "cpu":
        problems.append(f"env.device is {env.device!r}, but {build}: it ran on the CPU")
    if env.cuda is not None:
        problems.append(f"env.cuda is {env.cuda!r}, but {build}, which has no CUDA")
    problems += [
        f"gates[{g.id}].measured.{MEASURED_DEVICE} is {g.measured[MEASURED_DEVICE]!r}, but {build}"
        for g in record.gates
        if isinstance(g.measured, dict)
        and isinstance(g.measured.get(MEASURED_DEVICE), str)
        and g.measured[MEASURED_DEVICE] != "cpu"
    ]
    return problems


def measured_device_problems(record: EvidenceRecord) -> list[str]:
    """Each gate whose measured generator device is another device type than env.device's: the
    generator was made on the run's device, so the device the record names is where it drew."""
    try:
        ran_on = torch.device(record.env.device).type
    except (RuntimeError, TypeError, ValueError):
        ran_on = None  # a device's name (a benchmark's "NVIDIA H100 80GB HBM3"): no type to hold
    return [
        f"env.device is {record.env.device!r}, but gates[{g.id}].measured.{MEASURED_DEVICE} is "
        f"{g.measured[MEASURED_DEVICE]!r}: the generator its gate watched was made on the run's device"
        for g in record.gates
        if isinstance(g.measured, dict)
        and isinstance(g.measured.get(MEASURED_DEVICE), str)
        and g.measured[MEASURED_DEVICE] != ran_on
    ]


def _reports(record: EvidenceRecord, run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(path, versions) of each cited JSON report of the run that lists library versions."""
    found = []
    for artifact in record.artifacts:
        path = run_dir / artifact.path
        if not artifact.path.endswith(".json") or not path.is_file():
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the artifact and derivation checks name an unreadable one
        if isinstance(report, dict) and isinstance(report.get(VERSIONS), dict):
            found.append((artifact.path, report[VERSIONS]))
    return found


def _project(root: Path, sha: str) -> tuple[str, str] | None:
    """(name, version) pyproject.toml declares at commit `sha`; None where it declares none."""
    blob = files_at(root, [(sha, PYPROJECT)]).get((sha, PYPROJECT))
    try:
        project = tomllib.loads(blob.decode()).get("project") if blob is not None else None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        project = None
    if not isinstance(project, dict) or not all(isinstance(project.get(k), str) for k in ("name", "version")):
        return None
    return project["name"], project["version"]


def version_findings(record: EvidenceRecord, run_dir: Path, root: Path) -> tuple[list[str], list[str]]:
    """(violations, warnings) of the library versions the run's reports list against its env and
    its commit's pyproject.toml (module docstring); the project's version in a dirty tree's record
    is only warned of."""
    reports = _reports(record, run_dir)
    if not reports:
        return [], []
    problems, warnings = [], []
    project = _project(root, record.code.git_sha)
    for path, versions in reports:
        if "torch" in versions and versions["torch"] != record.env.torch:
            problems.append(
                f"{path}: {VERSIONS}.torch is {versions['torch']!r}, but the record's env.torch is "
                f"{record.env.torch!r}: one process wrote both"
            )
        if project is None:
            problems.append(f"{path} lists {VERSIONS}, but {PYPROJECT} at its commit declares no version")
            continue
        name, version = project
        if name in versions and versions[name] != version:
            said = (
                f"{path}: {VERSIONS}.{name} is {versions[name]!r}, but {PYPROJECT} at its commit "
                f"{record.code.git_sha[:12]} declares {version!r}"
            )
            (warnings if record.code.git_dirty else problems).append(said)
    return problems, warnings
