"""What a record's `env` says of where it ran, against itself: a CPU-only build of torch runs nowhere
else.

A torch wheel built for the CPU alone carries the local version `+cpu` (`2.13.0+cpu`) and has no CUDA
(torch.version.cuda is None): a run under it ran on the CPU, whatever `env.device` and `env.cuda`
claim, and every generator it drew with was a CPU one. Round-8 ledger audit W44: a fine-tune's env
restated as a CUDA run (device cuda, cuda 12.4) beside its own env.torch 2.13.0+cpu and its
GATE-TRAIN-005 generator_device cpu, and nothing held one to the other.
"""

from __future__ import annotations

from contracts.evidence import EvidenceRecord

# The local version label of a CPU-only torch build.
CPU_ONLY = "+cpu"


def env_problems(record: EvidenceRecord) -> list[str]:
    """Where the record's env names a CPU-only torch build: a device, a CUDA version or a gate's
    generator device that is not the CPU's."""
    env = record.env
    if not (env.torch or "").endswith(CPU_ONLY):
        return []
    build = f"env.torch {env.torch!r} is a CPU-only build"
    problems = []
    if env.device.split(":")[0] != "cpu":
        problems.append(f"env.device is {env.device!r}, but {build}: it ran on the CPU")
    if env.cuda is not None:
        problems.append(f"env.cuda is {env.cuda!r}, but {build}, which has no CUDA")
    problems += [
        f"gates[{g.id}].measured.generator_device is {g.measured['generator_device']!r}, but {build}"
        for g in record.gates
        if isinstance(g.measured, dict)
        and isinstance(g.measured.get("generator_device"), str)
        and g.measured["generator_device"] != "cpu"
    ]
    return problems
