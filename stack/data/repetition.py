"""How much a text repeats itself: the compressed size over the raw size, zlib at level 9.

A stretch said again costs zlib a back-reference of a few bytes, so a loop ("region region
region", one sentence over and over) compresses to a few per cent of its size, while text that
only has a small alphabet or vocabulary (DNA, a two-word grammar, digits) still costs about its
entropy. The one definition read by the prepare diversity filter (stack.data.filters.diversity)
and the mixture policy's source profiles (stack.data.policy, GATE-DATA-011).
"""

from __future__ import annotations

import zlib

LEVEL = 9


def compression_ratio(data: bytes) -> float:
    """zlib's compressed size over `data`'s size (0.0 for no data)."""
    return len(zlib.compress(data, LEVEL)) / len(data) if data else 0.0
