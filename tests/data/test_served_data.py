"""What the model is served, judged where it is served (GATE-DATA-001 rev 3, GATE-DATA-005 rev 2,
GATE-EVAL-001 rev 3, GATE-SFT-001 rev 2).

Each falsifier plants, in this process, a bug that would train silently,
and runs the real command: an epoch plan drawn with replacement, fine-tuning labels of the next
step served beside this step's tokens, a held-out set read from the train split or with its labels
one window off, an evaluation that scores two held-out batches eight times, a chat template's
supervision that starts one token late. Each stops with exit 3 naming its gate (a set-up gate
before the first step); the unplanted commands hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contracts.errors import GateViolation
from contracts.judges import judge
from contracts.spec import load_spec
from stack.cli import main
from stack.data import heldout as heldout_module
from stack.data import mixture, prefs_rows, sft_prepare, sft_template
from stack.data import reader as reader_module
from stack.data import sft_reader as sft_reader_module
from stack.data.hashing import batch_sha256
from stack.data.heldout import heldout_outcome
from stack.data.manifest import load_manifest
from stack.data.reader import TokenReader
from stack.data.sft_gates import rendering_outcome, turns_outcome
from stack.data.sft_prepare import prepare_sft
from stack.data.sft_reader import SftBatch, SftReader, sft_heldout_batches
from stack.data.sft_template import Rendered
from stack.data.windows import WindowTable
from stack.train import loop as loop_module
from stack.train.objective import Pretrain
from tests.support.hf_fixtures import uncased_tokenizer
from tests.support.ledger_support import edited, findings, gate
from tests.support.paths import DATA
from tests.support.train_support import prepared, smoke_args, step_lines, train

CHAT = DATA / "chat_small.jsonl"
PACK = 96
B, T = 4, 16
RUN = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
SFT_SETS = ["train.device='cpu'", "train.batch_size=1", "monitor.tokens=8", *RUN]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A byte-level corpus, a smoke model pretrained on it (ctx 128, the fine-tuning base) and the
    small chat set packed into windows of 96."""
    root = tmp_path_factory.mktemp("served")
    text, base, sft = prepared(root), root / "base", root / "sft"
    cadence = ["model.ctx=128", "train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
    assert train(smoke_args(text, base, *cadence)) == 0
    prepare_sft([CHAT], sft, fmt="chat", pack_len=PACK, val_fraction=0.5)
    return {"text": text, "base": base, "sft": sft}


def _sft(world: dict[str, Path], out: Path, *sets: str) -> int:
    argv = ["sft", "--data", str(world["sft"]), "--init-from", str(world["base"]), "--out", str(out)]
    for item in [*SFT_SETS, *sets]:
        argv += ["--set", item]
    return main(argv)


def _gate(out: Path, gate_id: str) -> dict[str, Any]:
    """The gate's result in the run's record, as plain data."""
    return next(g for g in json.loads((out / "metadata.json").read_text())["gates"] if g["id"] == gate_id)


def _stopped_by(out: Path, code: int, err: str, gate_id: str) -> dict[str, Any]:
    """Assert the run exited 3 in `gate_id`'s name with a halted record; the gate's measured values."""
    assert code == 3 and gate_id in err and "Traceback" not in err, err
    assert json.loads((out / "metadata.json").read_text())["run"]["status"] == "halted"
    result = _gate(out, gate_id)
    assert result["verdict"] == "FAIL"
    return result["measured"]


def _refused_at_set_up(code: int, err: str, gate_id: str, needle: str) -> None:
    """A gate of the run's set-up fired: exit 3 in its name, before any step."""
    assert code == 3 and gate_id in err and needle in err and "Traceback" not in err, err
    assert "step 1/" not in err


# -- GATE-DATA-001: the epoch plan ----------------------------------------------------------


def _with_replacement(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The plan's ids drawn with replacement instead of permuted."""

    def plan(mix: mixture.Mixture, seed: int, epoch: int) -> np.ndarray:
        ids = real(mix, seed, epoch)
        return ids[np.random.default_rng([seed, epoch, 0]).integers(0, len(ids), len(ids))]

    return plan


@pytest.mark.gate("GATE-DATA-001")
def test_a_plan_drawn_with_replacement_stops_stack_train_before_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(mixture, "epoch_plan", _with_replacement(mixture.epoch_plan))
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-DATA-001")
    assert measured["windows_off_quota"] > 0 and measured["plan_windows"] == measured["quota_windows"]


@pytest.mark.gate("GATE-DATA-001")
def test_windows_one_short_of_each_shard_stop_stack_train_at_set_up(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The window table numbers one window too few in every shard: the plan, its quotas and every
    batch agree with the table, so only the table's cover of each shard shows a window's worth of
    targets never read."""
    built = WindowTable.__init__

    def one_short(self: WindowTable, *args: Any, **kwargs: Any) -> None:
        built(self, *args, **kwargs)
        self.views = [view[:-1] for view in self.views]

    monkeypatch.setattr(WindowTable, "__init__", one_short)
    out = tmp_path / "run"
    assert train(smoke_args(world["text"], out, *RUN)) == 3
    assert "GATE-DATA-001" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("fewest", "most", "holds"),
    [
        pytest.param(0, T - 1, True, marks=pytest.mark.holds("GATE-DATA-001")),
        pytest.param(0, T, False, marks=pytest.mark.gate("GATE-DATA-001")),
        pytest.param(-1, 0, False, marks=pytest.mark.gate("GATE-DATA-001")),
    ],
)
def test_targets_left_at_a_shards_end_just_beyond_a_window_fire_and_just_inside_hold(
    fewest: int, most: int, holds: bool
) -> None:
    measured = {"covered_shards": 2, "uncovered_fewest": fewest, "uncovered_most": most, "window_targets": T}
    assert (judge("GATE-DATA-001", measured) == []) is holds


@pytest.mark.holds("GATE-DATA-001")
def test_the_readers_windows_cover_every_shard(world: dict[str, Path]) -> None:
    reader = TokenReader(world["text"], batch_size=B, seq_len=T, seed=0)
    outcome = reader_module.coverage_outcome(reader._tables)
    assert outcome.ok and outcome.measured["covered_shards"] >= 1


@pytest.mark.gate("GATE-DATA-001")
@pytest.mark.parametrize("reader_seed", [0, 8], ids=["seed-0", "the-next-seed"])
def test_a_reader_seeded_otherwise_than_the_run_stops_stack_train_at_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reader_seed: int,
) -> None:
    """The reader handed another seed than train.seed=7: it serves its own plan faithfully, so only
    the plan of the run's seed shows the batches are not the ones the run's seed orders."""
    built = TokenReader.__init__
    monkeypatch.setattr(
        TokenReader, "__init__", lambda self, *a, **kw: built(self, *a, **{**kw, "seed": reader_seed})
    )
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN, "train.seed=7"))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-DATA-001")
    assert measured["windows_mismatched"] > 0 and measured["step_in_epoch"] == 0


@pytest.mark.holds("GATE-DATA-001")
def test_a_run_of_another_seed_reads_the_plan_of_that_seed(world: dict[str, Path], tmp_path: Path) -> None:
    assert train(smoke_args(world["text"], tmp_path / "run", *RUN, "train.seed=7")) == 0
    assert _gate(tmp_path / "run", "GATE-DATA-001")["measured"]["windows_mismatched"] == 0


@pytest.mark.gate("GATE-DATA-001")
@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_one_window_planned_in_place_of_another_fires_and_the_plan_itself_holds(
    world: dict[str, Path], weight: float
) -> None:
    """Just beyond: one window planned once more than its quota allows and one once less, in a plan
    of the right length. A weight of 2.5 plans each window twice and half of them a third time: the
    plan itself holds."""
    (source,) = load_manifest(world["text"]).sources  # the generated corpus is one source
    reader = TokenReader(world["text"], batch_size=B, seq_len=T, seed=0, source_weights={source: weight})
    plan = reader._plan(0)
    assert mixture.quota_outcome(reader._mixture, plan).ok
    counts = np.bincount(plan)
    fewest = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    most = int(np.argmax(np.where(np.arange(len(counts)) == fewest, -1, counts)))
    planted = plan.copy()
    planted[np.flatnonzero(planted == fewest)[0]] = most
    outcome = mixture.quota_outcome(reader._mixture, planted)
    assert not outcome.ok and outcome.measured["windows_off_quota"] == 2


def _rounded_up(mix: mixture.Mixture, name: str) -> int:
    """A source's quota ceil(w · n) where the rule says floor(w · n)."""
    lo, hi = mix.ranges[name]
    return math.ceil(mix.weights[name] * (hi - lo))


@pytest.mark.gate("GATE-DATA-001")
def test_quotas_rounded_up_stop_stack_train_before_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The mixture's own quota rounds a fractional weight's share up: the plan is a permutation of
    those quotas, so only the rule's quotas (contracts.plan), computed apart from the mixture,
    show the epoch plans a window more than the sources' quotas sum to."""
    monkeypatch.setattr(mixture.Mixture, "quota", _rounded_up)
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN, "data.weights={main = 0.55}"))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-DATA-001")
    assert measured["plan_windows"] == measured["quota_windows"] + 1
    assert measured["sources_off_quota"] == ["main"]


@pytest.mark.holds("GATE-DATA-001")
def test_a_fractional_weights_plan_holds_to_the_rules_quotas(world: dict[str, Path]) -> None:
    reader = TokenReader(world["text"], batch_size=B, seq_len=T, seed=0, source_weights={"main": 0.55})
    plan = reader._plan(0)
    outcome = mixture.quota_outcome(reader._mixture, plan)
    assert outcome.ok and outcome.measured["quota_windows"] == len(plan) < sum(reader.source_windows.values())


# -- GATE-DATA-001: each table of a served batch -----------------------------------------------


def _labels_of_the_next_step(real: Callable[[SftReader], SftBatch]) -> Callable[[SftReader], SftBatch]:
    """This step's tokens with the labels of the step after it."""

    def next_batch(self: SftReader) -> SftBatch:
        batch = real(self)
        ids = self._rank_ids(self.epoch, self._index, 1)  # the next step's windows (past the end: none)
        return SftBatch(batch.tokens, torch.from_numpy(self._labels.gather(ids).reshape(batch.tokens.shape)))

    return next_batch


@pytest.mark.gate("GATE-DATA-001")
def test_labels_of_the_next_step_stop_stack_sft_at_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The loss consumed what the batch states (GATE-TRAIN-007 holds: the labels are the batch's
    own); the batch is not its step's. Caught at step 1, long before the epoch's end, where the
    planted reader would crash on an empty gather: a crash is never the detector."""
    monkeypatch.setattr(SftReader, "next_batch", _labels_of_the_next_step(SftReader.next_batch))
    out = tmp_path / "run"
    code = _sft(world, out, "train.steps=400")
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-DATA-001")
    assert measured["mismatched_by_table"]["labels"] >= 1 and measured["mismatched_by_table"]["tokens"] == 0
    assert measured["taken_batches"] == 1


@pytest.mark.gate("GATE-DATA-001")
def test_one_label_off_in_a_served_batch_fires_and_the_batch_itself_holds(world: dict[str, Path]) -> None:
    reader = SftReader(world["sft"], batch_size=2, seq_len=PACK, seed=0)
    served = reader.next_batch()
    assert reader_module.served_outcome(reader, served, 1, reader.seed).ok
    labels = served.labels.clone()
    labels[1, PACK] ^= 1  # one token's supervision flipped
    outcome = reader_module.served_outcome(reader, SftBatch(served.tokens, labels), 1, reader.seed)
    assert not outcome.ok and outcome.measured["mismatched_by_table"] == {"tokens": 0, "labels": 1}


@pytest.mark.gate("GATE-DATA-001")
def test_a_rank_served_rank_zeros_windows_is_caught_where_the_model_takes_them(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rank of a data-parallel run reads rank 0's windows: each chunk is gathered and checked
    by the same wrong ids, so it holds; the served check slices the plan for itself."""
    real = TokenReader._rank_ids

    def rank_zero(self: TokenReader, epoch: int, first: int, count: int) -> np.ndarray:
        return (
            real(self, epoch, first, count)
            if self.rank == 0
            else self._global_ids(epoch, first, count)[:, 0, :].reshape(-1)
        )

    monkeypatch.setattr(TokenReader, "_rank_ids", rank_zero)
    reader = TokenReader(world["text"], batch_size=B, seq_len=T, seed=0, rank=1, world_size=2)
    with pytest.raises(GateViolation, match="GATE-DATA-001"):
        reader_module.check_served(reader, reader.next_batch(), 1, reader.seed)


# -- GATE-DATA-001: the fingerprint a step logs is its planned windows' ------------------------


def _inputs_only(real: Callable[[torch.Tensor], str]) -> Callable[[torch.Tensor], str]:
    """A step's batch_sha256 taken over the inputs only, its last column
    (the last target of every row) left out."""
    return lambda rows: real(rows[:, :-1])


@pytest.mark.gate("GATE-DATA-001")
def test_a_batch_hash_of_the_inputs_only_stops_stack_train_at_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The model is served the right batch and the loss reads all of it; only the fingerprint the
    line logs, which resumes, replays and data-parallel runs are compared by, is of less."""
    monkeypatch.setattr(loop_module, "batch_sha256", _inputs_only(loop_module.batch_sha256))
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-DATA-001")
    assert measured["logged_batch_sha256"] != measured["planned_batch_sha256"]
    assert measured["fingerprinted_step"] == 1


@pytest.mark.gate("GATE-DATA-001")
def test_a_batch_hash_of_the_inputs_only_stops_stack_sft_at_its_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fine-tuning batch's fingerprint is of its token windows (the objective's `tokens`), held to
    the planned windows of the tokens table."""
    monkeypatch.setattr(loop_module, "batch_sha256", _inputs_only(loop_module.batch_sha256))
    out = tmp_path / "run"
    measured = _stopped_by(out, _sft(world, out), capsys.readouterr().err, "GATE-DATA-001")
    assert measured["logged_batch_sha256"] != measured["planned_batch_sha256"]


@pytest.mark.holds("GATE-DATA-001")
def test_every_step_logs_the_fingerprint_of_its_planned_windows_with_accumulation(
    world: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert train(smoke_args(world["text"], out, *RUN, "train.grad_accum=2")) == 0
    measured = _gate(out, "GATE-DATA-001")["measured"]
    last = step_lines(out)[-1]
    assert measured["fingerprinted_step"] == last["step"]
    assert measured["logged_batch_sha256"] == measured["planned_batch_sha256"] == last["batch_sha256"]


@pytest.mark.gate("GATE-DATA-001")
def test_one_ranks_rows_hashed_for_the_global_batch_fire_and_every_ranks_hold(world: dict[str, Path]) -> None:
    """With two ranks the fingerprint is of the global batch, rank 0's rows then rank 1's: each
    rank's reader plans it alike, and a fingerprint of one rank's rows alone is refused."""
    ranks = [
        TokenReader(world["text"], batch_size=B, seq_len=T, seed=0, rank=r, world_size=2) for r in (0, 1)
    ]
    rows = torch.cat([reader.next_batch() for reader in ranks])
    planned = [[reader_module.planned_sha256(reader, 0)] for reader in ranks]
    for fingerprint in planned:
        assert reader_module.fingerprint_outcome(batch_sha256(rows), fingerprint, 1).ok
    outcome = reader_module.fingerprint_outcome(batch_sha256(rows[B:]), planned[1], 1)
    assert not outcome.ok
    with pytest.raises(GateViolation, match="GATE-DATA-001"):
        reader_module.check_fingerprint(batch_sha256(rows[:B]), planned[0], 1)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_fingerprint_restated_in_the_record_is_caught_by_the_checker(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """The record's fingerprint check, logged and planned alike, edited: the checker holds the
    logged one to the batch_sha256 of the step line it judged."""
    ledger, run = tmp_path / "ledger", tmp_path / "run"
    assert train([*smoke_args(world["text"], run, *RUN), "--evidence-dir", str(ledger)]) == 0
    assert findings(ledger / "run") == []

    def forged(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-DATA-001")["measured"].update(
            logged_batch_sha256="0" * 64, planned_batch_sha256="0" * 64
        )

    found = findings(edited(ledger / "run", forged))
    assert any("GATE-DATA-001].measured.logged_batch_sha256" in line for line in found), found


# -- GATE-DATA-005: the held-out set is the held-out split's ---------------------------------


@pytest.mark.gate("GATE-DATA-005")
def test_a_heldout_set_read_from_the_train_split_is_refused_before_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The held-out loss flattered by windows the model trains on."""
    real = heldout_module.open_split
    monkeypatch.setattr(
        heldout_module, "open_split", lambda data_dir, manifest, _split: real(data_dir, manifest, "train")
    )
    code = train(smoke_args(world["text"], tmp_path / "run", *RUN))
    _refused_at_set_up(code, capsys.readouterr().err, "GATE-DATA-005", "not the held-out split's windows")


@pytest.mark.gate("GATE-DATA-005")
def test_heldout_labels_one_window_off_are_refused_before_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The held-out labels' ids spread over one window fewer."""
    real = sft_reader_module.spread_ids
    monkeypatch.setattr(sft_reader_module, "spread_ids", lambda total, need: real(total - 1, need))
    code = _sft(world, tmp_path / "run")
    _refused_at_set_up(code, capsys.readouterr().err, "GATE-DATA-005", "'labels'")


@pytest.mark.gate("GATE-DATA-005")
def test_a_heldout_set_planned_over_the_splits_first_windows_is_refused_before_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The planned ids are the split's first n·B, for the set's builder and
    its check alike, so every batch equals the windows at its planned id and the rest of the split
    is never evaluated."""
    monkeypatch.setattr(heldout_module, "spread_ids", lambda total, need: np.arange(need, dtype=np.int64))
    code = train(smoke_args(world["text"], tmp_path / "run", *RUN))
    _refused_at_set_up(code, capsys.readouterr().err, "GATE-DATA-005", "not spread over the split")


def _spread(first: int, last: int, gap: int) -> dict[str, Any]:
    """GATE-DATA-005's values of 10 held-out windows at planned ids in a split of 100 (⌈W/n⌉ = 10),
    every window the split's own."""
    measured = {"heldout_windows": 10, "heldout_windows_mismatched": 0, "split_windows": 100}
    return {**measured, "first_id": first, "last_id": last, "max_gap": gap}


@pytest.mark.parametrize(
    "measured, fires",
    [
        pytest.param(_spread(10, 99, 10), True, marks=pytest.mark.gate("GATE-DATA-005"), id="10-before"),
        pytest.param(_spread(9, 99, 10), False, marks=pytest.mark.holds("GATE-DATA-005"), id="9-before"),
        pytest.param(_spread(0, 89, 10), True, marks=pytest.mark.gate("GATE-DATA-005"), id="10-after"),
        pytest.param(_spread(0, 90, 10), False, marks=pytest.mark.holds("GATE-DATA-005"), id="9-after"),
        pytest.param(_spread(0, 99, 11), True, marks=pytest.mark.gate("GATE-DATA-005"), id="10-between"),
        pytest.param(_spread(0, 99, 10), False, marks=pytest.mark.holds("GATE-DATA-005"), id="9-between"),
    ],
)
def test_a_run_of_the_split_left_out_just_beyond_an_even_spread_fires_and_just_inside_holds(
    measured: dict[str, Any], fires: bool
) -> None:
    """⌈W/n⌉ windows or more of the split left out before the first planned id, after the last or
    between two consecutive ones fire; one fewer holds (i·W // n leaves at most ⌈W/n⌉ − 1)."""
    spec = load_spec()
    problems = judge("GATE-DATA-005", measured, spec.gate("GATE-DATA-005").threshold_values)
    assert bool(problems) is fires, problems


def test_the_stacks_heldout_ids_are_spread_over_any_split() -> None:
    """spread_ids of every set size up to a split's, for splits of 1 to 60 windows, holds."""
    spec = load_spec()
    for total in range(1, 61):
        for need in range(1, total + 1):
            ids = heldout_module.spread_ids(total, need)
            measured = _spread(int(ids[0]), int(ids[-1]), int(np.diff(ids).max()) if need > 1 else 1)
            measured.update(heldout_windows=need, split_windows=total)
            assert judge("GATE-DATA-005", measured, spec.gate("GATE-DATA-005").threshold_values) == []


@pytest.mark.gate("GATE-DATA-005")
def test_one_heldout_label_off_fires_and_the_set_itself_holds(world: dict[str, Path]) -> None:
    reader = SftReader(world["sft"], batch_size=1, seq_len=PACK, seed=0)
    batches = sft_heldout_batches(world["sft"], 1, PACK, None)
    assert heldout_outcome(reader, batches).ok
    planted = [*batches]
    labels = planted[-1].labels.clone()
    labels[0, 0] += 2  # the last window's first token given to the next example
    planted[-1] = SftBatch(planted[-1].tokens, labels)
    outcome = heldout_outcome(reader, planted)
    assert not outcome.ok and outcome.measured["heldout_windows_mismatched"] == 1


# -- GATE-EVAL-001: what each evaluation read -------------------------------------------------


class TwoBatchesEightTimes(list):  # type: ignore[type-arg]
    """A list whose indexing returns batch i % 2; the list still counts all."""

    def __getitem__(self, index: Any) -> Any:
        return super().__getitem__(index % 2)


def _scores_only_its_first(real: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A held-out loss that scores the first batch it was given, whatever batch it is given next."""
    first: list[torch.Tensor] = []

    def heldout_loss(self: Pretrain, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        first.append(batch)
        return real(self, model, first[0])

    return heldout_loss


def _skips_the_last(real: Callable[..., torch.Tensor], batches: int) -> Callable[..., torch.Tensor]:
    """Just beyond: a held-out loss that scores every batch of the set but its last (a zero loss)."""
    seen: list[int] = []

    def heldout_loss(self: Pretrain, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        seen.append(1)
        return (
            batch.new_zeros((), dtype=torch.float32) if len(seen) % batches == 0 else real(self, model, batch)
        )

    return heldout_loss


@pytest.mark.gate("GATE-EVAL-001")
def test_an_evaluation_that_scores_two_batches_eight_times_stops_at_the_first_evaluation(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = Pretrain.heldout
    monkeypatch.setattr(Pretrain, "heldout", lambda self, *a: TwoBatchesEightTimes(real(self, *a)))
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-EVAL-001")
    assert measured["consumed_windows"] < measured["stated_windows"]


@pytest.mark.gate("GATE-EVAL-001")
@pytest.mark.parametrize("plant", ["first_batch", "skips_last"])
def test_an_evaluation_that_reads_other_batches_or_skips_one_stops_at_the_first_evaluation(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    plant: str,
) -> None:
    batches = int(load_spec().threshold("GATE-EVAL-001", "min_heldout_batches"))  # the smoke run's set
    real = Pretrain.heldout_loss
    loss = _scores_only_its_first(real) if plant == "first_batch" else _skips_the_last(real, batches)
    monkeypatch.setattr(Pretrain, "heldout_loss", loss)
    out = tmp_path / "run"
    code = train(smoke_args(world["text"], out, *RUN))
    measured = _stopped_by(out, code, capsys.readouterr().err, "GATE-EVAL-001")
    if plant == "first_batch":
        assert measured["mismatched_positions"] > 0
    else:
        assert measured["scored_batches"] == measured["set_batches"] - 1


@pytest.mark.holds("GATE-EVAL-001")
@pytest.mark.holds("GATE-DATA-005")
@pytest.mark.holds("GATE-DATA-001")
def test_stack_sft_reads_its_whole_heldout_set_and_serves_its_planned_labels(
    world: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert _sft(world, out) == 0
    reads = _gate(out, "GATE-EVAL-001")
    assert reads["verdict"] == "PASS"
    measured = reads["measured"]
    assert measured["scored_batches"] == measured["set_batches"] == measured["heldout_batches"]
    assert (
        measured["consumed_windows"] == measured["stated_windows"] and measured["mismatched_positions"] == 0
    )
    assert _gate(out, "GATE-DATA-005")["measured"]["mismatched_by_table"] == {"tokens": 0, "labels": 0}
    assert _gate(out, "GATE-DATA-001")["verdict"] == "PASS"


# -- GATE-SFT-001: each assistant turn supervises its content and EOS ------------------------


def _shifted(real: Callable[..., Rendered], by: int, turns: int | None = None) -> Callable[..., Rendered]:
    """A rendering whose supervision starts `by` tokens late (or early, for a negative `by`), in the
    first `turns` assistant turns of every example (all of them when None)."""

    def render(*args: Any) -> Rendered:
        rendered = real(*args)
        starts = np.flatnonzero(np.diff(np.concatenate([[0], rendered.mask.astype(np.int8)])) == 1)
        for start in starts[:turns]:
            if by > 0:
                rendered.mask[start : start + by] = 0
            else:
                rendered.mask[start + by : start] = 1
        return rendered

    return render


@pytest.fixture(scope="module")
def uncased(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face tokenizer that lower-cases what it encodes: no turn decodes back to its text."""
    return uncased_tokenizer(tmp_path_factory.mktemp("uncased"))


@pytest.mark.gate("GATE-SFT-001")
@pytest.mark.parametrize("tokenizer", ["byte", "uncased"])
@pytest.mark.parametrize("by", [1, -1], ids=["one-late", "one-early"])
def test_supervision_one_token_off_stops_stack_prepare(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    by: int,
    tokenizer: str,
    uncased: Path,
) -> None:
    """The first token of each assistant turn left unsupervised, and the
    marker's last token supervised: every example still supervised, its EOS included. With a
    tokenizer that normalises, judged against its round trip of each turn (spec 1.14.0): before,
    such turns were only counted as unjudged and the shifted mask went through."""
    monkeypatch.setattr(sft_prepare, "render", _shifted(sft_prepare.render, by))
    argv = [
        "prepare",
        str(CHAT),
        "--format",
        "chat",
        "--pack-len",
        str(PACK),
        "--out",
        str(tmp_path / "data"),
        *(["--tokenizer", f"hf:{uncased}"] if tokenizer == "uncased" else []),
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert (
        code == 3 and "GATE-SFT-001" in err and "supervise other tokens" in err and "Traceback" not in err
    ), err
    assert not (tmp_path / "data" / "manifest.json").exists()


@pytest.mark.holds("GATE-SFT-001")
def test_an_uncased_tokenizers_turns_are_all_judged_by_its_round_trip_and_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uncased: Path
) -> None:
    """The benign side of the round trip: the rendering's own masks hold, every turn judged (none
    left unjudged), each against the tokenizer's round trip since none decodes to its text."""
    turns = _prepared_judged(tmp_path, monkeypatch, "check_turns", CHAT, "chat", PACK, f"hf:{uncased}")
    assert turns["turns_held"] == turns["turns_by_round_trip"] > 0
    assert turns["turns_mismatched"] == turns["turns_unjudged"] == 0


Turns = list[tuple[str, str]]


def _last_turn_before_each_answer(turns: Turns) -> Turns:
    """`pending = [...]` for `pending += [...]`: of the turns before each assistant
    turn only the last is kept, so a system prompt leaves every example's prompt."""
    return [
        turn
        for i, turn in enumerate(turns)
        if turn[0] == "assistant" or i + 1 == len(turns) or turns[i + 1][0] == "assistant"
    ]


def _planted(where: str) -> tuple[Any, Callable[..., Any]]:
    """The module and function to plant that in: the grouping of turns (`turn_segments`, where it
    lives once), or the renderer alone as prepare calls it."""
    segments, render = sft_template.turn_segments, sft_prepare.render

    def planted_segments(template: Any, turns: Turns, at: str) -> Any:
        return segments(template, _last_turn_before_each_answer(turns), at)

    def planted_render(template: Any, tok: Any, turns: Turns, at: str) -> Any:
        return render(template, tok, _last_turn_before_each_answer(turns), at)

    return (sft_template, planted_segments) if where == "turn_segments" else (sft_prepare, planted_render)


@pytest.mark.gate("GATE-SFT-001")
@pytest.mark.parametrize("tokenizer", ["byte", "uncased"])
@pytest.mark.parametrize("where", ["turn_segments", "render"])
def test_a_renderer_that_drops_earlier_turns_stops_stack_prepare(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
    tokenizer: str,
    uncased: Path,
) -> None:
    """The grouping of turns planted where it lives once (render and the turn texts alike, so each
    turn supervises its content as that grouping writes it), or in the renderer alone: every
    example keeps its supervision and its EOS, and only the whole example read back against all
    its messages shows the system prompt gone."""
    module, planted = _planted(where)
    monkeypatch.setattr(module, where, planted)
    argv = ["prepare", str(CHAT), "--format", "chat", "--pack-len", str(PACK), "--out", str(tmp_path / "out")]
    code = main([*argv, *(["--tokenizer", f"hf:{uncased}"] if tokenizer == "uncased" else [])])
    err = capsys.readouterr().err
    assert code == 3 and "GATE-SFT-001" in err and "not every message" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "manifest.json").exists()


def _tokenizer(name: str, uncased: Path) -> str:
    """The --tokenizer value of a tokenizer the rendering tests name."""
    return {"byte": "byte", "bpe": "bpe", "uncased": f"hf:{uncased}"}[name]


# The checks of GATE-SFT-001 `prepare_sft` runs on each split's tables, with the outcome each judges.
OUTCOMES = {"check_turns": turns_outcome, "check_rendering": rendering_outcome}


def _prepared_judged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    check: str,
    source: Path,
    fmt: str,
    pack_len: int,
    tokenizer: str,
) -> dict[str, Any]:
    """What GATE-SFT-001's `check` (a name in OUTCOMES) measured of `source` prepared as `fmt` into
    one split; the check still judges as it would."""
    measured: list[dict[str, Any]] = []
    real = getattr(sft_prepare, check)

    def observed(tokens: np.ndarray, labels: np.ndarray, texts: Any, tok: Any) -> None:
        measured.append(OUTCOMES[check](tokens, labels, texts, tok).measured)
        real(tokens, labels, texts, tok)

    monkeypatch.setattr(sft_prepare, check, observed)
    prepare_sft(
        [source], tmp_path / "data", fmt=fmt, pack_len=pack_len, val_fraction=0.0, tokenizer=tokenizer
    )
    (judged,) = measured
    return judged


@pytest.mark.holds("GATE-SFT-001")
@pytest.mark.parametrize("tokenizer", ["byte", "bpe", "uncased"])
def test_every_example_of_the_chat_fixtures_reads_back_as_all_its_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uncased: Path, tokenizer: str
) -> None:
    """The benign side: system turns and multi-turn conversations read back whole, exactly (a
    tokenizer that gives text back) or by every message's content in order (one that lower-cases)."""
    whole = _prepared_judged(
        tmp_path, monkeypatch, "check_rendering", CHAT, "chat", PACK, _tokenizer(tokenizer, uncased)
    )
    judged = whole["examples_by_content"] if tokenizer == "uncased" else whole["examples_rendered"]
    assert judged == 60 and whole["examples_misrendered"] == 0


@pytest.mark.gate("GATE-SFT-001")
def test_one_turn_off_by_one_among_all_fires_and_the_rendering_itself_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = prepare_sft([CHAT], tmp_path / "held", fmt="chat", pack_len=PACK, val_fraction=0.0)
    assert manifest.sft is not None
    seen: list[int] = []
    real = sft_prepare.render

    def render(*args: Any) -> Rendered:
        seen.append(1)
        return _shifted(real, 1, turns=1)(*args) if len(seen) == 1 else real(*args)

    monkeypatch.setattr(sft_prepare, "render", render)
    with pytest.raises(GateViolation, match=r"GATE-SFT-001.*1 assistant turn\(s\) supervise other tokens"):
        prepare_sft([CHAT], tmp_path / "off", fmt="chat", pack_len=PACK, val_fraction=0.0)


PREFS = DATA / "prefs_small.jsonl"


@pytest.mark.holds("GATE-SFT-001")
@pytest.mark.parametrize("tokenizer", ["byte", "bpe", "uncased"])
def test_every_pair_of_the_prefs_fixture_reads_back_as_its_prompt_and_both_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uncased: Path, tokenizer: str
) -> None:
    """The benign side for preference pairs: each pair's rows read back as the prompt and the chosen
    answer, then the prompt and the rejected one (padding and end-of-text are no text)."""
    whole = _prepared_judged(
        tmp_path, monkeypatch, "check_rendering", PREFS, "prefs", 2 * PACK, _tokenizer(tokenizer, uncased)
    )
    judged = whole["examples_by_content"] if tokenizer == "uncased" else whole["examples_rendered"]
    pairs = sum(1 for line in PREFS.read_text(encoding="utf-8").splitlines() if line.strip())
    assert 0 < judged <= pairs and whole["examples_misrendered"] == 0


