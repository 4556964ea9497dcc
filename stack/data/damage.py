"""What a reader tells the user to do with a damaged DATA_DIR: one fix, and one that works.

Every reader of a DATA_DIR (the manifest, the shards, the labels, the document index, the drop
log, the tokenizer) refuses a file that does not match what prepare recorded. Each used to say
"re-run `stack prepare ... --out DATA_DIR --force`", and --force then refused in its turn: it
replaces only files prepare can show it wrote, unchanged, so a corrupt manifest (which vouches
for nothing) or a shard whose bytes changed is exactly what it will not touch. The advice is
made here, once, by asking prepare's own --force rule (stack.data.ownership.claim) whether it
would take this DATA_DIR as it is: --force when it would, else a new --out (or moving DATA_DIR
away first), with the reason --force would give.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput

# What every fix needs that prepare does not keep: the inputs it read and the options it had.
AGAIN = "stack prepare ..."


class Damaged(BadInput):
    """A DATA_DIR file that is not what prepare recorded: the problem, then the fix (`remedy`).

    `problem` alone is kept for a refusal that quotes it (prepare's own, which gives its fix)."""

    def __init__(self, data_dir: Path, problem: str, force_refused: str | None = None) -> None:
        self.problem = problem
        super().__init__(f"{problem}; {remedy(data_dir, force_refused)}")


def remedy(data_dir: Path, force_refused: str | None = None) -> str:
    """The fix for a damaged `data_dir` that `stack prepare` accepts: --force when prepare's --force
    rule takes the directory as it is, else a new --out or moving it away. `force_refused`: why
    --force would refuse, when the caller knows already (a manifest that cannot be read)."""
    data_dir = Path(data_dir)
    refused = force_refused if force_refused is not None else _force_refusal(data_dir)
    if refused is None:
        return f"prepare it again over it: `{AGAIN} --out {data_dir} --force`"
    return (
        f"prepare it again into a new directory (`{AGAIN} --out NEW_DIR`), or move {data_dir} away "
        f"and prepare it there again; --force would not replace it: {refused}"
    )


def _force_refusal(data_dir: Path) -> str | None:
    """Why `stack prepare ... --out DATA_DIR --force` would refuse `data_dir` as it is now, whatever
    its sources and tokenizer (every shard and the tokenizer file counted as its to write); None
    when it would replace what it finds."""
    from stack.data.ownership import claim  # prepare's own rule; it reads manifests through here
    from stack.data.shards import SHARD_DIR, SHARD_NAME

    shards = data_dir / SHARD_DIR
    names = [path.name for path in shards.iterdir()] if shards.is_dir() and not shards.is_symlink() else []
    sources = {match[2] for name in names if (match := SHARD_NAME.match(f"{SHARD_DIR}/{name}"))}
    try:
        claim(data_dir, True, sources, bpe=True)
    except BadInput as exc:
        return exc.problem if isinstance(exc, Damaged) else str(exc).rsplit("; ", 1)[0]
    return None
