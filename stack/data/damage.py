"""The refusal of a damaged DATA_DIR: the problem, and a fix that works.

Every reader of a DATA_DIR (the manifest, the shards, the labels, the document index, the drop
log, the tokenizer) refuses a file that does not match what prepare recorded. "Re-run `stack
prepare ... --out DATA_DIR --force`" is no fix for that, since --force refuses in its turn: it
replaces only files prepare can show it wrote, unchanged, so a corrupt manifest (which vouches
for nothing) or a shard whose bytes changed is exactly what it will not touch.

The readers stand below prepare's --force rule (stack.data.ownership imports them), so a
`Damaged` refusal carries the directory and its problem and says the fix that always works, a
new --out. The command line, which stands above both, asks the rule whether --force would take
the directory as it is and names that fix instead (stack.data.ownership.remedy, called by
stack.cli.describe).
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput

# What every fix needs that prepare does not keep: the inputs it read and the options it had.
AGAIN = "stack prepare ..."


class Damaged(BadInput):
    """A DATA_DIR file that is not what prepare recorded: `problem`, then the fix.

    `force_refused`: why --force would refuse the directory, when the reader knows already (a
    manifest that cannot be read vouches for nothing)."""

    def __init__(self, data_dir: Path, problem: str, force_refused: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.problem = problem
        self.force_refused = force_refused
        super().__init__(f"{problem}; prepare it again into a new directory (`{AGAIN} --out NEW_DIR`)")
