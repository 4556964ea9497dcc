"""sha256 helpers shared by prepare, the readers and the metrics the training loop records."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def batch_sha256(batch: torch.Tensor) -> str:
    """Hex sha256 of a batch's token ids as contiguous int64 bytes.

    Metrics carry this so that two runs (or a run and its resumption) can be compared batch by
    batch without storing the batches; int64 is fixed so the hash does not depend on the dtype
    a caller happened to cast to.
    """
    import torch

    ids = batch.detach().to(device="cpu", dtype=torch.int64).contiguous()
    return hashlib.sha256(memoryview(ids.numpy()).cast("B")).hexdigest()


def ids_sha256(ids: np.ndarray) -> str:
    """Hex sha256 of window ids as little-endian int64: the fingerprint of a planned step."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()
