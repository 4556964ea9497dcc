"""Fine-tuning the data people have: 100 to 10,000 examples train with the defaults.

Each journey is a user's: a model pretrained with its own tokenizer (byte or BPE), then
`stack prepare FILE --format chat|prefs --tokenizer RUN` with no --pack-len and no --val-fraction,
then `stack sft` or `stack dpo` with their defaults. None is refused: the pack length fits the
examples within the model's context, the held-out share aims at what the held-out loss's estimate
needs (GATE-EVAL-001's wanted_heldout_examples, at most max_val_fraction), a held-out split smaller
than the set a run asks for is evaluated whole, and a held-out loss too noisy for early stopping
trains with early stopping off, saying so (GATE-EVAL-001 rev 6).

Two defaults are not a test's length, and are set here: `stack sft` has no train.steps of its own
(it takes a preset's: smoke's 5 steps), and `stack dpo`'s 50 steps take about 0.35 s each on two
CPU cores (two models' forwards and the per-step gates), so it runs 2 with --steps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts.heldout import heldout_set_batches
from contracts.spec import load_spec
from stack.cli import main
from stack.data.heldout import heldout_split_windows
from stack.data.manifest import load_manifest
from stack.data.sft_prepare import aimed_val_fraction
from stack.train.early_stop import EarlyStopper
from tests.support.finetune_sizes_support import BASE_CTX, pretrained, write_chats, write_preferences
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import evidence, metric_lines, unjudged

SIZE = "GATE-EVAL-001"
MIN_BATCHES = load_spec().threshold(SIZE, "min_heldout_batches")
# Every size with each kind of data, and both tokenizers at the smallest; each tokenizer takes
# one of the other sizes of each kind in turn, so the module stays under a minute on two cores.
CHAT_JOURNEYS = [(100, "byte"), (100, "bpe"), (300, "byte"), (1_000, "bpe"), (10_000, "bpe")]
PREFS_JOURNEYS = [(100, "byte"), (100, "bpe"), (300, "bpe"), (1_000, "byte"), (10_000, "byte")]
SFT = ["--preset", "smoke", "--set", "train.device='cpu'"]
DPO = ["--device", "cpu", "--steps", "2"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pretrained models, one a tokenizer, built once for the module."""
    root = tmp_path_factory.mktemp("bases")
    return {tokenizer: pretrained(root, tokenizer) for tokenizer in ("byte", "bpe")}


