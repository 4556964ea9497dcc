"""What a record's `env` says of where it ran, against itself: a CPU-only build of torch runs nowhere
else.

A torch wheel built for the CPU alone carries the local version `+cpu` (`2.13.0+cpu`) and has no CUDA
(torch.version.cuda is None): a run under it ran on the CPU, whatever `env.device` and `env.cuda`
claim, and every generator it drew with was a CPU one: a fine-tune's env restated as a CUDA run
(device cuda, cuda 12.4) beside its own env.torch 2.13.0+cpu and its GATE-TRAIN-005
generator_device cpu contradicts itself.

A forger who restates the build too (`2.13.0+cu128`, cuda 12.8, device cuda) is
held to what the run measured: every generator a gate watched was made on the run's device (the
training loop's, `stack sample`'s --device, the spread probe's on its prompt's:
stack/model/sampling_checks.py), so the device type of each `generator_device` a gate measured is
env.device's.

The libraries a report of the run lists under `versions` (export.json, import.json, an adapter's
record: stack.export.deps.versions, package metadata read by the run's own process) are the
record's env: its torch is env.torch (not export.json's torch restated as a CUDA build beside
env.torch's CPU one), and the project's own version is the one pyproject.toml at the record's
commit declares (not gatestack 0.1.0 restated as 0.3.0); a dirty tree's is warned of. A
torch build labelled for a CUDA version (`+cu128`) has that CUDA, which env.cuda, where stated, is.

A forger who restates env.torch, env.cuda and env.device together, and the versions a report lists
with them, is still held to the writer: some commands make their record with a literal device
(`CommandEvidence(KIND, argv, "cpu", ...)`: `stack es`, `stack prepare`, the surgeries, the exports,
LoRA export and import, the options matrix), so such a record ran where that literal says, with no
CUDA (an es, prepare or laser record restated as a CUDA run, consistently, is caught here). The literal is
read from the writer's source at the record's commit (WRITERS names the file of each kind), without running
it; a writer that cannot be read there, or passes no one literal, is named, never passed in silence (a dirty
tree's record is warned of).

A benchmark record measured what its device allows (`benchmark_device_problems`), so a CPU record
restated as a GPU's (env.device, env.torch and env.cuda together) contradicts its own numbers: a
trace benchmark's statistics and checks were measured by the Triton kernels and torch's ops on
CUDA (`benchmarks/trace_overhead.CUDA_ENGINES`) and by the C kernels (or torch, naming why) on a
CPU, and only a CUDA record keeps a kernel profile; a training benchmark's `peak_flops` is the
peak the stack's table gives its device (`stack.train.flops.peak_flops`: none for a CPU), and on a
CPU its step profiles launched no GPU kernel and spent no GPU time; a model
benchmark is named for its device (`SPEED_BENCHMARKS`); the GPU check refuses to run without CUDA.
Its command line's `--device` decides the same (tools/integrity/settings/bench_argv.py).
"""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from pathlib import Path
from typing import Any

import torch

from benchmarks import trace_overhead
from contracts.derive.benchmarks import SPEED_BENCHMARKS, TRAIN_BENCHMARK
from contracts.evidence import EvidenceRecord
from contracts.reading import read_json
from stack.train.flops import peak_flops
from tools.integrity.settings.default_sources import UNRESOLVED, Reader, _parsed, resolved
from tools.integrity.spec_history import commit_reader, files_at

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
# The files that have made the record of each run kind whose writer passes CommandEvidence a literal
# device (module docstring): run kind -> the writer's paths in the repository, now and before it
# moved (the first that makes such a call at a record's commit is its writer).
WRITERS = {
    "es": ("stack/es/rundir.py",),
    "prepare": ("stack/cli/prepare.py", "stack/data/prepare_record.py"),
    "laser": ("stack/surgery/output.py",),
    "quantize": ("stack/surgery/output.py",),
    "export-hf": ("stack/cli/export.py",),
    "export-onnx": ("stack/cli/export.py",),
    "import-hf": ("stack/export/importer.py",),
    "lora-export": ("stack/cli/lora.py",),
    "lora-import": ("stack/cli/lora.py",),
    "options-matrix": ("stack/cli/options_matrix.py",),
}
# The class whose construction opens a command's evidence record, and its device argument.
EVIDENCE_CLASS, DEVICE_ARGUMENT, DEVICE_POSITION = "CommandEvidence", "device", 2


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
    if device_type(record) != "cpu":
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


def device_type(record: EvidenceRecord) -> str:
    """ "cpu" or "cuda": what the record's env.device names (a GPU by its name, or `cuda`, `cuda:1`)."""
    return "cpu" if record.env.device.split(":")[0] == "cpu" else "cuda"


