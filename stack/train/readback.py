"""A step's measurements on their way to the host, read without waiting for the work queued after.

`tensor.tolist()` on a GPU waits for everything queued on the stream, so a loop that has queued
the next step's forward before reading this step's loss would wait for that forward too. A
`Readback` copies the tensor into page-locked host memory as the stream reaches it and records an
event there; `values()` waits for that event only, which the work queued before the copy (this
step's backward, its clip, its reduction) bounds. On the host there is nothing to wait for.
"""

from __future__ import annotations

import torch


class Readback:
    """`tensor`'s values, copied to the host as the stream reaches this point (`values` reads them)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.event: torch.cuda.Event | None = None
        if tensor.is_cuda:
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:  # the host's own memory, or a device whose copy waits anyway
            self.host = tensor.detach().to("cpu", copy=True)

    def values(self) -> list[float]:
        """The values, once the copy is done."""
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()
