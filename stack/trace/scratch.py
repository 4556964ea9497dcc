"""Where a traced forward keeps the rows its checks read after the site: buffers reused by the next.

GATE-TRACE-002's checks copy a few rows of many sites as the forward goes (the identities'
sampled rows, the statistics' slices) and measure them together after it. Allocated one by one,
those copies would sit between the activations the forward frees, and on a CPU that costs more
than the checks: glibc cannot hand the freed memory on whole, the top of its heap goes back to the
system at the end of a forward and comes back page fault by page fault in the next one's matrix
products (thousands of minor page faults per `small` forward on one core, a tenth of its time;
benchmarks/trace_overhead.py records them as `traced_page_faults`; docs/trace.md, Cost).

A `Scratch` hands out views of one buffer per device and dtype by bumping an offset (`take`),
so the forward allocates nothing that outlives a site. A request the buffer cannot hold is
allocated on its own, and the buffer is grown to what the forward wanted once it is over
(`reset`), so the next trace of the same model fits. The buffers are kept between traced
forwards (`lent`): a few megabytes at GPT-2 small's shape, 16 rows of each checked site, against
the page faults a fresh buffer would take every forward. A forward that traces inside another
(none does) gets a scratch of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from stack.kernels.host_stats import gather_rows

Key = tuple[torch.device, torch.dtype]


class Scratch:
    """Bump-allocated views of one buffer per (device, dtype), reused between forwards."""

    def __init__(self) -> None:
        self.buffers: dict[Key, torch.Tensor] = {}
        self.used: dict[Key, int] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of `shape`, a view of the buffer while it has room."""
        key, count = (device, dtype), math.prod(shape)
        start = self.used.get(key, 0)
        self.used[key] = start + count
        buffer = self.buffers.get(key)
        if buffer is None or start + count > buffer.numel():
            return torch.empty(shape, dtype=dtype, device=device)
        strides = [1] * len(shape)
        for axis in range(len(shape) - 1, 0, -1):
            strides[axis - 1] = strides[axis] * shape[axis]
        return buffer.as_strided(shape, strides, start)  # one view, not a slice and its reshape

    def rows(self, tensor: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Rows `at` of `tensor` seen as (-1, width) rows, copied into the scratch: on the host by the
        statistics kernel's library (stack.kernels.host_stats.gather_rows says why), else by torch."""
        out = self.take((at.numel(), tensor.shape[-1]), tensor.dtype, tensor.device)
        if not gather_rows(tensor, at, out):
            torch.index_select(tensor.reshape(-1, tensor.shape[-1]), 0, at, out=out)
        return out

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` copied into the scratch, contiguous."""
        return self.take(tuple(tensor.shape), tensor.dtype, tensor.device).copy_(tensor)

    def reset(self) -> None:
        """Every view handed out is free again; a buffer that was short is made as large as the
        forward wanted (after the forward, so that the next one allocates nothing)."""
        for key, count in self.used.items():
            buffer = self.buffers.get(key)
            if buffer is None or buffer.numel() < count:
                self.buffers[key] = torch.empty(count, dtype=key[1], device=key[0])
        self.used.clear()


_IDLE: list[Scratch] = []


@contextmanager
def lent() -> Iterator[Scratch]:
    """A scratch for one traced forward: the one the last forward used, or a new one."""
    scratch = _IDLE.pop() if _IDLE else Scratch()
    try:
        yield scratch
    finally:
        scratch.reset()
        _IDLE.append(scratch)
