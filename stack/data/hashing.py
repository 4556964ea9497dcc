"""sha256 helpers shared by prepare, the readers and the metrics the training loop records."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from contracts.plan import int64_sha256

if TYPE_CHECKING:
    import torch


def batch_sha256(batch: torch.Tensor) -> str:
    """Hex sha256 of a batch's token ids, as contracts.plan defines a batch's fingerprint.

    Metrics carry this so that two runs (or a run and its resumption) can be compared batch by
    batch without storing the batches, and GATE-DATA-001 holds it to the planned windows' own.
    """
    import torch

    return int64_sha256(batch.detach().to(device="cpu", dtype=torch.int64).numpy())


def ids_sha256(ids: np.ndarray) -> str:
    """Hex sha256 of window ids as little-endian int64: the fingerprint of a planned step."""
    return int64_sha256(ids)
