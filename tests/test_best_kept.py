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
from train_support import evidence, metric_lines, prepared, smoke_args, train

from contracts.checkpoints import BestSoFar, best_checkpoint_of
from stack.train import checkpoint as ckpt
from stack.train.best_kept import BestWatch
from stack.train.metrics import read_lines

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
    monkeypatch.setattr(ckpt, "prune", lambda run_dir, keep_last, best: prune(run_dir, keep_last, None))
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
    """The round-4 audit's N08: the prune keeps keep_last + 1, so the run directory holds a
    checkpoint more than the run says it keeps (the mirror bug would delete a resumable one)."""
    prune = ckpt.prune
    monkeypatch.setattr(ckpt, "prune", lambda run_dir, keep_last, best: prune(run_dir, keep_last + 1, best))
    run = tmp_path / "run"
    assert (
        train(smoke_args(data, run, "train.steps=6", "eval.every=2", "ckpt.every=2", "ckpt.keep_last=1")) == 3
    )
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "a prune left step-0000002, step-0000004" in err, err
