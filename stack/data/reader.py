"""TokenReader: (B, T+1) int64 windows whose order is a pure function of the run's coordinates.

Order. Each epoch is a seeded permutation of window ids (see mixture.epoch_plan), the one
contracts.plan defines for the reader's seed and the epoch: every plan the reader makes is drawn
again from that definition and compared by digest, and measured for a shuffle afresh each epoch
(GATE-DATA-002). Global step i of an epoch takes ids plan[i*B*W : (i+1)*B*W]; rank r takes the
r-th block of B of them, so the ranks of a data-parallel run read disjoint windows. The batch at
any (seed, epoch, step, rank, world size) can be recomputed without replaying the steps before
it, which is what makes `load_state_dict` exact (GATE-DATA-002).

End of an epoch. With wrap=True the reader logs and moves to epoch+1; with wrap=False it
raises CorpusExhausted. It never serves anything that is not the planned next batch
(GATE-DATA-001): every epoch plan is checked to be a permutation of the sources' quotas (each
window of a source as often as its weight says, `quota_outcome`), every gathered chunk to be
the successor of the last one, inside the epoch, and to hold the planned windows token for
token; and the training loop checks every batch it hands the model, each of its tables (the
tokens, and a fine-tuning batch's labels), against the planned windows of its step read the
plain way (`check_served`).

Sources served. Every batch's global window ids are counted per source (`take_served`), so the
training loop can log the realised shares of each evaluation window and a mixture policy can
be judged against what was actually read (GATE-DATA-008).

Speed. Batches are gathered a chunk at a time (about CHUNK_TOKENS tokens), one vectorised
gather per shard, and the gate checks run once per chunk, so their fixed cost is spread over
several batches.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.plan import int64_sha256, share_weights, step_sha256
from stack.data import mixture
from stack.data.hashing import ids_sha256
from stack.data.manifest import SPLITS, load_manifest
from stack.data.shards import MappedShard, open_split
from stack.data.split import read_index
from stack.data.windows import WindowTable

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Batches are gathered and checked in chunks of about this many tokens: enough batches to spread
# the fixed cost of a gate check, few enough that a chunk stays near the CPU's caches.
CHUNK_TOKENS = 1 << 20


class CorpusExhausted(Exception):
    """The reader reached the end of an epoch and was told not to wrap (wrap=False)."""


class ReaderState(BaseModel):
    """What `state_dict` returns: enough to recompute the stream from the next step on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    manifest_sha256: str
    split: str
    seed: int = Field(ge=0)
    epoch: int = Field(ge=0)
    index: int = Field(ge=0)  # batches served in this epoch
    step: int = Field(ge=0)  # batches served since the start of the run
    batch_size: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    world_size: int = Field(ge=1)
    source_weights: dict[str, float]
    source_caps: dict[str, int]
    next_sha256: str  # sha256 of the global window ids of the next step


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if not isinstance(value, int) or value < minimum:
        raise BadInput(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def coverage_outcome(tables: dict[str, WindowTable]) -> Outcome:
    """GATE-DATA-001's check on the windows the reader numbered, before any is served: in every
    table, shard k's windows cover its targets 1..n_k·T, so the targets left at its end, (tokens −
    1) − n_k·T, are fewer than the T a window holds and never negative. Read from the views the
    table gathers from, so a table that numbers one window too few (or too many) per shard, which
    every later check takes as the split's, shows here."""
    left = [
        len(tokens) - 1 - len(view) * table.seq_len
        for table in tables.values()
        for tokens, view in zip(table.tokens, table.views, strict=True)
        if len(tokens) > table.seq_len
    ]
    seq_len = next(iter(tables.values())).seq_len
    measured = {
        "covered_shards": len(left),
        "uncovered_fewest": min(left, default=0),
        "uncovered_most": max(left, default=0),
        "window_targets": seq_len,
    }
    return measure("GATE-DATA-001", measured, holds="the windows cover every shard's targets")


@gate_require("GATE-DATA-001", lambda tables: coverage_outcome(tables))
def check_coverage(tables: dict[str, WindowTable]) -> None:
    """Refuse windows that leave a window's worth of a shard's targets unread, or read past it."""


def chunk_outcome(reader: TokenReader, epoch: int, first: int, result: list[torch.Tensor]) -> Outcome:
    """GATE-DATA-001's check on a gathered chunk: the planned successor, inside its epoch, real tokens.

    Every token of every window is compared with the shards: a batch that keeps each window's
    first token and fills the rest with padding is as much a placeholder as a zero batch.
    """
    last_epoch, last_end = reader._loaded_until
    follows = (epoch, first) == (last_epoch, last_end) or (
        (epoch, first) == (last_epoch + 1, 0) and last_end >= reader.steps_per_epoch
    )
    shape = (reader.batch_size, reader.seq_len + 1)
    shape_ok = bool(result) and {(tuple(b.shape), b.dtype) for b in result} == {(shape, torch.int64)}
    mismatched = 0
    if shape_ok and 0 <= first < reader.steps_per_epoch:
        served = torch.cat(result).numpy()
        planned = reader._table.reference_windows(reader._rank_ids(epoch, first, len(result)))
        mismatched = int(np.count_nonzero((served != planned).any(axis=1)))
    measured = {
        "epoch": epoch,
        "step_in_epoch": first,
        "steps_per_epoch": reader.steps_per_epoch,
        "follows": follows,
        "shape_ok": shape_ok,
        "windows_mismatched": mismatched,
    }
    return measure("GATE-DATA-001", measured, holds="planned batches served")


def planned_step_ids(reader: TokenReader, epoch: int, index: int, seed: int) -> np.ndarray:
    """Every rank's window ids at step `index` of `epoch`, in rank order, sliced straight from the
    epoch's plan of the run's `seed`: global step i takes plan[i*B*W : (i+1)*B*W]. Written out
    here rather than read through `_global_ids`, and from the checks' own plan (`defined_plan`),
    never the reader's cache, so the served checks share no code with what they check (a reader
    handed another seed serves a stream the run's seed never planned)."""
    per_step = reader.batch_size * reader.world_size
    return defined_plan(reader, seed, epoch)[index * per_step : (index + 1) * per_step]


def defined_plan(reader: TokenReader, seed: int, epoch: int) -> np.ndarray:
    """The plan `seed` defines for `epoch` under the reader's mixture (contracts.plan, through
    mixture.epoch_plan), drawn here once per epoch and mixture and kept apart from the plan the
    reader serves from: a reader that keeps serving an old epoch's plan (a cache keyed wrongly)
    serves windows this plan does not hold, at the first step of the next epoch."""
    kept = reader.checked_plan
    if kept is None or kept[0] != seed or kept[1] != epoch or kept[2] is not reader._mixture:
        kept = reader.checked_plan = (
            seed,
            epoch,
            reader._mixture,
            mixture.epoch_plan(reader._mixture, seed, epoch),
        )
    return kept[3]


def planned_ids(reader: TokenReader, epoch: int, index: int, seed: int) -> np.ndarray:
    """This rank's window ids at step `index` of `epoch`: rank r takes the r-th B of the step's."""
    start = reader.rank * reader.batch_size
    return planned_step_ids(reader, epoch, index, seed)[start : start + reader.batch_size]


def planned_sha256(reader: TokenReader, seed: int) -> str:
    """The fingerprint (contracts.plan.int64_sha256) of the global batch the step just served
    holds by the plan of the run's `seed`: the token windows, all T+1 columns, at every rank's
    planned ids in rank order, read the plain way from the tokens table (a fine-tuning batch's
    tokens are that table too). What a step's logged `batch_sha256` is held to (`check_fingerprint`)."""
    ids = planned_step_ids(reader, reader.epoch, reader._index - 1, seed)
    return int64_sha256(reader._table.reference_windows(ids))


def differing_rows(served: dict[str, torch.Tensor], planned: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per table, which rows of `served` differ from the `planned` windows (both (n, T+1))."""
    return {name: (served[name].numpy() != windows).any(axis=1) for name, windows in planned.items()}


def served_outcome(reader: TokenReader, batch: Any, ordinal: int, seed: int) -> Outcome:
    """GATE-DATA-001's check on what the model is handed: each table of the (B, T+1) batch the
    reader just served (its tokens; a fine-tuning batch's labels too, which hold its targets and
    document ids), against that step's planned windows of the split's tables read the plain way
    at the ids sliced from the plan of the run's `seed` (`planned_ids`), and the reader's count of
    batches served against `ordinal`, the run's own count of batches taken (1-based).

    The chunk check vouches for what was gathered; this one for what left the reader, so a
    `next_batch` that hands out a placeholder, one batch of its chunk over and over, or the labels
    of another step beside the right tokens, is caught at the step it does so. The two counts tie
    the reader's place to the run's: a stream that restarted after a resume (or skipped ahead)
    serves its own planned windows, the wrong ones for the run's step. The training loop calls it
    on every micro-batch it takes, on the host, while the device runs that batch's kernels.
    """
    epoch, index = reader.epoch, reader._index - 1  # the step just served
    served = reader.tables_of(batch)
    shape = (reader.batch_size, reader.seq_len + 1)
    shape_ok = served.keys() == reader._tables.keys() and all(
        tuple(t.shape) == shape and t.dtype == torch.int64 for t in served.values()
    )
    by_table: dict[str, int] = {}
    mismatched = 0
    if shape_ok and 0 <= index < reader.steps_per_epoch:
        ids = planned_ids(reader, epoch, index, seed)
        rows = differing_rows(served, {n: t.reference_windows(ids) for n, t in reader._tables.items()})
        by_table = {name: int(np.count_nonzero(differ)) for name, differ in rows.items()}
        mismatched = int(np.count_nonzero(np.logical_or.reduce(list(rows.values()))))
    measured = {
        "epoch": epoch,
        "step_in_epoch": index,
        "steps_per_epoch": reader.steps_per_epoch,
        "follows": 0 <= index < reader.steps_per_epoch,
        "shape_ok": shape_ok,
        "windows_mismatched": mismatched,
        "mismatched_by_table": by_table,
        "served_batches": reader.step,
        "taken_batches": ordinal,
    }
    return measure("GATE-DATA-001", measured, holds="the planned batch handed to the model")


@gate_require(
    "GATE-DATA-001", lambda reader, batch, ordinal, seed: served_outcome(reader, batch, ordinal, seed)
)
def check_served(reader: TokenReader, batch: Any, ordinal: int, seed: int) -> None:
    """Refuse to train on a batch whose tables are not the planned windows of the run's `ordinal`-th."""


def fingerprint_outcome(logged: str, planned: list[str], step: int) -> Outcome:
    """GATE-DATA-001's check on a step's fingerprint: the `batch_sha256` its metrics line logs
    against contracts.plan's fingerprint of the step's planned windows (`planned_sha256` of each
    micro-batch, combined by `step_sha256`), so the hash that two runs, a resume or a replay are
    compared by is of what the plan says the model was served, every column and every rank's rows."""
    measured = {
        "logged_batch_sha256": logged,
        "planned_batch_sha256": step_sha256(planned),
        "fingerprinted_step": step,
    }
    return measure(
        "GATE-DATA-001", measured, step=step, holds="the step's logged batch_sha256 is its planned windows'"
    )


@gate_require("GATE-DATA-001", fingerprint_outcome)
def check_fingerprint(logged: str, planned: list[str], step: int) -> None:
    """Refuse a step line whose `batch_sha256` is not the fingerprint of the step's planned windows."""


def restore_outcome(reader: TokenReader, state: dict[str, Any]) -> Outcome:
    """GATE-DATA-002's check after a restore: the next step is the one the saved reader would take."""
    reweighted = reader._mixture.weights != state["source_weights"]  # excluded sources lost their weight
    measured = {
        "reweighted": reweighted,
        "restored_next_sha256": ids_sha256(reader._next_global_ids()),
        "saved_next_sha256": state["next_sha256"],
        "epoch": reader.epoch,
        "step_in_epoch": reader._index,
    }
    return measure("GATE-DATA-002", measured, holds="restored stream continues the saved one")


class TokenReader:
    """Batches of (batch_size, seq_len + 1) token windows of one split of a prepared DATA_DIR."""

    def __init__(
        self,
        data_dir: Path | str,
        split: str = "train",
        *,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        wrap: bool = True,
        source_weights: dict[str, float] | None = None,
        exclude: list[str] | None = None,
        source_caps: dict[str, int] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise BadInput(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.batch_size = _positive("batch_size", batch_size)
        self.seq_len = _positive("seq_len", seq_len)
        self.seed = _positive("seed", seed, minimum=0)
        self.world_size = _positive("world_size", world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise BadInput(f"rank={rank!r} must be in 0..{world_size - 1} for world_size={world_size}")
        self.rank, self.wrap, self.split = rank, wrap, split
        self.data_dir = Path(data_dir)
        self.manifest = load_manifest(self.data_dir)
        shards = open_split(self.data_dir, self.manifest, split)
        read_index(self.data_dir / self.manifest.documents.path)
        # Checked before any window view is built: a seq_len wider than every shard (up to 2**63)
        # must be this message, not an overflow inside numpy's strided view.
        longest = max((len(shard.tokens) for shard in shards), default=0)
        if longest <= self.seq_len:
            raise BadInput(
                f"context longer than the corpus: a window is seq_len+1 = {self.seq_len + 1} tokens but the "
                f"longest {split} shard of {self.data_dir} has {longest}; shorten the window (train.seq_len "
                "of a training run, --seq-len where a command takes one) or prepare more text"
            )
        # Every table a batch is gathered from, by name (`split_tables`); the tokens' also numbers
        # the windows and their sources.
        self._tables = self.split_tables(split, shards)
        check_coverage(self._tables)
        self._table = self._tables["tokens"]
        known = self.manifest.sources
        mixture.check_known("source_weights", source_weights or {}, known)
        mixture.check_known("exclude", exclude or [], known)
        mixture.check_some_left(exclude or [], known)
        mixture.check_known("source_caps", source_caps or {}, known)
        self.exclude = frozenset(exclude or [])
        self._chunk_batches = max(1, CHUNK_TOKENS // (self.batch_size * (self.seq_len + 1)))
        self._set_mixture(source_weights or {}, source_caps or {}, "source_weights")
        self._seek(epoch=0, index=0, step=0)
        # Sources ordered by the end of their id range, so searchsorted maps a window id to its source.
        self._by_end = sorted(self._table.ranges, key=lambda name: self._table.ranges[name][::-1])
        self._ends = np.array([self._table.ranges[name][1] for name in self._by_end], dtype=np.int64)
        self._served_windows = np.zeros(len(self._by_end), dtype=np.int64)

    # -- the pure function -------------------------------------------------------------------

    def _set_mixture(self, weights: dict[str, float], caps: dict[str, int], origin: str) -> None:
        for name, cap in caps.items():
            if not isinstance(cap, int) or cap < 0:
                raise BadInput(f"cap {cap!r} for source {name!r} must be a token count >= 0")
        effective = mixture.effective_weights(self._table.ranges, weights, self.exclude, origin)
        self._mixture = mixture.Mixture(
            ranges=dict(self._table.ranges),
            weights=effective,
            caps=dict(caps),
            excluded=self.exclude,
            seq_len=self.seq_len,
        )
        per_step = self.batch_size * self.world_size
        self.steps_per_epoch = self._mixture.windows_per_epoch // per_step
        if self.steps_per_epoch == 0:
            raise BadInput(
                f"one step needs {per_step} windows of {self.seq_len + 1} tokens (batch_size x world_size) "
                f"but an epoch of the {self.split} split has {self._mixture.windows_per_epoch} with these "
                "weights; lower the batch size or the window (train.seq_len of a training run, --seq-len "
                "where a command takes one), or prepare more text"
            )
        self._plan_cache: tuple[int, np.ndarray] | None = None
        # The served checks' own plan (`defined_plan`): seed, epoch, the mixture it was drawn under.
        self.checked_plan: tuple[int, int, mixture.Mixture, np.ndarray] | None = None

    def _plan(self, epoch: int) -> np.ndarray:
        if self._plan_cache is None or self._plan_cache[0] != epoch:
            self._plan_cache = (epoch, self._epoch_plan(epoch))
        return self._plan_cache[1]

    @gate_ensure(
        "GATE-DATA-002",
        lambda self, epoch, result: mixture.plan_outcome(
            self._mixture, self.seed, epoch, result, self._previous_plan(epoch)
        ),
    )
    @gate_ensure("GATE-DATA-001", lambda self, result: mixture.quota_outcome(self._mixture, result))
    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """The plan the reader serves `epoch` from, checked once when it is made (a count of the ids
        and the plan drawn again from its definition, about three times the work of the shuffle):
        each source's quota, each window as often as the quota says (judged first: a plan off its
        quotas is that, before it is another plan than its seed's), the plan the seed and epoch
        define, shuffled, and otherwise than the epoch before."""
        return mixture.epoch_plan(self._mixture, self.seed, epoch)

    def _previous_plan(self, epoch: int) -> np.ndarray | None:
        """The plan of the epoch before `epoch` (None for the first): the one the reader served it
        from while it still holds it, else the one that epoch's seed gives (a resumed reader)."""
        if epoch == 0:
            return None
        if self._plan_cache is not None and self._plan_cache[0] == epoch - 1:
            return self._plan_cache[1]
        return mixture.epoch_plan(self._mixture, self.seed, epoch - 1)

    def _global_ids(self, epoch: int, first: int, count: int) -> np.ndarray:
        """Window ids of steps [first, first+count) of `epoch`, shaped (count, world_size, batch_size)."""
        per_step = self.batch_size * self.world_size
        ids = self._plan(epoch)[first * per_step : (first + count) * per_step]
        return ids.reshape(-1, self.world_size, self.batch_size)

    def _rank_ids(self, epoch: int, first: int, count: int) -> np.ndarray:
        return self._global_ids(epoch, first, count)[:, self.rank, :].reshape(-1)

    def _next_global_ids(self) -> np.ndarray:
        epoch, index = self.epoch, self._index
        if index >= self.steps_per_epoch:
            epoch, index = epoch + 1, 0
        return self._global_ids(epoch, index, 1)

    # -- the tables ---------------------------------------------------------------------------

    def open_tables(self, split: str, exclude: list[str] | None = None) -> dict[str, WindowTable]:
        """The tables of `split`, its shards (but those of the sources in `exclude`) opened and
        verified afresh: what a check reads the plain way, apart from any other reader's copy."""
        left_out = set(exclude or [])
        shards = open_split(self.data_dir, self.manifest, split)
        return self.split_tables(split, [s for s in shards if s.entry.source not in left_out])

    def split_tables(self, split: str, shards: list[MappedShard]) -> dict[str, WindowTable]:
        """The tables a batch of this reader is read from, by name, over `shards` (opened shards of
        `split`): the token ids. A fine-tuning reader adds the labels of the same shards."""
        return {"tokens": WindowTable(shards, self.seq_len)}

    def tables_of(self, batch: Any) -> dict[str, torch.Tensor]:
        """The (B, T+1) tensors of one of this reader's batches, by the name of the table they come from."""
        return {"tokens": batch}

    # -- the stream --------------------------------------------------------------------------

    def _seek(self, epoch: int, index: int, step: int) -> None:
        self.epoch, self._index, self.step = epoch, index, step
        self._chunk: list[torch.Tensor] = []
        self._chunk_len = self._served = 0
        self._loaded_until = (epoch, index)

    @gate_ensure(
        "GATE-DATA-001",
        lambda self, epoch, first, result: chunk_outcome(self, epoch, first, result),
    )
    def _load_chunk(self, epoch: int, first: int) -> list[torch.Tensor]:
        count = max(0, min(self._chunk_batches, self.steps_per_epoch - first))
        tokens = self._table.gather(self._rank_ids(epoch, first, count))
        return list(torch.from_numpy(tokens.reshape(count, self.batch_size, self.seq_len + 1)).unbind(0))

    def _roll_epoch(self) -> None:
        if not self.wrap:
            raise CorpusExhausted(
                f"the {self.split} split is exhausted after epoch {self.epoch} "
                f"({self.steps_per_epoch} steps) and wrap=False"
            )
        log.info(
            "%s split: epoch %d done after %d steps; wrapping to epoch %d",
            self.split,
            self.epoch,
            self.steps_per_epoch,
            self.epoch + 1,
        )
        self.epoch += 1
        self._index = 0

    def next_batch(self) -> torch.Tensor:
        """The next (batch_size, seq_len + 1) int64 batch of this rank."""
        if self._served == self._chunk_len:
            if self._index >= self.steps_per_epoch:
                self._roll_epoch()
            self._chunk = self._load_chunk(self.epoch, self._index)
            self._chunk_len = len(self._chunk)
            self._loaded_until = (self.epoch, self._index + self._chunk_len)
            self._served = 0
        batch = self._chunk[self._served]
        global_ids = self._global_ids(self.epoch, self._index, 1).reshape(-1)
        self._served_windows += np.bincount(
            np.searchsorted(self._ends, global_ids, side="right"), minlength=len(self._by_end)
        )
        self._served += 1
        self._index += 1
        self.step += 1
        return batch

    @property
    def unique_tokens(self) -> int:
        """Tokens of this split in sources the reader may sample (weight > 0)."""
        return sum(
            tokens for name, tokens in self._table.tokens_by_source.items() if self._mixture.weights[name] > 0
        )

    @property
    def source_windows(self) -> dict[str, int]:
        """Windows of each source in this split: what a share of an epoch is counted in."""
        return {name: hi - lo for name, (lo, hi) in sorted(self._table.ranges.items())}

    def take_served(self) -> dict[str, int]:
        """Windows served per source (all ranks) since the last call."""
        served = {name: int(n) for name, n in zip(self._by_end, self._served_windows, strict=True)}
        self._served_windows[:] = 0
        return dict(sorted(served.items()))

    def source_tokens(self, name: str, windows: int) -> np.ndarray:
        """The first `windows` windows of source `name`, as (n, seq_len + 1) token ids."""
        lo, hi = self._table.ranges[name]
        return self._table.gather(np.arange(lo, min(hi, lo + windows), dtype=np.int64))

    def set_shares(self, shares: dict[str, float]) -> None:
        """Serve each source's share of an epoch's windows from the next batch on (a policy's
        mixture), by the weights contracts.plan.share_weights defines for them."""
        self.reweight(share_weights(shares, self.source_windows))

    def reweight(self, source_weights: dict[str, float]) -> None:
        """Change the source mixture from the next batch on (a resumed run's "polish" of the curriculum).

        The position in the epoch is kept; excluded sources stay at weight 0.
        """
        mixture.check_known("source_weights", source_weights, self.manifest.sources)
        self._set_mixture(source_weights, dict(self._mixture.caps), "source_weights")
        self._seek(self.epoch, self._index, self.step)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot from which `load_state_dict` continues the exact stream."""
        return ReaderState(
            version=STATE_VERSION,
            manifest_sha256=self.manifest.sha256,
            split=self.split,
            seed=self.seed,
            epoch=self.epoch,
            index=self._index,
            step=self.step,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            world_size=self.world_size,
            source_weights=dict(self._mixture.weights),
            source_caps=dict(self._mixture.caps),
            next_sha256=ids_sha256(self._next_global_ids()),
        ).model_dump()

    @gate_ensure("GATE-DATA-002", lambda self, state: restore_outcome(self, state))
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream a `state_dict` describes; a state for other data or shapes is refused.

        The saved weights come back with the state, except that excluded sources stay at 0.
        """
        try:
            saved = ReaderState.model_validate(state)
        except ValidationError as exc:
            raise BadInput(
                f"not a reader state: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from None
        if saved.version != STATE_VERSION:
            raise BadInput(f"reader state version {saved.version}; this code reads {STATE_VERSION}")
        if saved.manifest_sha256 != self.manifest.sha256:
            raise BadInput(
                f"reader state was made for manifest {saved.manifest_sha256[:12]}, but {self.data_dir} has "
                f"manifest {self.manifest.sha256[:12]}: the data changed since the state was saved; resume "
                "with the DATA_DIR it was made for"
            )
        mine = {
            "split": self.split,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "world_size": self.world_size,
        }
        theirs = {key: getattr(saved, key) for key in mine}
        if mine != theirs:
            raise BadInput(f"reader state was made for {theirs}, this reader is {mine}; they must match")
        mixture.check_known("restored source_weights", saved.source_weights, self.manifest.sources)
        self._set_mixture(saved.source_weights, saved.source_caps, "the restored state")
        self.seed = saved.seed
        self._seek(saved.epoch, saved.index, saved.step)