def benchmark_device_problems(record: EvidenceRecord) -> list[str]:
    """What a benchmark record measured that its env.device could not have (module docstring)."""
    metrics, device, named = record.metrics, device_type(record), record.env.device
    if record.run.kind == "gpu-check" and device == "cpu":  # it refuses to run without CUDA
        return [f"env.device is {named!r}, but the GPU check runs on CUDA alone (tools/records/gpu_check.py)"]
    if record.run.kind != "benchmark":
        return []
    problems = []
    name = metrics.get("benchmark")
    if name == trace_overhead.GOAL:
        for key, cuda in trace_overhead.CUDA_ENGINES.items():
            if key in metrics and (metrics[key] == cuda) != (device == "cuda"):
                problems.append(f"metrics.{key} is {metrics[key]!r}, which no {device} run measures with")
        if "profile" in metrics and device == "cpu":
            problems.append("metrics.profile is a CUDA kernel profile, but env.device is the CPU")
    if name in SPEED_BENCHMARKS.values() and name != SPEED_BENCHMARKS[device]:
        problems.append(
            f"metrics.benchmark is {name!r}, but env.device {named!r} makes it {SPEED_BENCHMARKS[device]!r}"
        )
    if name == TRAIN_BENCHMARK and device == "cpu":
        problems += _gpu_kernels_profiled(metrics.get("step_profiles"))
    if name == TRAIN_BENCHMARK and "peak_flops" in metrics:
        peak = peak_flops(named) if device == "cuda" else None
        if metrics["peak_flops"] != peak:
            problems.append(
                f"metrics.peak_flops is {metrics['peak_flops']!r}, but env.device {named!r} peaks at {peak!r}"
            )
    return problems


def _gpu_kernels_profiled(profiles: Any) -> list[str]:
    """A CPU training benchmark's step profiles that state GPU kernels: its profiler asked for the
    CPU's activity alone, so each loop's step launched none and spent no GPU time."""
    loops = profiles if isinstance(profiles, dict) else {}
    return [
        f"metrics.step_profiles.{loop}.{key} is {profile[key]!r}, but on the CPU no GPU kernel is profiled"
        for loop, profile in loops.items()
        if isinstance(profile, dict)
        for key in ("launches", "device_ms")
        if profile.get(key) not in (None, 0)
    ]


def writer_device_problems(record: EvidenceRecord, root: Path) -> list[str]:
    """env.device against the literal device the record's writer passes CommandEvidence at its
    commit, and env.cuda against none (module docstring); a dirty tree may have run another writer
    than its commit's, so what its record contradicts there is warned of (`record_checks`)."""
    paths = WRITERS.get(record.run.kind)
    if paths is None:
        return []
    read = commit_reader(root, record.code.git_sha, {})
    path, devices = next(
        ((path, found) for path in paths if (found := writer_devices(record.run.kind, read(path), read))),
        (" or ".join(paths), None),
    )
    if devices is None or len(devices) != 1 or UNRESOLVED in devices:
        return [
            f"its writer {path} at its commit {record.code.git_sha[:12]} passes its record no one literal "
            f"device: env.device is not held"
        ]
    (device,) = devices
    commit = record.code.git_sha[:12]
    said = f"{path} at its commit {commit} writes every {record.run.kind} record with device {device!r}"
    problems = [f"env.device is {record.env.device!r}, but {said}"] if record.env.device != device else []
    if record.env.cuda is not None and device.split(":")[0] == "cpu":
        problems.append(f"env.cuda is {record.env.cuda!r}, but {said}: it ran without CUDA")
    return problems


def writer_devices(kind: str, source: bytes | None, read: Reader) -> set[Any] | None:
    """The device each CommandEvidence call of a writer's `source` passes for run kind `kind` (a
    call whose kind argument resolves to another kind is not one; an unresolvable kind, such as
    `request.kind`, is); UNRESOLVED where a device is no literal; None where the source does not
    parse or makes no such call."""
    tree = _parsed(source) if source is not None else None
    calls = _evidence_calls(source) if source is not None else None
    if tree is None or calls is None:
        return None
    devices = set()
    for kind_argument, argument in calls:
        made = resolved(kind_argument, tree, read)
        if made is not UNRESOLVED and made != kind:
            continue
        device = resolved(argument, tree, read) if argument is not None else UNRESOLVED
        devices.add(device if isinstance(device, str) else UNRESOLVED)
    return devices or None


@functools.lru_cache(maxsize=64)
def _evidence_calls(source: bytes) -> tuple[tuple[ast.expr, ast.expr | None], ...] | None:
    """(kind argument, device argument or None) of each CommandEvidence call in `source`; None where
    it does not parse. Walked once per content: every record of a kind asks its writer's source."""
    tree = _parsed(source)
    if tree is None:
        return None
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _called(node.func) != EVIDENCE_CLASS or not node.args:
            continue
        given = [k.value for k in node.keywords if k.arg == DEVICE_ARGUMENT]
        argument = node.args[DEVICE_POSITION] if len(node.args) > DEVICE_POSITION else next(iter(given), None)
        calls.append((node.args[0], argument))
    return tuple(calls)


def _called(func: ast.expr) -> str | None:
    """The name a call's callee is spelled with (`CommandEvidence`, `evidence.CommandEvidence`)."""
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


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
        report = read_json(path, run_dir)
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