def _prepared(source: Path, fmt: str, base: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`stack prepare SOURCE --format FMT --tokenizer BASE` with every other default; its notes."""
    assert main(["prepare", str(source), "--format", fmt, "--tokenizer", str(base), "--out", str(out)]) == 0
    return capsys.readouterr().err


def _check_prepared(data: Path, examples: int, notes: str) -> None:
    """Every example kept, packed to the longest within the model's context, held out at the share
    the estimate needs; and both choices said."""
    manifest = load_manifest(data)
    assert manifest.sft is not None
    assert sum(manifest.sft.examples.values()) == examples, manifest.sft.dropped
    assert not manifest.sft.dropped
    assert manifest.val_fraction == aimed_val_fraction(examples)
    assert "note: --pack-len" in notes and f"its context is {BASE_CTX}" in notes
    held = manifest.sft.examples["heldout"]
    assert f"note: --val-fraction {manifest.val_fraction:g} held out {held}" in notes


def _check_trained(run: Path, kind: str, data: Path, notes: str) -> None:
    """The run completed with every gate of its kind holding; its held-out set is the one asked
    for, or the whole split where that is smaller; early stopping judged, or is off and says so."""
    assert unjudged(run, kind) == {}
    config = evidence(run)["config"]
    size, window = config["train"]["batch_size"], load_manifest(data).sft.pack_len  # type: ignore[union-attr]
    evaluations = metric_lines(run, "eval")
    split = heldout_split_windows(data, window)
    assert {e["batches"] for e in evaluations} == {heldout_set_batches(None, MIN_BATCHES, split, size)}
    judged = next(g for g in evidence(run)["gates"] if g["id"] == SIZE)["measured"]["early_stop"]
    off = evaluations[-1]["early_stop_off"]
    assert judged is (off is None)
    assert (off is None) or (f"note: {off}" in notes)


@pytest.mark.parametrize(("examples", "tokenizer"), CHAT_JOURNEYS)
def test_chat_examples_fine_tune_with_the_defaults(
    examples: int, tokenizer: str, bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, data, run = bases[tokenizer], tmp_path / "chat", tmp_path / "sft"
    notes = _prepared(write_chats(tmp_path / "chat.jsonl", examples), "chat", base, data, capsys)
    _check_prepared(data, examples, notes)
    assert main(["sft", "--data", str(data), "--init-from", str(base), "--out", str(run), *SFT]) == 0
    _check_trained(run, "sft", data, capsys.readouterr().err)


def test_a_fine_tune_given_no_length_is_told_the_steps_of_a_pass_and_trains_them(
    bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack sft` with no preset and no train.steps is refused in one line that prices a pass over
    its examples at its batch; trained for the three passes that line names, the record's own count
    of passes over the data (GATE-DATA-004's repeats, from the reader) is three, short of one step
    more: the line's arithmetic is the run's."""
    base, data, run = bases["byte"], tmp_path / "chat", tmp_path / "sft"
    _prepared(write_chats(tmp_path / "chat.jsonl", 100), "chat", base, data, capsys)
    start = [
        "sft",
        "--data",
        str(data),
        "--init-from",
        str(base),
        "--out",
        str(run),
        "--set",
        "train.device='cpu'",
    ]
    assert main([*start, "--set", "train.batch_size=4"]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and not run.exists(), said
    priced = re.search(
        r"is (\d+) step\(s\) of 4 × \d+ tokens; .*--set train\.steps=(\d+) makes 3 passes", said
    )
    assert priced is not None, said
    one, three = int(priced[1]), int(priced[2])
    assert three == 3 * one and one > 1
    assert main([*start, "--set", "train.batch_size=4", "--set", f"train.steps={three}"]) == 0
    repeats = evidence(run)["metrics"]["repeats"]
    assert 3 <= repeats < 3 * one / (one - 1), repeats


@pytest.mark.parametrize(("examples", "tokenizer"), PREFS_JOURNEYS)
def test_preference_pairs_tune_with_the_defaults(
    examples: int, tokenizer: str, bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, data, run = bases[tokenizer], tmp_path / "pairs", tmp_path / "dpo"
    notes = _prepared(write_preferences(tmp_path / "pairs.jsonl", examples), "prefs", base, data, capsys)
    _check_prepared(data, examples, notes)
    assert main(["dpo", str(base), "--data", str(data), "--out", str(run), *DPO]) == 0
    _check_trained(run, "dpo", data, capsys.readouterr().err)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model whose held-out losses spread (large random weights), and 100 chat examples prepared
    for it: a held-out split whose loss is too noisy for early stopping."""
    root = tmp_path_factory.mktemp("noisy")
    base, data = root / "base", root / "chat"
    save_run(base, tiny_model(0, ctx=BASE_CTX))
    chats = write_chats(root / "chat.jsonl", 100)
    argv = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(base), "--out", str(data)]
    assert main(argv) == 0
    return base, data


def test_a_heldout_loss_too_noisy_for_early_stopping_trains_with_it_off(
    noisy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run trains, says on the terminal and in its evaluation line why early stopping is off,
    and GATE-EVAL-001 records it off and holding."""
    base, data = noisy
    run = tmp_path / "sft"
    capsys.readouterr()
    assert main(["sft", "--data", str(data), "--init-from", str(base), "--out", str(run), *SFT]) == 0
    off = metric_lines(run, "eval")[-1]["early_stop_off"]
    assert off is not None and "min_improvement" in off and "held-out batches would bring it within" in off
    assert f"note: {off}" in capsys.readouterr().err
    result = next(g for g in evidence(run)["gates"] if g["id"] == SIZE)
    assert result["verdict"] == "PASS" and result["measured"]["early_stop"] is False
    assert result["measured"]["heldout_stderr"] > load_spec().threshold(SIZE, "min_improvement")


@pytest.mark.gate(SIZE)
def test_early_stopping_kept_on_over_a_noisy_heldout_loss_is_refused(
    noisy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plant a stopper that judges every held-out loss, however noisy: the run halts on GATE-EVAL-001
    at its first evaluation instead of letting early stopping fire on noise."""
    base, data = noisy
    monkeypatch.setattr(EarlyStopper, "judges", lambda self, losses: True)
    argv = ["sft", "--data", str(data), "--init-from", str(base), "--out", str(tmp_path / "sft"), *SFT]
    assert main(argv) == 3
    assert "it would stop on noise" in capsys.readouterr().err
