"""TokenReader and held-out batches: order, epochs, ranks, restore, sources, and their gates."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict, sha256_file
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.artifacts import INDEX_FILE
from stack.data import mixture
from stack.data import reader as reader_module
from stack.data.hashing import batch_sha256
from stack.data.heldout import heldout_batches, heldout_split_windows
from stack.data.manifest import DataFile, load_manifest, write_manifest
from stack.data.prepare import prepare_corpus
from stack.data.reader import CorpusExhausted, TokenReader
from stack.data.shards import HEADER
from stack.data.split import INDEX_DTYPE
from stack.data.windows import WindowTable
from stack.lens.train import LENS_KNOBS
from tests.support.train_support import prepared, smoke_args, train

B, T = 4, 16


def random_docs(n: int, seed: int, letters: str = "abcdefghijklmnopqrstuvwxyz") -> dict[str, str]:
    """n documents of random letters and spaces: windows of them are unique in practice."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(letters + "  "))
    return {f"d{i:03d}.txt": "".join(rng.choice(alphabet, int(rng.integers(60, 400)))) for i in range(n)}


def prepare(root: Path, groups: dict[str, dict[str, str]], **options: object) -> Path:
    """Write each source's documents under root/<source>/ and prepare them into root/data."""
    inputs = []
    for source, docs in groups.items():
        for rel, text in docs.items():
            (root / source).mkdir(parents=True, exist_ok=True)
            (root / source / rel).write_text(text, encoding="utf-8")
        inputs.append(f"{source}={root / source}")
    prepare_corpus(inputs, root / "data", **{"val_fraction": 0.2, **options})  # type: ignore[arg-type]
    return root / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(tmp_path_factory.mktemp("reader"), {"main": random_docs(60, seed=0)})


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Source `a` is only the letter a, source `b` only b: a window shows where it came from."""
    groups = {name: {f"d{i:02d}.txt": name * (60 + 7 * i) for i in range(30)} for name in ("a", "b")}
    return prepare(tmp_path_factory.mktemp("sources"), groups, val_fraction=0.0)


def train_tokens(data: Path, split: str = "train") -> np.ndarray:
    parts = [
        np.fromfile(data / s.path, dtype="<u2", offset=HEADER.size).astype(np.int64)
        for s in load_manifest(data).shards_of(split)
    ]
    return np.concatenate(parts)


def window_index(data: Path, split: str = "train") -> dict[bytes, int]:
    """Window content -> its start in the split's tokens (the split here is one shard)."""
    tokens = train_tokens(data, split)
    return {tokens[s : s + T + 1].tobytes(): s for s in range(0, len(tokens) - T, T)}


def starts_of(batch: torch.Tensor, index: dict[bytes, int]) -> list[int]:
    return [index[row.numpy().tobytes()] for row in batch]


def test_batches_are_int64_windows_of_the_split(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=1)
    index = window_index(data)
    for _ in range(10):
        batch = reader.next_batch()
        assert batch.shape == (B, T + 1) and batch.dtype == torch.int64
        assert all(start % T == 0 for start in starts_of(batch, index))
    assert reader.step == 10 and reader.unique_tokens == load_manifest(data).totals["train"].tokens


def test_an_epoch_reads_each_window_once_then_wraps_and_reshuffles(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=3)
    index = window_index(data)
    epochs = []
    with caplog.at_level(logging.INFO, logger="stack.data.reader"):
        for _ in range(2):
            epochs.append(
                [s for _ in range(reader.steps_per_epoch) for s in starts_of(reader.next_batch(), index)]
            )
        reader.next_batch()
    assert reader.steps_per_epoch == len(index) // B
    assert all(len(set(order)) == len(order) == reader.steps_per_epoch * B for order in epochs)
    assert epochs[0] != epochs[1]
    assert reader.epoch == 2 and "wrapping to epoch 1" in caplog.text and "wrapping to epoch 2" in caplog.text


def test_ranks_read_disjoint_windows(data: Path) -> None:
    readers = [TokenReader(data, batch_size=B, seq_len=T, seed=5, rank=r, world_size=3) for r in range(3)]
    index = window_index(data)
    seen: list[int] = []
    for _ in range(readers[0].steps_per_epoch):
        seen += [s for reader in readers for s in starts_of(reader.next_batch(), index)]
    assert len(seen) == len(set(seen)) == readers[0].steps_per_epoch * 3 * B