def _rows_swapped(pair: Any, width: int, eot: int) -> Rendered:
    """A pair rendered with its answers swapped: the rejected row first, as if it were chosen."""
    return REAL_RENDER_PAIR(type(pair)(pair.prompt, pair.completions[::-1]), width, eot)


def _prompt_cut_in_the_rejected_row(pair: Any, width: int, eot: int) -> Rendered:
    """A pair whose rejected row lost its prompt's first token (its mask and padding made to match,
    so only the text can tell)."""
    chosen = prefs_rows._row(pair.prompt, pair.completions[0], width, eot)
    rejected = prefs_rows._row(pair.prompt[1:], pair.completions[1], width, eot)
    ids, mask, padding = (np.asarray(a + b) for a, b in zip(chosen, rejected, strict=True))
    return Rendered(ids.astype(np.int64), mask.astype(np.uint8), 2, 0, padding.astype(bool))


REAL_RENDER_PAIR = sft_prepare.render_pair


@pytest.mark.gate("GATE-SFT-001")
@pytest.mark.parametrize(
    "planted", [_rows_swapped, _prompt_cut_in_the_rejected_row], ids=["swapped", "prompt-cut"]
)
def test_a_pair_rendered_otherwise_than_its_prompt_and_answers_stops_stack_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], planted: Any
) -> None:
    """The chosen and rejected answers swapped (DPO would then train toward the rejected), or the
    rejected row's prompt cut by a token: each pair's ids read back against its text."""
    monkeypatch.setattr(sft_prepare, "render_pair", planted)
    argv = [
        "prepare",
        str(PREFS),
        "--format",
        "prefs",
        "--pack-len",
        str(2 * PACK),
        "--out",
        str(tmp_path / "out"),
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 3 and "GATE-SFT-001" in err and "not every message" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "manifest.json").exists()
