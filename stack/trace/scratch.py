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

from stack.kernels.host_stats import copy_rows

Key = tuple[torch.device, torch.dtype]


class Scratch:
    """Bump-allocated views of one buffer per (device, dtype), reused between forwards."""

    def __init__(self) -> None:
        self.buffers: dict[Key, torch.Tensor] = {}
        self.used: dict[Key, int] = {}
        # The views handed out, by (buffer, offset, shape): a forward of the same model and input
        # asks for the same ones in the same order, and a dictionary lookup costs a fraction of
        # making the view again between the forward's products. They alias the buffer as any new
        # view at that place would; they go when it is replaced.
        self.views: dict[tuple[Key, int, tuple[int, ...]], torch.Tensor] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of `shape`, a view of the buffer while it has room."""
        key, count = (device, dtype), math.prod(shape)
        start = self.used.get(key, 0)
        self.used[key] = start + count
        view = self.views.get((key, start, shape))
        if view is not None:
            return view
        buffer = self.buffers.get(key)
        if buffer is None or start + count > buffer.numel():
            return torch.empty(shape, dtype=dtype, device=device)
        strides = [1] * len(shape)
        for axis in range(len(shape) - 1, 0, -1):
            strides[axis - 1] = strides[axis] * shape[axis]
        view = self.views[key, start, shape] = buffer.as_strided(shape, strides, start)
        return view

    def rows(self, tensor: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Rows `at` of `tensor` seen as (-1, width) rows, copied into the scratch."""
        out = self.take((at.numel(), tensor.shape[-1]), tensor.dtype, tensor.device)
        copy_rows(tensor, at, out)
        return out

    def copy(self, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`tensor` copied into the scratch, contiguous, in `dtype` (default: its own)."""
        return self.take(tuple(tensor.shape), dtype or tensor.dtype, tensor.device).copy_(tensor)

    def reset(self) -> None:
        """Every view handed out is free again; a buffer that was short is made as large as the
        forward wanted (after the forward, so that the next one allocates nothing)."""
        for key, count in self.used.items():
            buffer = self.buffers.get(key)
            if buffer is None or buffer.numel() < count:
                self.buffers[key] = torch.empty(count, dtype=key[1], device=key[0])
                self.views = {place: view for place, view in self.views.items() if place[0] != key}
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
