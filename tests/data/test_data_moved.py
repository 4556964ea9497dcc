"""A DATA_DIR that moved, through the real commands.

A run whose DATA_DIR moved is resumed with `--resume R --data NEWPLACE`, as the refusal advises;
the resume checks the new place's manifest and trains on it. A record that keeps the old place
would make `stack eval R --split val` refuse ("no DATA_DIR is recorded ... or it no longer exists")
and the next resume ask for --data again: the checked new place is the record's `data_dir` (what
stack.train.lineage reads), the checker holds it to the resume's --data, and eval tells "none
recorded" from "recorded but gone".

On a small chat set, the held-out shortfall must not advise "lower batch_size" at batch_size 1, by
keys no user could find, without naming eval.batches. The advice a lens's shortfall gives is
derived from what can still move (stack.data.heldout.Shortfall); the training loop evaluates a
split smaller than its set whole, and a set that lands on the split's copies one window a batch
(contracts.heldout); GATE-EVAL-001's line names the remedy for a split of too few distinct
windows even so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import BadInput
from stack.cli import main
from stack.data import heldout
from stack.data.filters.settings import dedup_flags
from stack.data.heldout import TRAINING_KNOBS, Shortfall, heldout_batches, heldout_split_windows
from stack.data.manifest import load_manifest
from stack.lens.train import LENS_KNOBS
from stack.train.config import resolve
from tests.support.ledger_support import findings
from tests.support.train_support import (
    evidence,
    metric_lines,
    prepared,
    smoke_args,
    smoke_start,
    train,
    verdicts,
)

WAIVER = "--waive GATE-EVAL-001 --reason TEXT"


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The last line of stderr: a refusal's or a fired gate's line, after any progress lines."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(RUN_DIR, old DATA_DIR, new DATA_DIR): a run trained 2 steps, its DATA_DIR moved, resumed to
    step 3 with `--data NEWPLACE` as the refusal advises."""
    root = tmp_path_factory.mktemp("moved")
    data, run = prepared(root), root / "run"
    assert train(smoke_args(data, run, "train.steps=2", "eval.every=2", "ckpt.every=2")) == 0
    moved = root / "moved"
    shutil.move(str(data), str(moved))
    assert train(["train", "--resume", str(run)]) == 2  # the place is gone: --data is asked for
    assert train(["train", "--resume", str(run), "--data", str(moved), "--set", "train.steps=3"]) == 0
    return run, data, moved


def test_a_resume_given_the_moved_data_records_its_new_place(moved_run: tuple[Path, Path, Path]) -> None:
    """The record states the checked new place, and the checker holds it to the resume's --data."""
    run, _old, moved = moved_run
    assert evidence(run)["metrics"]["data_dir"] == str(moved.resolve())
    assert findings(run) == []


