"""GATE-CKPT-002 (check best): every prune keeps the checkpoint the run's metrics log names best.

A run at a learning rate that makes the held-out loss rise after its first evaluation, keeping one
checkpoint: its best (step 2) must survive the prunes beside the newest. A prune planted to forget
the best deletes it, and the run halts at that save naming the gate; the same run unplanted
completes with the best on disk and the record naming it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.checkpoints import BestSoFar, best_checkpoint_of
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.train import checkpoint as ckpt
from stack.train.best_kept import BestWatch
from stack.train.metrics import read_lines
from tests.support.train_support import evidence, metric_lines, prepared, smoke_args, train
from tests.support.tree_snapshot import snapshot
from tools.integrity.record_checks import check_record_truth

RISING = ("train.lr=1.0", "train.steps=4", "eval.every=2", "ckpt.every=2", "ckpt.keep_last=1")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("best-kept"))


def _heldout(run: Path) -> list[float]:
    return [line["heldout_loss"] for line in metric_lines(run, "eval")]


@pytest.mark.holds("GATE-CKPT-002")
def test_the_best_checkpoint_survives_every_prune(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *RISING)) == 0
    first, last = _heldout(run)
    assert last > first  # the run this check is about: the newest is not the best
    kept = sorted(path.name for path in ckpt.saved_checkpoints(run))
    assert kept == ["step-0000002", "step-0000004"]
    assert evidence(run)["metrics"]["best_checkpoint"] == "step-0000002"
    result = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-CKPT-002")
    assert result["verdict"] == "PASS" and result["measured"]["best_checkpoint"] == "step-0000002"


@pytest.mark.gate("GATE-CKPT-002")
def test_a_prune_that_forgets_the_best_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prune = ckpt.prune
    monkeypatch.setattr(
        ckpt, "prune", lambda run_dir, keep_last, written, keep: prune(run_dir, keep_last, written, ())
    )
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *RISING)) == 3
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "names step-0000002 its best checkpoint" in err, err
    assert [path.name for path in ckpt.saved_checkpoints(run)] == ["step-0000004"]
    record = json.loads((run / "metadata.json").read_text())
    assert record["run"]["status"] == "halted"


# A metrics log's lines as the loop writes them: steps, evaluations (a few distinct losses, so ties
# come up) and checkpoint events, in any order.
LINES = st.one_of(
    st.builds(lambda step: {"type": "step", "step": step, "loss": 1.0}, st.integers(1, 99)),
    st.builds(
        lambda step, loss: {"type": "eval", "step": step, "heldout_loss": loss},
        st.integers(1, 99),
        st.sampled_from([2.0, 2.5, 3.0]),
    ),
    st.builds(
        lambda step: {"type": "event", "step": step, "event": "checkpoint", "path": f"step-{step:07d}"},
        st.integers(1, 99),
    ),
    # rev 5: a checkpoint set aside (it did not verify), and the one an invocation resumed from
    st.builds(
        lambda event, step: {"type": "event", "step": step, "event": event, "path": f"step-{step:07d}"},
        st.sampled_from(["set_aside", "resumed"]),
        st.integers(1, 99),
    ),
)


@given(st.lists(st.lists(LINES, max_size=6), max_size=6), st.booleans())
def test_following_the_log_names_the_best_a_whole_read_names(chunks: list[list[dict]], torn: bool) -> None:
    """Checked after each chunk of lines is written, the followed log names the best checkpoint, and
    the checkpoints a prune keeps, as a read of the whole log names them; a line torn mid-write is
    left for when it is whole."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "metrics.jsonl"
        path.touch()
        watch = BestWatch(path)
        for chunk in chunks:
            with open(path, "a", encoding="utf-8") as log:
                log.writelines(json.dumps(line) + "\n" for line in chunk)
                if torn:
                    log.write('{"type": "eval", "heldout_loss": 0.')  # the rest comes with the next chunk
            fold = watch.read()
            assert fold.best == best_checkpoint_of(read_lines(path))
            assert fold.kept(2) == kept_after(read_lines(path), 2)
            if torn:
                with open(path, "a", encoding="utf-8") as log:
                    log.write('1, "step": 1}\n')


@given(st.lists(LINES, max_size=30), st.integers(1, 4))
def test_a_checkpoint_set_aside_is_never_kept_until_written_again(lines: list[dict], keep_last: int) -> None:
    """What a prune keeps (contracts.checkpoints) never names a checkpoint whose last event is its
    setting aside, and always names the one the latest invocation resumed from, while written."""
    kept = kept_after(lines, keep_last)
    last: dict[str, str] = {}
    for line in lines:
        if line.get("event") in ("checkpoint", "set_aside"):
            last[line["path"]] = line["event"]
    assert not [name for name in kept if last.get(name) == "set_aside"]
    resumed = [line["path"] for line in lines if line.get("event") == "resumed"]
    if resumed and last.get(resumed[-1]) == "checkpoint":
        assert resumed[-1] in kept


def kept_after(lines: list[dict], keep_last: int) -> list[str]:
    """What a prune keeps by a whole read of the log's lines."""
    fold = BestSoFar()
    for line in lines:
        fold.take(line)
    return fold.kept(keep_last)


