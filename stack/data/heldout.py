"""The held-out set: a fixed, deterministic list of batches from the held-out split.

The windows are spread evenly over the whole split (ids i * W // (N * B) for W windows), so the
set covers every source and shard in proportion and needs no seed: every run, and every
evaluation within a run, judges exactly the same tokens. N defaults to GATE-EVAL-001's
`min_heldout_batches` (contracts.heldout, the rule GATE-EVAL-002's check asked holds a run to).
A split of fewer windows than the set holds is handed out whole, one window a batch, to the
training loop, and so are the windows of a set that lands on the split's own copies (a document
or example written twice is held out with its first), as contracts.heldout shapes the set:
whether its loss is precise enough for early stopping is GATE-EVAL-001's to judge at each
evaluation, and a set that is not trains with early stopping off.

What a run evaluates is checked against that choice (GATE-DATA-005, `check_heldout`): every
table of every held-out batch (the tokens; a fine-tuning batch's labels) must be the held-out
split's windows at these ids, read one by one from the split's own shards. A set read from the
train split, or labels taken one window off, is refused before the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_require, measure
from contracts.heldout import heldout_set_batches, heldout_set_shape
from contracts.spec import load_spec
from stack.data import mixture
from stack.data.filters.settings import dedup_flags
from stack.data.manifest import Manifest, load_manifest
from stack.data.shards import open_split
from stack.data.split import read_index
from stack.data.windows import WindowTable

if TYPE_CHECKING:
    import torch

    from stack.data.reader import TokenReader


def heldout_batches(
    data_dir: Path | str,
    batch_size: int,
    seq_len: int,
    n_batches: int | None = None,
    *,
    exclude: list[str] | None = None,
    knobs: Knobs | None = None,
) -> list[torch.Tensor]:
    """N (batch_size, seq_len + 1) int64 batches of held-out windows, the same on every call: the
    batches of `heldout_windows`, as tensors."""
    import torch

    windows = heldout_windows(data_dir, batch_size, seq_len, n_batches, exclude=exclude, knobs=knobs)
    return list(torch.from_numpy(windows).unbind(0))


def heldout_windows(
    data_dir: Path | str,
    batch_size: int,
    seq_len: int,
    n_batches: int | None = None,
    *,
    exclude: list[str] | None = None,
    knobs: Knobs | None = None,
) -> np.ndarray:
    """The held-out set as an (N, batch_size, seq_len + 1) int64 array. For the training loop
    (`knobs` judged, the default) a split smaller than the set is the set, whole, as (W, 1,
    seq_len + 1); for a lens, or a split with no window, it is refused with advice in the words of
    `knobs`. Without torch, so that `stack prepare` can size its split against the presets."""
    minimum = int(load_spec().threshold("GATE-EVAL-001", "min_heldout_batches"))
    n = heldout_set_batches(n_batches, minimum)
    if n < 1 or batch_size < 1 or seq_len < 1:
        raise BadInput(f"n_batches={n}, batch_size={batch_size} and seq_len={seq_len} must be >= 1")
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    table, tokens = _heldout_table(data_dir, manifest, seq_len, exclude)
    need = n * batch_size
    knobs = knobs or TRAINING_KNOBS
    if knobs.judged and table.total >= need:
        return _shaped(_drawn(table, n, batch_size), n_batches, minimum, table.total)
    if table.total < need and knobs.judged and table.total:
        return _drawn(table, table.total, 1)
    if table.total < need:
        fits, most = table.total // n, table.total // batch_size
        shortfall = Shortfall(table.total, n, batch_size, manifest.sft is not None, fits, most)
        raise BadInput(
            f"the held-out split of {data_dir} has {tokens} tokens, {table.total} windows of {seq_len + 1}; "
            f"{n} batches of {batch_size} need {need}: {shortfall.advice(knobs)}"
        )
    return _drawn(table, n, batch_size)


def _heldout_table(
    data_dir: Path, manifest: Manifest, seq_len: int, exclude: list[str] | None
) -> tuple[WindowTable, int]:
    """The held-out split's windows of `seq_len` + 1 (of the sources not in `exclude`), and its tokens."""
    mixture.check_known("exclude", exclude or [], manifest.sources)
    shards = [
        s for s in open_split(data_dir, manifest, "heldout") if s.entry.source not in set(exclude or [])
    ]
    read_index(data_dir / manifest.documents.path)
    return WindowTable(shards, seq_len), sum(s.entry.tokens for s in shards)


def _shaped(drawn: np.ndarray, asked: int | None, minimum: int, split_windows: int) -> np.ndarray:
    """The training loop's set of the `drawn` windows, shaped as contracts.heldout.heldout_set_shape
    says: as drawn, or, where they land on the split's own copies more than GATE-EVAL-001 lets a
    set of their batches hold, the same windows one a batch."""
    size = drawn.shape[1]
    distinct = set_size_measured(list(drawn))["distinct_windows"]
    shape = heldout_set_shape(asked, minimum, split_windows, size, distinct)
    return drawn.reshape(shape[0], shape[1] or size, drawn.shape[-1])


def _drawn(table: WindowTable, n: int, batch_size: int) -> np.ndarray:
    """The set of `n` batches of `batch_size` windows spread evenly over the table (`spread_ids`)."""
    ids = spread_ids(table.total, n * batch_size)
    return table.gather(ids).reshape(n, batch_size, table.seq_len + 1)


def heldout_set_outcome(
    data_dir: Path | str, batch_size: int, seq_len: int, n_batches: int | None = None
) -> Outcome:
    """GATE-EVAL-001's outcome for the held-out set a run of these settings draws from DATA_DIR,
    judged as the training loop judges it before its first step; a split too small to draw it
    from is refused as `heldout_windows` refuses it. What `stack prepare` sizes its split by."""
    drawn = heldout_windows(data_dir, batch_size, seq_len, n_batches)
    return measure("GATE-EVAL-001", set_size_measured(list(drawn)))


def repeated_windows_remedy(
    data_dir: Path | str, batch_size: int, seq_len: int, n_batches: int | None = None
) -> str | None:
    """What to do when the held-out set a run drew from DATA_DIR has enough windows but too few
    distinct ones, or None when the set the split gives passes (then the run's own reader repeated
    them: a fault of the stack, which no setting mends). A split whose set lands on its copies is
    read one window a batch already (contracts.heldout), so what is left is a split of fewer
    distinct windows than GATE-EVAL-001 holds such a set to: a few examples, each written many
    times. A copy is held out with its first, so a larger --val-fraction holds them as well;
    dedup at prepare keeps the first of each, after which the set has no copy to land on."""
    try:
        drawn = heldout_windows(data_dir, batch_size, seq_len, n_batches)
    except BadInput:
        return None
    if measure("GATE-EVAL-001", set_size_measured(list(drawn))).ok:
        return None
    return (
        f"the held-out split of {data_dir} repeats its windows: it holds copies of documents or examples, "
        f"which land on their first's side at any --val-fraction; prepare it again with {dedup_flags()}, "
        "which keeps the first of each; or accept a smaller held-out set with --waive GATE-EVAL-001 "
        "--reason TEXT"
    )


def heldout_split_windows(data_dir: Path | str, seq_len: int) -> int:
    """The held-out split's windows of `seq_len` + 1: with the batches a run asks for, what sizes its
    set (contracts.heldout.heldout_set_batches)."""
    data_dir = Path(data_dir)
    return _heldout_table(data_dir, load_manifest(data_dir), seq_len, None)[0].total


def set_size_measured(batches: Sequence[np.ndarray]) -> dict[str, int]:
    """GATE-EVAL-001's measure of a held-out set as made: its batches, its distinct windows (two
    batches repeated eight times are two; duplicated documents repeat windows) and its batch size."""
    windows = {row.tobytes() for batch in batches for row in batch}
    return {
        "heldout_batches": len(batches),
        "distinct_windows": len(windows),
        "batch_size": int(batches[0].shape[0]) if len(batches) else 0,
    }


@dataclass(frozen=True)
class Knobs:
    """The names the command that asks for a held-out set sizes it by: its batch size, its number of
    batches and its window length; `judged`: whether GATE-EVAL-001 judges the set (the training
    loop, which evaluates a split smaller than the set whole)."""

    batch_size: str
    batches: str
    seq_len: str
    judged: bool


# A training run's window is train.seq_len, its model's context where unset.
TRAINING_KNOBS = Knobs("train.batch_size", "eval.batches", "train.seq_len", judged=True)


