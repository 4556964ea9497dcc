"""What a trace dump (`stack trace --dump`) keeps of each site, as its format defines it.

It lives in the contracts, apart from the writer (stack.trace.dump), so the check that a dump's
stored elements are the traced site's does not share the writer's indexing: a writer that keeps a
large site's first elements instead of its evenly spaced ones writes a dump whose every statistic
is right, and `--compare` of it against a correct dump of the same model names a divergence at
the logits. GATE-TRACE-002's check dump holds every written dump to it.

* A site of at most `limit` elements is kept whole; a larger one as the `limit` elements at flat
  positions round(i · (numel − 1) / (limit − 1)), i = 0 … limit − 1 (no position falls on a half,
  since limit − 1 is odd, so the rounding has no ties).
* The kept values are little-endian float32 in base64 (float64 for a float64 site).
"""

from __future__ import annotations

import base64
import sys
from array import array


def kept_positions(numel: int, limit: int) -> list[int]:
    """The flat positions a dump keeps of a site of `numel` elements, in exact integer arithmetic."""
    if numel <= limit:
        return list(range(numel))
    span = limit - 1
    return [(2 * i * (numel - 1) + span) // (2 * span) for i in range(limit)]


def stored_values(text: str, dtype: str) -> list[float]:
    """The values a dump site's base64 text holds, read as the format says (float64 or float32,
    little-endian)."""
    values = array("d" if dtype == "float64" else "f", base64.b64decode(text))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()
