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
from datetime import timedelta

import torch
import torch.distributed as dist

from contracts.errors import BadInput
from contracts.process_group import process_group_backend

# How long a rank that finished waits at the end for the others before it leaves the group anyway.
LEAVE_TIMEOUT = timedelta(seconds=120)


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
    backend = process_group_backend(size, device_type)
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend)


def leave(world: World, together: bool) -> None:
    """Tear the process group down (a no-op for a world of one).

    `together`: the loop ended on every rank alike (its steps done, a stop taken from all-reduced
    numbers), so each waits for the others first. Without that wait a rank that tears gloo down
    while another is still leaving can abort the other after a run that completed. A rank leaving
    on an error does not wait: the others may never arrive. On gloo the wait is bounded
    (LEAVE_TIMEOUT), so a rank that never comes costs a timeout error, not a hung run.
    """
    if not (world.distributed and dist.is_initialized()):
        return
    if together:
        if world.backend == "gloo":
            dist.monitored_barrier(timeout=LEAVE_TIMEOUT)
        else:
            dist.barrier()
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


def shard(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> None:
    """FSDP2: shard each transformer block, then the rest, so no rank holds the whole model."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def _full_options(cpu_offload: bool):  # -> StateDictOptions
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def gather_full(
    world: World,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    plain_model: torch.nn.Module | None,
    plain_optimizer: torch.optim.Optimizer | None,
) -> None:
    """Copy a sharded model's and optimizer's full state into unsharded twins on rank 0.

    A collective: every rank calls it; only rank 0 passes (and fills) the twins. Checkpoints are
    then written from the twins in the single-process format, so one loader reads both.
    """
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    options = _full_options(cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    if world.is_main:
        assert plain_model is not None and plain_optimizer is not None
        plain_model.load_state_dict(model_state)
        set_optimizer_state_dict(plain_model, plain_optimizer, optim_state, options=_full_options(False))


def scatter_full(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    plain_model: torch.nn.Module,
    plain_optimizer: torch.optim.Optimizer,
) -> None:
    """Load unsharded twins (read from a checkpoint on every rank) into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    options = _full_options(cpu_offload=False)
    scatter_model(model, plain_model)
    full_optim = get_optimizer_state_dict(plain_model, plain_optimizer, options=options)
    set_optimizer_state_dict(model, optimizer, full_optim, options=options)


def scatter_model(model: torch.nn.Module, plain_model: torch.nn.Module) -> None:
    """Load an unsharded model's weights into the sharded `model`."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, plain_model.state_dict(), options=_full_options(cpu_offload=False))


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (FSDP2's gradient norm), or the tensor itself."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (an FSDP2 parameter or gradient shard), or the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor
