"""Where fine-tuning examples go in packed windows: the greedy rule, apart from the stack's packer
(stack.data.sft_prepare.pack).

Examples are packed whole, in order, into windows of `pack_len` tokens: an example goes into the
current window when it fits the room left (the tokens used plus its own at most pack_len), else the
rest of the window is padding and the example opens the next one. The tables then hold every window
and one trailing token the last window reads past. A packer that opens a new window one token early
pads out a window an example exactly fills, and leaves an all-padding window before an example
exactly pack_len long: more padding, other windows, and every gate that counts supervision passes.
GATE-SFT-001's check packed holds the tables as written to this rule from the examples' lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The rows of a preference pair's window (chosen, then rejected), each of --pack-len tokens: a
# `--format prefs` manifest's pack_len is this many times the --pack-len asked.
PAIR_ROWS = 2


@dataclass(frozen=True)
class Packing:
    """The greedy packing of some examples: each one's first position in the tables, the windows
    they fill, and the tables' length (every window, then the token the last one reads past)."""

    starts: list[int]
    windows: int
    tokens: int


def greedy_packing(lengths: Sequence[int], pack_len: int) -> Packing:
    """Examples of `lengths` tokens, in order, packed greedily into windows of `pack_len`."""
    starts: list[int] = []
    used, windows = pack_len, 0  # a full window before the first: the first example opens one
    for length in lengths:
        if used + length > pack_len:
            used, windows = 0, windows + 1
        starts.append((windows - 1) * pack_len + used)
        used += length
    return Packing(starts, windows, windows * pack_len + 1)
