"""How a long list goes into a one-line message: its first few items and how many more.

A gate's problem line or a refusal names the items at fault, but a corpus can hold thousands of them;
one helper keeps every such line the same shape (`a, b, c and 12 more`) and short enough to read.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_few(items: Sequence[object], shown: int = 5, sep: str = ", ") -> str:
    """The first `shown` items joined by `sep`, then ` and N more` when some are left out."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return sep.join(map(str, items[:shown])) + more