def test_eval_and_the_next_resume_follow_the_recorded_place(
    moved_run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack eval R --split val` scores the new place's held-out split, and a plain resume
    continues without asking for --data again."""
    run, _old, moved = moved_run
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "val", "--max-bytes", "2000"]) == 0
    assert json.loads(capsys.readouterr().out)["overlap"]["training_data"] == str(moved.resolve())
    assert train(["train", "--resume", str(run), "--set", "train.steps=4"]) == 0


def test_eval_tells_a_gone_data_dir_from_none_recorded(
    moved_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where the recorded DATA_DIR is gone, eval names it and says to pass its new place; where
    none is recorded, it says so (two lines, not one for both). A text scored where the recorded
    DATA_DIR is gone is scored, with a note that nothing checked it against the training data."""
    run, _old, _moved = moved_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "metadata.json").read_text())
    gone = tmp_path / "gone"
    record["metrics"]["data_dir"] = str(gone)
    (copy / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
    capsys.readouterr()
    assert main(["eval", str(copy), "--split", "val"]) == 2
    line = _last_line(capsys)
    assert f"trained on DATA_DIR {gone}, which is not there any more" in line
    assert "pass its new place with --data DATA_DIR" in line
    text = tmp_path / "text.txt"
    text.write_text("a text to score, of a few words\n")
    assert main(["eval", str(copy), "--text", str(text)]) == 0
    found = capsys.readouterr()
    assert json.loads(found.out)["overlap"] == {"training_data": None}
    assert f"trained on DATA_DIR {gone}, which is not there any more: what it scores is not" in found.err
    del record["metrics"]["data_dir"]
    (copy / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
    assert main(["eval", str(copy), "--split", "val"]) == 2
    line = _last_line(capsys)
    assert "no DATA_DIR is recorded" in line and "no longer exists" not in line


def test_the_checker_holds_a_resumed_data_dir_to_the_resume_s_data(
    moved_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A record stating the old place where its resume named the new one is caught: the check reads
    the last --data, it does not accept any place."""
    run, old, _moved = moved_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "metadata.json").read_text())
    record["metrics"]["data_dir"] = str(old.resolve())
    (copy / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
    assert any(
        "metrics.data_dir" in line and "resume 1's command line's --data" in line for line in findings(copy)
    )


@pytest.fixture(scope="module")
def small_chat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(chat DATA_DIR, start RUN_DIR): 60 short chat examples with a fifth held out, fewer held-out
    windows than the set a run asks for by default, even at batch size 1."""
    root = tmp_path_factory.mktemp("chat")
    start = smoke_start(prepared(root), root / "start")
    chats = root / "chat.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"{i}+{i}"},
                {"role": "assistant", "content": f"{2 * i}"},
            ]
        }
        for i in range(60)
    ]
    chats.write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = root / "c"
    argv = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(start), "--val-fraction", "0.2"]
    assert main([*argv, "--out", str(data)]) == 0
    return data, start


def _sft(data: Path, start: Path, out: Path, *extra: str) -> int:
    sets = ["--set", "train.device='cpu'", "--set", "train.steps=2", "--set", "eval.every=2"]
    return main(
        [
            "sft",
            "--data",
            str(data),
            "--init-from",
            str(start),
            "--out",
            str(out),
            "--preset",
            "smoke",
            *sets,
            *extra,
        ]
    )


def test_a_heldout_split_smaller_than_the_set_trains_on_it_whole(
    small_chat: tuple[Path, Path], tmp_path: Path
) -> None:
    """A small chat set, under GATE-EVAL-001 rev 6: a held-out split of fewer windows than the set asks for
    is evaluated whole, one window a batch, at batch size 1 as at the default; and eval.batches
    below the split's windows is that many batches. No refusal, no waiver."""
    data, start = small_chat
    split = heldout_split_windows(data, load_manifest(data).sft.pack_len)  # type: ignore[union-attr]
    assert 2 < split < 16
    for size in (1, 4):
        run = tmp_path / f"b{size}"
        assert _sft(data, start, run, "--set", f"train.batch_size={size}") == 0
        assert {line["batches"] for line in metric_lines(run, "eval")} == {split}
    assert _sft(data, start, tmp_path / "two", "--set", "train.batch_size=1", "--set", "eval.batches=2") == 0
    assert {line["batches"] for line in metric_lines(tmp_path / "two", "eval")} == {2}


@given(
    windows=st.integers(0, 200),
    batches=st.integers(1, 40),
    batch_size=st.integers(1, 16),
    packed=st.booleans(),
    data=st.data(),
)
def test_the_advice_names_only_moves_that_can_help(
    windows: int, batches: int, batch_size: int, packed: bool, data: st.DataObject
) -> None:
    """Property: a smaller batch is advised only above 1 and where one fits, and to that size;
    fewer batches only to the number that fits; never a waiver, since no gate refuses a set for
    its size."""
    if windows >= batches * batch_size:
        return
    fits = data.draw(st.integers(0, batch_size - 1))
    most = data.draw(st.integers(0, windows // batch_size))
    advice = Shortfall(windows, batches, batch_size, packed, fits, most).advice(TRAINING_KNOBS)
    assert ("train.batch_size to" in advice) == (fits > 0)
    if fits:
        assert f"lower train.batch_size to {fits}" in advice
    if most:
        assert f"lower eval.batches to {most} or less" in advice
    assert WAIVER not in advice


def _copied_chat(root: Path, start: Path, examples: int, copies: int) -> Path:
    """A chat DATA_DIR of `examples` short examples, the whole file written `copies` times (an
    upweighting by copy), half held out, one example a window (`--pack-len 32`, the start's context)."""
    lines = [
        {"messages": [{"role": "user", "content": f"{i}+{i}"}, {"role": "assistant", "content": f"{2 * i}"}]}
        for i in range(examples)
    ]
    chats = root / f"chat-{examples}x{copies}.jsonl"
    chats.write_text("".join(json.dumps(line) + "\n" for line in lines * copies))
    data = root / f"c-{examples}x{copies}"
    argv = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(start), "--val-fraction", "0.5"]
    assert main([*argv, "--pack-len", "32", "--out", str(data)]) == 0
    return data


@pytest.fixture(scope="module")
def repeated_chat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(chat DATA_DIR, start RUN_DIR): 120 short examples written three times, half held out: 198
    held-out windows of 66 distinct examples, in three like runs, so an even spread of ids can land
    on the same examples in each. The start is a run with its record, so that the checker reads the
    tuned runs' lineage whole."""
    root = tmp_path_factory.mktemp("repeated")
    start = root / "start"
    assert train(smoke_args(prepared(root), start, "train.steps=2", "eval.every=2", "ckpt.every=2")) == 0
    return _copied_chat(root, start, 120, 3), start


def _set_measured(run: Path) -> dict[str, Any]:
    """GATE-EVAL-001's measured values of the run's record."""
    return next(g["measured"] for g in evidence(run)["gates"] if g["id"] == "GATE-EVAL-001")


def test_a_set_that_lands_on_the_split_s_copies_is_read_one_window_a_batch(
    repeated_chat: tuple[Path, Path], tmp_path: Path
) -> None:
    """At a batch of 3, the 48 windows 16 batches draw hold 16 distinct examples: as batches of 3,
    too few for GATE-EVAL-001 (48), and refused at any --val-fraction, since a copy is held out with
    its first. The same windows one a batch are held to 16 distinct ones and pass (GATE-EVAL-001),
    the batches asked are the 48 (GATE-EVAL-002's check asked), and the checker derives that shape
    from the config, the split and the distinct windows. A split smaller than the set (198 windows
    against 16 batches of 13) is evaluated whole."""
    data, start = repeated_chat
    assert _sft(data, start, tmp_path / "b13", "--set", "train.batch_size=13") == 0
    assert _set_measured(tmp_path / "b13")["heldout_batches"] == 198
    run = tmp_path / "b3"
    assert _sft(data, start, run, "--set", "train.batch_size=3") == 0
    measured = _set_measured(run)
    assert (measured["heldout_batches"], measured["batch_size"], measured["distinct_windows"]) == (48, 1, 16)
    assert {line["batches"] for line in metric_lines(run, "eval")} == {48}
    assert findings(run, start) == []
    verify = ["prepare", "--verify", "--out", str(data), "--seq-len", "32", "--batch-size", "3"]
    assert main(verify) == 0


@pytest.mark.gate("GATE-EVAL-001")
def test_a_set_on_the_copies_served_in_batches_of_several_stops_the_run(
    repeated_chat: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: the reader keeps the batches of 3 it drew on the copies (16 distinct windows of the 48
    its 16 batches read); the set check stops the run before its first step."""
    data, start = repeated_chat
    monkeypatch.setattr(heldout, "_shaped", lambda drawn, *_: drawn)
    capsys.readouterr()
    assert _sft(data, start, tmp_path / "run", "--set", "train.batch_size=3") == 3
    line = _last_line(capsys)
    assert "GATE-EVAL-001" in line and "16 distinct windows in 16 batches of 3" in line, line


@pytest.mark.gate("GATE-EVAL-002")
def test_a_set_off_the_copies_read_one_window_a_batch_stops_the_run(
    repeated_chat: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the reader reads one window a batch a set whose windows hold no copy (at a batch of 2,
    32 distinct of 32), which the rule keeps in 16 batches of 2; check asked stops the run at its
    first evaluation. The same set as drawn trains."""
    data, start = repeated_chat
    assert _sft(data, start, tmp_path / "drawn", "--set", "train.batch_size=2") == 0
    assert _set_measured(tmp_path / "drawn")["heldout_batches"] == 16

    def single(drawn: Any, *_: object) -> Any:
        return drawn.reshape(-1, 1, drawn.shape[-1])

    monkeypatch.setattr(heldout, "_shaped", single)
    run = tmp_path / "run"
    assert _sft(data, start, run, "--set", "train.batch_size=2") == 3
    assert verdicts(run)["GATE-EVAL-002"] == "FAIL" and _set_measured(run)["heldout_batches"] == 32


def test_a_split_of_too_few_distinct_examples_names_dedup_and_deduplicated_it_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twelve examples written twelve times: the held-out half holds a few distinct examples in some
    seventy windows, fewer than the 16 distinct ones a set of single windows is held to. The run
    halts on GATE-EVAL-001 naming the default filters with dedup, the one fix that removes the
    copies (a larger --val-fraction holds them with their first), and `prepare --verify` says the
    same; prepared with those filters, the split is smaller than the set and the run trains."""
    start = smoke_start(prepared(tmp_path), tmp_path / "start")
    data = _copied_chat(tmp_path, start, 12, 12)
    capsys.readouterr()
    assert _sft(data, start, tmp_path / "run", "--set", "train.batch_size=3") == 3
    line = _last_line(capsys)
    assert "GATE-EVAL-001" in line and "repeats its windows" in line, line
    assert f"prepare it again with {dedup_flags()}, which keeps the first of each" in line, line
    verify = ["prepare", "--verify", "--out", str(data), "--seq-len", "32", "--batch-size", "3"]
    assert main(verify) == 2 and dedup_flags() in _last_line(capsys)
    chats = tmp_path / "chat-12x12.jsonl"
    argv = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(start), "--val-fraction", "0.5"]
    argv += ["--pack-len", "32", "--out", str(tmp_path / "deduplicated"), *dedup_flags().split()]
    assert main(argv) == 0
    assert _sft(tmp_path / "deduplicated", start, tmp_path / "ok", "--set", "train.batch_size=3") == 0


def test_the_lens_shortfall_names_the_lens_options(tmp_path: Path) -> None:
    """The lens comparison sizes its held-out set by its own options, which no gate judges: its refusal
    names those, never the training loop's keys or GATE-EVAL-001's waiver."""
    with pytest.raises(BadInput) as refused:
        heldout_batches(prepared(tmp_path), 4, 32, 100_000, knobs=LENS_KNOBS)
    assert "lower --heldout-batches to" in str(refused.value) and "--seq-len" in str(refused.value)
    assert "train." not in str(refused.value) and "GATE-EVAL-001" not in str(refused.value)


@pytest.mark.parametrize("key", ["batch_size", "batches", "seq_len"])
def test_each_key_the_training_advice_names_is_one_set_accepts(key: str) -> None:
    """The advice names keys a user can pass to `--set`: a training window is train.seq_len, which
    a run started from a model can set where its model.ctx is fixed (the smoke preset's is 32)."""
    name = getattr(TRAINING_KNOBS, key)
    value = 16 if key == "seq_len" else 2
    config = resolve("smoke", None, [f"{name}={value}"], vocab=256)
    section, field = name.split(".")
    assert getattr(getattr(config, section), field) == value