@dataclass(frozen=True)
class Shortfall:
    """A held-out split of `windows` windows too small for `batches` batches of `batch_size`;
    `packed`: fine-tuning data, whose windows are its pack length."""

    windows: int
    batches: int
    batch_size: int
    packed: bool
    fits: int  # the largest batch size whose `batches` the split holds (0: none)
    most: int  # the most batches of batch_size the split holds

    def advice(self, knobs: Knobs) -> str:
        """What can still move, and only that ("lower batch_size" at batch_size 1 names no key a
        user could turn): more held-out windows from the data; a smaller batch where it is above 1;
        fewer batches."""
        if self.packed:
            data = "prepare with a larger --val-fraction, more examples or a shorter --pack-len (the windows"
            moves = [f"{data} are the DATA_DIR's pack length)"]
        else:
            moves = [f"prepare with a larger --val-fraction or more text, or lower {knobs.seq_len}"]
        fits, most = self.fits, self.most
        if self.batch_size > 1 and fits:
            moves.append(lower_to(knobs.batch_size, fits))
        if self.windows:
            fewer = (
                f"lower {knobs.batches} to {most} or less"
                if most
                else f"lower {knobs.batch_size} and {knobs.batches}"
            )
            if self.batch_size > 1:
                fewer += f" ({self.windows} or less at {knobs.batch_size} 1)"
            moves.append(fewer)
        return "; or ".join(moves)


def lower_to(key: str, value: int) -> str:
    """Advice to lower `key` to `value`, which every smaller positive value passes as well."""
    return f"lower {key} to {value}" + (" or less" if value > 1 else "")


def spread_ids(total: int, need: int) -> np.ndarray:
    """`need` window ids spread evenly over `total` windows (i * total // need): the held-out choice."""
    return (np.arange(need, dtype=np.int64) * total) // need


def heldout_outcome(
    reader: TokenReader, batches: list[Any], exclude: list[str] | None = None, split: str = "heldout"
) -> Outcome:
    """GATE-DATA-005's check of a held-out set: each table of `batches` (one of `reader`'s batch
    types, stack.data.reader.TokenReader.tables_of) against the held-out split's windows (of the
    sources not in `exclude`) at the held-out ids, read the plain way (WindowTable.reference_windows).
    `split` names the set in the record: `heldout`, or `heldout:NAME` for a bandit arm's own.

    Equal to the windows at the planned ids, the batches are also where those ids say in the
    split: the first and last id and the largest step between consecutive ones, which the judge
    holds to an even spread, so a set planned over one end of the split does not pass for it."""
    tables = reader.open_tables("heldout", exclude)
    served = [reader.tables_of(batch) for batch in batches]
    rows = sum(int(tables_of["tokens"].shape[0]) for tables_of in served)
    shape = (reader.seq_len + 1,)
    shape_ok = all(
        set(tables_of) == set(tables) and all(tuple(t.shape[1:]) == shape for t in tables_of.values())
        for tables_of in served
    )
    differ = np.ones(rows, dtype=bool)
    by_table: dict[str, int] = {}
    spread: dict[str, int] = {}  # where the planned ids lie in the split (none: nothing compared)
    if shape_ok and rows and tables["tokens"].total >= rows:
        ids = spread_ids(tables["tokens"].total, rows)
        planned = {name: table.reference_windows(ids) for name, table in tables.items()}
        by_row = {
            name: (np.concatenate([t[name].numpy() for t in served]) != windows).any(axis=1)
            for name, windows in planned.items()
        }
        by_table = {name: int(np.count_nonzero(d)) for name, d in by_row.items()}
        differ = np.logical_or.reduce(list(by_row.values()))
        spread = {
            "split_windows": int(tables["tokens"].total),
            "first_id": int(ids[0]),
            "last_id": int(ids[-1]),
            "max_gap": int(np.diff(ids).max()) if len(ids) > 1 else 1,
        }
    measured = {
        "heldout_windows": rows,
        "heldout_windows_mismatched": int(np.count_nonzero(differ)),
        "mismatched_by_table": by_table,
        "split": split,
        **spread,
    }
    return measure("GATE-DATA-005", measured, holds=f"the {rows} {split} windows are the held-out split's")


@gate_require(
    "GATE-DATA-005",
    lambda reader, batches, exclude=None, split="heldout": heldout_outcome(reader, batches, exclude, split),
)
def check_heldout(
    reader: TokenReader, batches: list[Any], exclude: list[str] | None = None, split: str = "heldout"
) -> None:
    """Refuse to evaluate on held-out batches that are not the held-out split's planned windows."""
