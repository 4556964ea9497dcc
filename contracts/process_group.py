"""The collective backend a training run's processes join, which its record states.

`stack train --nproc N` (torchrun) joins one process group per run: NCCL, the collectives of
NVIDIA's GPUs, where the ranks train on CUDA, and gloo, torch's CPU collectives, elsewhere; a
world of one process joins none. stack.train.distributed joins the group this names, and the
integrity check holds a record's `determinism.flags.backend` to it (contracts.derive.training).
"""

from __future__ import annotations


def process_group_backend(world_size: int, device_type: str) -> str | None:
    """The backend of a world of `world_size` processes training on `device_type` (None: one
    process, no group)."""
    if world_size <= 1:
        return None
    return "nccl" if device_type == "cuda" else "gloo"
