"""Data-parallel training on torch.distributed: who am I, and the few collectives the loop needs.

`torchrun --nproc-per-node N -m stack train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
loop then joins a process group (gloo on CPU, nccl on CUDA), reads its own disjoint slice of
every global batch, and averages gradients through DDP. Every rank takes the same decisions
(finite checks, early stopping, coherence halts) from all-reduced numbers, so all ranks halt
together; only rank 0 writes metrics, checkpoints and evidence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from contracts.errors import BadInput


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadInput(f"{name}={raw!r} is not an integer (set by torchrun)") from None


def join(device_type: str) -> World:
    """Join the process group torchrun prepared, or stay a world of one."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend)


def leave(world: World) -> None:
    """Tear the process group down (a no-op for a world of one)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(world: World, values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of `values` over all ranks (identity for a world of one)."""
    if not world.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / world.size


def gather_rows(world: World, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `rows` (same shape on each) along dim 0, in rank order."""
    if not world.distributed:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world.size)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts, dim=0)


def barrier(world: World) -> None:
    """Wait for every rank (a no-op for a world of one)."""
    if world.distributed:
        dist.barrier()