def test_order_is_a_pure_function_of_the_seed(data: Path) -> None:
    def hashes(seed: int) -> list[str]:
        reader = TokenReader(data, batch_size=B, seq_len=T, seed=seed)
        return [batch_sha256(reader.next_batch()) for _ in range(25)]

    assert hashes(7) == hashes(7) != hashes(8)


def test_the_stream_does_not_depend_on_the_chunk_size(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hashes() -> list[str]:
        reader = TokenReader(data, batch_size=B, seq_len=T, seed=9)
        return [batch_sha256(reader.next_batch()) for _ in range(int(2.5 * reader.steps_per_epoch))]

    whole_epochs = hashes()
    monkeypatch.setattr(reader_module, "CHUNK_TOKENS", 3 * B * (T + 1))
    assert hashes() == whole_epochs
    monkeypatch.setattr(reader_module, "CHUNK_TOKENS", 1)
    assert hashes() == whole_epochs


def test_batch_sha256_hashes_int64_ids() -> None:
    batch = torch.arange(12).reshape(3, 4)
    assert batch_sha256(batch) == batch_sha256(batch.to(torch.int32)) != batch_sha256(batch + 1)
    import hashlib

    assert batch_sha256(batch) == hashlib.sha256(batch.numpy().astype("<i8").tobytes()).hexdigest()


# -- GATE-DATA-001: never a placeholder ---------------------------------------------------------


def test_without_wrap_the_end_of_the_corpus_raises(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0, wrap=False)
    batches = [reader.next_batch() for _ in range(reader.steps_per_epoch)]
    assert len({batch_sha256(b) for b in batches}) == len(batches)
    for _ in range(2):
        with pytest.raises(CorpusExhausted, match="wrap=False"):
            reader.next_batch()


def _never_stops(reader: TokenReader) -> None:
    """The original bug: out of data, the reader neither wraps nor stops."""


def _repeats_the_last_batch(reader: TokenReader) -> None:
    reader._index -= 1


def _replays_the_epoch(reader: TokenReader) -> None:
    reader._index = 0  # "wraps" without moving to the next epoch's order


@pytest.mark.gate("GATE-DATA-001")
@pytest.mark.parametrize("bug", [_never_stops, _repeats_the_last_batch, _replays_the_epoch])
def test_a_reader_that_serves_past_the_end_is_caught(
    data: Path, monkeypatch: pytest.MonkeyPatch, bug: Callable[[TokenReader], None]
) -> None:
    monkeypatch.setattr(TokenReader, "_roll_epoch", bug)
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0, wrap=False)
    for _ in range(reader.steps_per_epoch):
        reader.next_batch()
    with recording(Ledger()) as ledger, pytest.raises(GateViolation, match="GATE-DATA-001"):
        reader.next_batch()
    assert ledger.results["GATE-DATA-001"].verdict is Verdict.FAIL


@pytest.mark.gate("GATE-DATA-001")
def test_a_chunk_out_of_sequence_inside_an_epoch_is_caught(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "CHUNK_TOKENS", 2 * B * (T + 1))
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    for _ in range(3):
        reader.next_batch()  # the second chunk is half served
    reader._served = len(reader._chunk)  # plant: drop the rest of the chunk, then re-read from step 3
    with pytest.raises(GateViolation, match=r"GATE-DATA-001.*does not follow"):
        reader.next_batch()


