"""Windows: seq_len+1 consecutive tokens, numbered across a split's shards for a vectorised gather.

Shard k holds n_k = (tokens_k - 1) // seq_len windows starting every seq_len tokens, so
consecutive windows share one token and together cover every target exactly once. Windows are
numbered shard by shard in the manifest's order (source, then path); a source's windows are
therefore one contiguous range of ids. Each shard is seen through a strided (n_k, seq_len+1)
view of its memory map, so gathering a batch is one fancy index per shard, never a loop per row.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from stack.data.shards import MappedShard


class WindowTable:
    """Every window of one split (or of some of its sources), by global id."""

    def __init__(self, shards: list[MappedShard], seq_len: int) -> None:
        self.seq_len = seq_len
        self.views: list[np.ndarray] = []
        self.tokens: list[np.ndarray] = []
        self.ranges: dict[str, tuple[int, int]] = {}
        self.tokens_by_source: dict[str, int] = {}
        counts = []
        for shard in shards:
            tokens = np.asarray(shard.tokens)  # a plain ndarray view: memmap's subclass hooks cost time
            self.tokens.append(tokens)
            n = max(0, (len(tokens) - 1) // seq_len)
            step = tokens.strides[0]
            # A shard too short for one window gets an empty view: a strided view seq_len+1 wide
            # would overflow numpy's sizes for a seq_len near 2**63, and it is never gathered from.
            self.views.append(
                as_strided(tokens, shape=(n, seq_len + 1), strides=(seq_len * step, step), writeable=False)
                if n
                else tokens[:0].reshape(0, 0)
            )
            source = shard.entry.source
            lo = sum(counts)
            self.ranges[source] = (self.ranges.get(source, (lo, lo))[0], lo + n)
            self.tokens_by_source[source] = self.tokens_by_source.get(source, 0) + shard.entry.tokens
            counts.append(n)
        self.base = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self.total = int(self.base[-1])

    def _shard_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.base, ids, side="right") - 1

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """The windows with these global ids, as an int64 array (len(ids), seq_len + 1)."""
        if len(self.views) == 1:
            return self.views[0][ids].astype(np.int64)
        out = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
        shard = self._shard_of(ids)
        for k in np.unique(shard):
            rows = shard == k
            out[rows] = self.views[k][ids[rows] - self.base[k]]
        return out

    def reference_windows(self, ids: np.ndarray) -> np.ndarray:
        """The same windows as `gather`, sliced one by one straight from the shards' tokens.

        A second, deliberately plain path: GATE-DATA-001 compares what the reader served with
        this, so a gather that returns placeholders cannot vouch for itself.
        """
        out = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
        for row, window in enumerate(ids.tolist()):
            shard = int(np.searchsorted(self.base, window, side="right")) - 1
            start = (window - int(self.base[shard])) * self.seq_len
            out[row] = self.tokens[shard][start : start + self.seq_len + 1]
        return out