@pytest.mark.gate("GATE-CKPT-002")
def test_a_prune_that_keeps_one_checkpoint_too_many_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the prune keeps keep_last + 1, so the run directory holds a
    checkpoint more than the run says it keeps (the mirror bug would delete a resumable one)."""
    prune = ckpt.prune
    monkeypatch.setattr(
        ckpt, "prune", lambda run_dir, keep_last, written, keep: prune(run_dir, keep_last + 1, written, keep)
    )
    run = tmp_path / "run"
    assert (
        train(smoke_args(data, run, "train.steps=6", "eval.every=2", "ckpt.every=2", "ckpt.keep_last=1")) == 3
    )
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "a prune left step-0000002, step-0000004" in err, err


# -- a checkpoint that does not verify is set aside, never counted or deleted ----------


def _corrupt(checkpoint: Path) -> None:
    """Flip one bit of the checkpoint's weights (its manifest still says the old sha256)."""
    path = checkpoint / "model.safetensors"
    damaged = bytearray(path.read_bytes())
    damaged[-100] ^= 1
    path.write_bytes(damaged)


def _resume(run: Path, *sets: str) -> int:
    return train(["train", "--resume", str(run), *(word for item in sets for word in ("--set", item))])


def _events(run: Path, name: str) -> list[dict]:
    return [line for line in metric_lines(run, "event") if line.get("event") == name]


@pytest.mark.holds("GATE-CKPT-002")
def test_a_resume_past_a_corrupt_newest_checkpoint_sets_it_aside_and_keeps_what_it_resumed_from(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest checkpoint does not verify; the resume passes over it, as documented, and its
    first prune must not rank it among the newest, keep it and delete the valid step the run
    resumed from (which fires GATE-CKPT-002, exit 3): the corrupt one is set aside whole, said on
    stderr and in the log, and the prunes keep the checkpoint resumed from."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=4", "ckpt.every=2", "eval.every=2")) == 0
    _corrupt(run / "checkpoints" / "step-0000004")
    corrupt = snapshot(run / "checkpoints" / "step-0000004")
    capsys.readouterr()
    assert _resume(run, "train.steps=8", "ckpt.every=1") == 0
    err = capsys.readouterr().err
    assert "resuming from step-0000002 instead" in err
    assert "set aside step-0000004 as step-0000004.set-aside" in err and "nothing was deleted" in err
    assert snapshot(run / "checkpoints" / "step-0000004.set-aside") == corrupt
    kept = [path.name for path in ckpt.saved_checkpoints(run)]
    assert "step-0000002" in kept and kept[-2:] == ["step-0000007", "step-0000008"]
    assert all(ckpt.verify(run / "checkpoints" / name) is None for name in kept)
    assert [(e["path"], e["to"]) for e in _events(run, "set_aside")] == [
        ("step-0000004", "step-0000004.set-aside")
    ]
    assert [e["path"] for e in _events(run, "resumed")] == ["step-0000002"]
    record = read_evidence(run / "metadata.json")
    result = next(g for g in record.gates if g.id == "GATE-CKPT-002")
    assert result.verdict.value == "PASS" and "step-0000002" in result.measured["expected_checkpoints"]
    assert check_record_truth(record, run, load_spec()).violations == []


def _resumed_past_a_corrupt_older_checkpoint(data: Path, run: Path) -> int:
    """Six steps keeping three checkpoints (2, 4, 6), step 4's weights damaged, resumed to step 8:
    the newest three checkpoints the log records writing are 4, 6 and 8, and 4 does not verify."""
    sets = ("train.steps=6", "ckpt.every=2", "eval.every=2", "ckpt.keep_last=3")
    assert train(smoke_args(data, run, *sets)) == 0
    _corrupt(run / "checkpoints" / "step-0000004")
    return _resume(run, "train.steps=8")


@pytest.mark.holds("GATE-CKPT-002")
def test_a_prune_sets_aside_a_checkpoint_that_does_not_verify_and_keeps_the_newest_that_do(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _resumed_past_a_corrupt_older_checkpoint(data, run) == 0
    assert "set aside step-0000004 as step-0000004.set-aside" in capsys.readouterr().err
    kept = [path.name for path in ckpt.saved_checkpoints(run)]
    assert kept == ["step-0000002", "step-0000006", "step-0000008"]
    assert (run / "checkpoints" / "step-0000004.set-aside" / "model.safetensors").is_file()


@pytest.mark.gate("GATE-CKPT-002")
def test_a_prune_that_counts_a_checkpoint_that_does_not_verify_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prune believes every checkpoint the log names (rev 4 passed it: the names on disk were
    the newest three written): it keeps the damaged step 4 among the three and deletes the valid
    step 2. Counted by what verifies, the run keeps 6 and 8 where the log says 4, 6 and 8."""
    monkeypatch.setattr(ckpt, "_proof", lambda path, manifest_sha256: None)
    run = tmp_path / "run"
    assert _resumed_past_a_corrupt_older_checkpoint(data, run) == 3
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "a prune left step-0000006, step-0000008 that verify" in err, err
    assert not (run / "checkpoints" / "step-0000002").exists()  # what the bug deleted


@pytest.mark.gate("GATE-CKPT-002")
def test_a_prune_that_deletes_the_checkpoint_the_run_resumed_from_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed from step 2 past a damaged step 4 (evaluated only at the end, so no best to keep),
    a prune that keeps nothing besides the newest two deletes step 2 at the save of step 6: the
    only checkpoint of the run known good before this invocation."""
    prune = ckpt.prune
    monkeypatch.setattr(
        ckpt, "prune", lambda run_dir, keep_last, written, keep: prune(run_dir, keep_last, written, ())
    )
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=4", "ckpt.every=2", "eval.every=1000")) == 0
    _corrupt(run / "checkpoints" / "step-0000004")
    assert _resume(run, "train.steps=8", "ckpt.every=2") == 3
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "keeps step-0000002, step-0000004, step-0000006" in err, err
