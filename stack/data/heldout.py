"""The held-out set: a fixed, deterministic list of batches from the held-out split.

The windows are spread evenly over the whole split (ids i * W // (N * B) for W windows), so the
set covers every source and shard in proportion and needs no seed: every run, and every
evaluation within a run, judges exactly the same tokens. N defaults to GATE-EVAL-001's
`min_heldout_batches`. A smaller N is handed out when asked for: judging whether it may be used
is GATE-EVAL-001's binding in the training loop, where a user can waive it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contracts.errors import BadInput
from contracts.spec import load_spec
from stack.data import mixture
from stack.data.manifest import load_manifest
from stack.data.shards import open_split
from stack.data.split import read_index
from stack.data.windows import WindowTable

if TYPE_CHECKING:
    import torch


def heldout_batches(
    data_dir: Path | str,
    batch_size: int,
    seq_len: int,
    n_batches: int | None = None,
    *,
    exclude: list[str] | None = None,
) -> list[torch.Tensor]:
    """N (batch_size, seq_len + 1) int64 batches of held-out windows, the same on every call."""
    import torch

    n = int(load_spec().threshold("GATE-EVAL-001", "min_heldout_batches")) if n_batches is None else n_batches
    if n < 1 or batch_size < 1 or seq_len < 1:
        raise BadInput(f"n_batches={n}, batch_size={batch_size} and seq_len={seq_len} must be >= 1")
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    mixture.check_known("exclude", exclude or [], manifest.sources)
    shards = [
        s for s in open_split(data_dir, manifest, "heldout") if s.entry.source not in set(exclude or [])
    ]
    read_index(data_dir / manifest.documents.path)
    table = WindowTable(shards, seq_len)
    need = n * batch_size
    if table.total < need:
        tokens = sum(s.entry.tokens for s in shards)
        raise BadInput(
            f"the held-out split of {data_dir} has {tokens} tokens, {table.total} windows of {seq_len + 1}; "
            f"{n} batches of {batch_size} need {need}: prepare with a larger --val-fraction or more text, "
            "or lower batch_size / seq_len"
        )
    ids = spread_ids(table.total, need)
    tokens = torch.from_numpy(table.gather(ids).reshape(n, batch_size, seq_len + 1))
    return list(tokens.unbind(0))


def spread_ids(total: int, need: int) -> np.ndarray:
    """`need` window ids spread evenly over `total` windows (i * total // need): the held-out choice."""
    return (np.arange(need, dtype=np.int64) * total) // need