@pytest.mark.gate("GATE-DATA-001")
def test_a_constant_placeholder_batch_is_caught(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    monkeypatch.setattr(WindowTable, "gather", lambda self, ids: np.zeros((len(ids), T + 1), dtype=np.int64))
    with pytest.raises(GateViolation, match="placeholder"):
        reader.next_batch()


@pytest.mark.gate("GATE-DATA-001")
def test_a_batch_that_keeps_only_first_tokens_is_caught(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Padding behind each window's real first token: every token is compared, not a sample."""
    real_gather = WindowTable.gather

    def first_token_only(self: WindowTable, ids: np.ndarray) -> np.ndarray:
        windows = real_gather(self, ids)
        windows[:, 1:] = 0
        return windows

    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    monkeypatch.setattr(WindowTable, "gather", first_token_only)
    with pytest.raises(GateViolation, match="placeholder"):
        reader.next_batch()


@pytest.mark.gate("GATE-DATA-001")
def test_a_next_batch_that_serves_its_chunks_first_batch_again_is_caught_where_the_model_takes_it(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk was gathered right (its check holds); what leaves the reader is not the step's."""
    real = TokenReader.next_batch

    def first_of_chunk(self: TokenReader) -> torch.Tensor:
        real(self)  # the reader advances as it should
        return self._chunk[0]

    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    reader_module.check_served(
        reader, reader.next_batch(), 1, reader.seed
    )  # step 1: the chunk's first, rightly
    monkeypatch.setattr(TokenReader, "next_batch", first_of_chunk)
    with pytest.raises(GateViolation, match="differ from the planned windows"):
        reader_module.check_served(reader, reader.next_batch(), 2, reader.seed)


@pytest.mark.gate("GATE-DATA-001")
def test_stack_train_on_a_reader_that_repeats_a_batch_stops_at_that_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command: every step after the first trains on the chunk's first batch again."""
    real = TokenReader.next_batch

    def first_of_chunk(self: TokenReader) -> torch.Tensor:
        real(self)
        return self._chunk[0]

    monkeypatch.setattr(TokenReader, "next_batch", first_of_chunk)
    out = tmp_path / "run"
    code = train(smoke_args(prepared(tmp_path), out, "train.steps=3"))
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-001" in err and "Traceback" not in err, err
    assert json.loads((out / "metadata.json").read_text())["run"]["status"] == "halted"


@pytest.mark.gate("GATE-DATA-001")
def test_one_token_off_in_a_served_batch_is_caught_and_the_batch_itself_holds(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    served = reader.next_batch()
    reader_module.check_served(reader, served, 1, reader.seed)
    off = served.clone()
    off[B - 1, T] += 1
    outcome = reader_module.served_outcome(reader, off, 1, reader.seed)
    assert not outcome.ok and outcome.measured["windows_mismatched"] == 1


@pytest.mark.gate("GATE-DATA-001")
@pytest.mark.parametrize("taken", [2, 4])
def test_a_reader_whose_count_is_not_the_runs_is_caught_though_its_batch_is_planned(
    data: Path, taken: int
) -> None:
    """The reader served its own step 3's planned windows; the run is at its batch 2 or 4 (one
    batch either side): a stream that restarted or skipped, caught by the counts alone."""
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    for _ in range(2):
        reader.next_batch()
    served = reader.next_batch()
    outcome = reader_module.served_outcome(reader, served, taken, reader.seed)
    assert outcome.measured["windows_mismatched"] == 0
    with pytest.raises(GateViolation, match=f"has served 3 batch\\(es\\) where the run has taken {taken}"):
        reader_module.check_served(reader, served, taken, reader.seed)


@pytest.mark.holds("GATE-DATA-001")
def test_the_runs_own_count_holds(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    for taken in range(1, 4):
        reader_module.check_served(reader, reader.next_batch(), taken, reader.seed)


def test_the_reference_windows_equal_the_gathered_ones(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    ids = np.arange(reader._table.total)
    assert np.array_equal(reader._table.reference_windows(ids), reader._table.gather(ids))


# -- GATE-DATA-002: restore continues the exact stream -----------------------------------------


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    world_size=st.integers(1, 3),
    rank_pick=st.integers(0, 2),
    steps=st.integers(0, 40),
    batch_size=st.integers(1, 3),
    chunk=st.integers(1, 5),
)
def test_restore_at_any_step_continues_the_stream(
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    world_size: int,
    rank_pick: int,
    steps: int,
    batch_size: int,
    chunk: int,
) -> None:
    monkeypatch.setattr(
        reader_module, "CHUNK_TOKENS", chunk * batch_size * (T + 1)
    )  # chunks of `chunk` batches
    options = {"batch_size": batch_size, "seq_len": T, "seed": seed, "world_size": world_size}
    rank = rank_pick % world_size
    original = TokenReader(data, rank=rank, **options)
    for _ in range(steps):
        original.next_batch()
    state = json.loads(json.dumps(original.state_dict()))
    expected = [batch_sha256(original.next_batch()) for _ in range(6)]
    restored = TokenReader(data, rank=rank, **{**options, "seed": 0})  # the state brings the seed
    restored.load_state_dict(state)
    assert (restored.epoch, restored.step) == (state["epoch"], state["step"])
    assert [batch_sha256(restored.next_batch()) for _ in range(6)] == expected


@pytest.mark.gate("GATE-DATA-002")
def test_a_restore_that_rewinds_is_caught(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the bug of the origin: the resumed reader starts the epoch again from the top."""
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=2)
    for _ in range(5):
        reader.next_batch()
    state = reader.state_dict()
    seek = TokenReader._seek
    monkeypatch.setattr(TokenReader, "_seek", lambda self, epoch, index, step: seek(self, epoch, 0, step))
    with pytest.raises(GateViolation, match=r"GATE-DATA-002.*would not continue"):
        TokenReader(data, batch_size=B, seq_len=T, seed=2).load_state_dict(state)


def test_a_state_for_other_data_or_shapes_is_refused(data: Path, two_sources: Path) -> None:
    state = TokenReader(data, batch_size=B, seq_len=T, seed=0).state_dict()
    with pytest.raises(BadInput, match=r"made for manifest .* the data changed"):
        TokenReader(two_sources, batch_size=B, seq_len=T, seed=0).load_state_dict(state)
    with pytest.raises(BadInput, match="batch_size"):
        TokenReader(data, batch_size=B + 1, seq_len=T, seed=0).load_state_dict(state)
    with pytest.raises(BadInput, match="not a reader state"):
        TokenReader(data, batch_size=B, seq_len=T, seed=0).load_state_dict({"epoch": -1})


# -- GATE-DATA-003: shards match the manifest ---------------------------------------------------


def _flip_a_byte(path: Path, _other: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER.size + 7] ^= 0x01
    path.write_bytes(bytes(raw))


def _truncate(path: Path, _other: Path) -> None:
    path.write_bytes(path.read_bytes()[:-2])


def _swap(path: Path, other: Path) -> None:
    first, second = path.read_bytes(), other.read_bytes()
    path.write_bytes(second)
    other.write_bytes(first)


def _remove(path: Path, _other: Path) -> None:
    path.unlink()


def _lie_in_the_header(path: Path, _other: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[16] ^= 0x01  # the token count
    path.write_bytes(bytes(raw))


@pytest.mark.gate("GATE-DATA-003")
@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _swap, _remove, _lie_in_the_header])
def test_a_damaged_shard_is_refused_by_name(tmp_path: Path, damage: Callable[[Path, Path], None]) -> None:
    data = prepare(tmp_path, {"main": random_docs(40, seed=4)}, shard_tokens=2000)
    shards = load_manifest(data).shards_of("train")
    assert len(shards) >= 2
    damage(data / shards[0].path, data / shards[1].path)
    with recording(Ledger()) as ledger, pytest.raises(BadInput, match=shards[0].path):
        TokenReader(data, batch_size=B, seq_len=T, seed=0)
    assert ledger.results["GATE-DATA-003"].verdict is Verdict.FAIL


def test_structural_damage_is_refused_even_with_contracts_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard too short for its header is bad input before GATE-DATA-003 judges a checksum, so
    no contract mode reads past its end (the gate's falsifiers are the damaged-shard tests)."""
    data = prepare(tmp_path, {"main": random_docs(20, seed=4)})
    _truncate(data / load_manifest(data).shards_of("train")[0].path, data)
    monkeypatch.setenv("GATESTACK_CONTRACTS", "off")
    with pytest.raises(BadInput, match="truncated or replaced"):
        TokenReader(data, batch_size=B, seq_len=T, seed=0)


# -- GATE-DATA-005: train and held-out disjoint -------------------------------------------------


@pytest.mark.gate("GATE-DATA-005")
def test_a_document_in_both_splits_is_caught_by_the_reader(tmp_path: Path) -> None:
    """Plant an index that puts one document on both sides (with a manifest that vouches for it)."""
    data = prepare(tmp_path, {"main": random_docs(20, seed=6)})
    index = np.load(data / INDEX_FILE)
    leaked = np.concatenate(
        [index, np.array([(index["doc"][0], 1 - index["heldout"][0])], dtype=INDEX_DTYPE)]
    )
    with open(data / INDEX_FILE, "wb") as handle:
        np.save(handle, leaked)
    manifest = load_manifest(data)
    entry = DataFile(
        path=INDEX_FILE, bytes=(data / INDEX_FILE).stat().st_size, sha256=sha256_file(data / INDEX_FILE)
    )
    write_manifest(data, manifest.model_copy(update={"documents": entry}))
    with pytest.raises(GateViolation, match=r"GATE-DATA-005.*in both train and held-out"):
        TokenReader(data, batch_size=B, seq_len=T, seed=0)
    with pytest.raises(GateViolation, match="GATE-DATA-005"):
        heldout_batches(data, 1, 4)


# -- sources, weights, caps and GATE-DATA-006 ---------------------------------------------------


def _letters(reader: TokenReader, steps: int) -> dict[str, int]:
    """Windows per source over `steps` batches (a window of source a holds no b)."""
    counts = {"a": 0, "b": 0}
    for _ in range(steps):
        for row in reader.next_batch():
            counts["b" if bool((row == ord("b")).any()) else "a"] += 1
    return counts


def test_weights_and_caps_shape_an_epoch(two_sources: Path) -> None:
    plain = TokenReader(two_sources, batch_size=1, seq_len=T, seed=0)
    natural = _letters(plain, plain.steps_per_epoch)
    assert natural["a"] > 0 and natural["b"] > 0
    weighted = TokenReader(two_sources, batch_size=1, seq_len=T, seed=0, source_weights={"a": 2.0, "b": 0.5})
    counts = _letters(weighted, weighted.steps_per_epoch)
    assert counts == {"a": 2 * natural["a"], "b": natural["b"] // 2}
    capped = TokenReader(two_sources, batch_size=1, seq_len=T, seed=0, source_caps={"a": 10 * T})
    assert _letters(capped, capped.steps_per_epoch) == {"a": 10, "b": natural["b"]}


@pytest.mark.parametrize(
    "options",
    [
        {"source_weights": {"c": 1.0}},
        {"exclude": ["c"]},
        {"source_caps": {"c": 5}},
        {"source_weights": {"a": -1.0}},
    ],
)
def test_unknown_sources_and_negative_weights_are_bad_input(two_sources: Path, options: dict) -> None:
    with pytest.raises(BadInput, match=r"unknown source 'c'|must be finite and >= 0"):
        TokenReader(two_sources, batch_size=1, seq_len=T, seed=0, **options)


def test_excluding_every_source_names_the_sources_not_the_batch_size(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data.exclude=["main"]`, the only source, is refused naming the sources, not as an epoch of 0
    windows, "lower the batch size or the window"."""
    assert train(smoke_args(data, tmp_path / "run", 'data.exclude=["main"]')) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data.exclude leaves no source to sample (the data has: main)" in err and "batch_size" not in err


def test_an_excluded_source_stays_excluded_after_a_restore(
    two_sources: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The zombie arm: the saved state gives `b` weight 1; the restarted run excludes it."""
    before = TokenReader(two_sources, batch_size=2, seq_len=T, seed=4)
    assert _letters(before, 5)["b"] > 0
    state = before.state_dict()
    assert state["source_weights"]["b"] == 1.0
    after = TokenReader(two_sources, batch_size=2, seq_len=T, seed=4, exclude=["b"])
    with caplog.at_level(logging.WARNING, logger="stack.data.mixture"):
        after.load_state_dict(state)
    assert "'b' is excluded" in caplog.text
    assert _letters(after, 3 * after.steps_per_epoch)["b"] == 0
    assert after.unique_tokens == sum(s.tokens for s in load_manifest(two_sources).shards if s.source == "a")


@pytest.mark.gate("GATE-DATA-006")
def test_a_restore_that_resurrects_an_excluded_source_is_caught(
    two_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = TokenReader(two_sources, batch_size=2, seq_len=T, seed=4).state_dict()
    after = TokenReader(two_sources, batch_size=2, seq_len=T, seed=4, exclude=["b"])
    # Plant the bug: the restored weights are taken as they come, the exclude list ignored.
    monkeypatch.setattr(mixture, "effective_weights", lambda sources, weights, exclude, origin: dict(weights))
    with pytest.raises(GateViolation, match=r"GATE-DATA-006.*excluded source"):
        after.load_state_dict(state)


# -- held-out batches and bad input ---------------------------------------------------------------


def test_heldout_batches_are_fixed_and_from_the_heldout_split(data: Path) -> None:
    minimum = int(load_spec().threshold("GATE-EVAL-001", "min_heldout_batches"))
    batches = heldout_batches(data, 2, 8)
    assert len(batches) == minimum and all(b.shape == (2, 9) and b.dtype == torch.int64 for b in batches)
    assert [batch_sha256(b) for b in batches] == [batch_sha256(b) for b in heldout_batches(data, 2, 8)]
    heldout = train_tokens(data, "heldout")
    windows = {heldout[s : s + 9].tobytes() for s in range(0, len(heldout) - 8, 8)}
    assert all(row.numpy().tobytes() in windows for b in batches for row in b)
    assert len(heldout_batches(data, 2, 8, n_batches=minimum + 3)) == minimum + 3


def test_heldout_too_small_or_too_few_is_bad_input(data: Path) -> None:
    with pytest.raises(BadInput, match="must be >= 1"):
        heldout_batches(data, 2, 8, n_batches=0)
    with pytest.raises(BadInput, match=r"held-out split .* need"):
        heldout_batches(data, 64, 64, knobs=LENS_KNOBS)  # a lens's set is what it asks for, or refused
    with pytest.raises(BadInput, match=r"held-out split .* need"):
        heldout_batches(data, 1, 10**9)  # no window at all: nothing a run could measure


def test_a_heldout_split_smaller_than_the_set_is_the_set_whole(data: Path) -> None:
    """The training loop's set, where the split holds fewer windows than it asks for: every window
    of the split once, one a batch."""
    whole = heldout_batches(data, 64, 64)
    windows = heldout_split_windows(data, 64)
    assert 0 < windows < 64 * int(load_spec().threshold("GATE-EVAL-001", "min_heldout_batches"))
    assert len(whole) == windows and all(b.shape == (1, 65) for b in whole)
    assert len({b.numpy().tobytes() for b in whole}) == windows


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"seq_len": 100_000}, "context longer than the corpus"),
        ({"batch_size": 10_000}, "one step needs 10000 windows"),
        ({"rank": 2, "world_size": 2}, "rank=2"),
        ({"seq_len": 0}, "seq_len=0"),
        ({"split": "test"}, "split 'test'"),
    ],
)
def test_reader_bad_input(data: Path, options: dict, needle: str) -> None:
    with pytest.raises(BadInput, match=needle):
        TokenReader(data, **{"batch_size": B, "seq_len": T, "seed": 0, **options})


def _plan_of_the_first_epoch(self: TokenReader, epoch: int) -> np.ndarray:
    """Planted: the reader's plan cache ignores the epoch, so every epoch replays the
    first's order (its own GATE-DATA-001/002 checks run only when a plan is made: never again)."""
    if self._plan_cache is None:
        self._plan_cache = (epoch, self._epoch_plan(epoch))
    return self._plan_cache[1]


@pytest.mark.gate("GATE-DATA-001")
def test_a_reader_that_serves_the_first_epochs_plan_again_is_caught_at_the_next_epoch(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch of epoch 0 is its plan's; the first batch of epoch 1, served from epoch 0's plan
    again, is not epoch 1's: the served check reads a plan of its own, never the reader's cache."""
    monkeypatch.setattr(TokenReader, "_plan", _plan_of_the_first_epoch)
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    for taken in range(1, reader.steps_per_epoch + 1):
        reader_module.check_served(reader, reader.next_batch(), taken, reader.seed)
    with pytest.raises(GateViolation, match="differ from the planned windows"):
        reader_module.check_served(reader, reader.next_batch(), reader.steps_per_epoch + 1, reader.seed)


@pytest.mark.holds("GATE-DATA-001")
def test_every_batch_of_two_epochs_is_its_epochs_plan(data: Path) -> None:
    reader = TokenReader(data, batch_size=B, seq_len=T, seed=0)
    for taken in range(1, 2 * reader.steps_per_epoch + 2):
        reader_module.check_served(reader, reader.next_batch(), taken, reader.seed)
    assert reader.epoch == 2
