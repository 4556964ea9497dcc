"""Preference pairs for the DPO tests: a file of distinct arithmetic pairs, and it prepared.

tests/data/prefs_small.jsonl holds 12 pairs: too few for a held-out set of GATE-EVAL-001's 16
batches. These pairs are many and short, so a held-out split of half of them is large enough
for batches of one pair, and the rows fit a context of 64.
"""

from __future__ import annotations

import json
from pathlib import Path

from stack.cli import main


def write_pairs(path: Path, count: int = 64) -> Path:
    """`count` distinct pairs {prompt, chosen, rejected}: a sum, its answer, a wrong one."""
    lines = []
    for i in range(count):
        a, b = divmod(i, 8)
        record = {"prompt": f"Q: {a}+{b}? A:", "chosen": f" {a + b}.", "rejected": f" {a + b + 1}, maybe."}
        lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    return path


def prepared_pairs(root: Path, count: int = 64) -> Path:
    """A byte-level DATA_DIR of `stack prepare --format prefs`, half of it held out."""
    pairs, data = write_pairs(root / "pairs.jsonl", count), root / "pairs-data"
    argv = ["prepare", str(pairs), "--format", "prefs", "--pack-len", "32", "--val-fraction", "0.5"]
    assert main([*argv, "--out", str(data)]) == 0
    return data
