"""A token shard's byte layout: a fixed header, then the ids, little-endian.

One home for the writer (stack.data.shards packs and verifies it) and for the integrity check,
which holds every shard a manifest lists to it: a manifest whose token count is not what its
shard's bytes can hold restates the shard wrongly, whether or not the shard is at hand.
"""

from __future__ import annotations

import struct

# magic, format version, bytes per token id, tokens, documents: 32 bytes
HEADER = struct.Struct("<8sIIQQ")


def shard_bytes(tokens: int, itemsize: int) -> int:
    """The size of a shard of `tokens` ids of `itemsize` bytes each."""
    return HEADER.size + tokens * itemsize
