"""`stack eval RUN_DIR --split val` of a fine-tuned run.

`stack eval` scores the held-out documents of a DATA_DIR of pretraining text, byte for byte. Given
`--data DATA_DIR` of chat, prompt-completion or preference examples it refuses in one line (exit
2). Without `--data`, the run's own DATA_DIR taken unchecked would bring an SFT run's packed
examples to GATE-EVAL-003, which counts their end-of-text pads as documents and fires (exit 3): a
gate blaming the split on an ordinary command. The run's own DATA_DIR is held to the `--data` entry
of stack.cli.inputs (the one rule), and refused in one line naming what scores a fine-tune.

Every case goes through the real commands: a smoke run, an SFT run on chat and one on
prompt-completion examples, a DPO run on pairs, and a laser of the SFT run (whose DATA_DIR is found
through its source).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import BadInput
from stack.artifacts import identify
from stack.cli import main
from stack.cli.inputs import input_of
from tests.support.paths import DATA
from tests.support.prefs_support import write_pairs
from tests.support.train_support import one_line_cli, write_corpus

PROMPT_COMPLETION = DATA / "prompt_completion_small.jsonl"
QUICK = ["train.device='cpu'", "train.batch_size=1", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
# A held-out set of a few dozen examples, in two batches (early stopping off where it is too noisy).
SMALL_HELDOUT = ["--set", "eval.batches=2"]


NAMES = ("text", "base", "chat", "pc", "pairs", "sft", "sft-pc", "dpo", "laser")


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0, f"`stack {' '.join(argv)}` failed"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name → directory: DATA_DIRs of each kind and the runs trained on them."""
    root = tmp_path_factory.mktemp("eval")
    d = {name: root / name for name in NAMES}
    _run("prepare", str(write_corpus(root)), "--val-fraction", "0.25", "--out", str(d["text"]))
    base = ["train", "--data", str(d["text"]), "--out", str(d["base"]), "--preset", "smoke"]
    _run(*base, *_sets(*QUICK, "train.steps=2", "model.ctx=128"))
    halves = ["--val-fraction", "0.5", "--tokenizer", str(d["base"])]
    examples = {
        "chat": [str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "96"],
        "pc": [str(PROMPT_COMPLETION), "--format", "prompt-completion", "--pack-len", "96"],
        "pairs": [str(write_pairs(root / "pairs.jsonl")), "--format", "prefs", "--pack-len", "48"],
    }
    for name, argv in examples.items():
        _run("prepare", *argv, *halves, "--out", str(d[name]))
    for run, data in (("sft", "chat"), ("sft-pc", "pc")):
        sft = ["sft", "--data", str(d[data]), "--init-from", str(d["base"]), "--out", str(d[run])]
        _run(*sft, *_sets(*QUICK, "train.steps=2"), *SMALL_HELDOUT)
    dpo = ["dpo", str(d["sft"]), "--data", str(d["pairs"]), "--out", str(d["dpo"]), "--steps", "2"]
    _run(*dpo, "--batch-size", "1", "--device", "cpu", *SMALL_HELDOUT)
    _run("laser", str(d["sft"]), "--targets", "ffn_up", "--rho", "0.5", "--out", str(d["laser"]))
    return d


TUNED = [("sft", "chat"), ("sft-pc", "pc"), ("dpo", "pairs"), ("laser", "chat")]


@pytest.mark.parametrize(("run", "data"), TUNED)
def test_a_fine_tuned_run_without_data_is_refused_in_one_line_naming_what_scores_it(
    made: dict[str, Path], capsys: pytest.CaptureFixture[str], run: str, data: str
) -> None:
    """Exit 2, one line (no gate), naming the run, its DATA_DIR and its kind, and the commands
    that score a fine-tune: evalmatrix, --text FILE, --data of pretraining text."""
    code, err = one_line_cli(capsys, "eval", str(made[run]), "--split", "val")
    assert code == 2, err
    assert "gate fired" not in err and "GATE-EVAL-003" not in err
    noun = identify(made[data]).kind.noun
    assert f"{made[run]} learned from {made[data].resolve()}, {noun}" in err
    assert f"--adapter {made[run]}" in err and "stack evalmatrix" in err
    assert "--text FILE" in err and "--data DATA_DIR" in err


@pytest.mark.parametrize(("run", "data"), [*TUNED, ("base", "text")])
def test_the_run_s_own_data_dir_is_held_to_the_rule_of_data(
    made: dict[str, Path], capsys: pytest.CaptureFixture[str], run: str, data: str
) -> None:
    """One rule, however the DATA_DIR is named: the run's own is refused exactly where the same
    directory given as --data is, by the `--data` entry of the table of inputs."""
    try:
        input_of("eval", "--data").require(made[data])
        expected = 0
    except BadInput:
        expected = 2
    split = ["eval", str(made[run]), "--split", "val", "--max-bytes", "2000"]
    given, _ = one_line_cli(capsys, *split, "--data", str(made[data]))
    implicit, _ = one_line_cli(capsys, *split)
    assert given == implicit == expected


def test_a_pretraining_run_still_evaluates_its_own_held_out_split(
    made: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's own DATA_DIR of pretraining text is scored, and the record names it."""
    record = made["base"].parent / "base-eval"
    code = main(["eval", str(made["base"]), "--split", "val", "--max-bytes", "2000", "--record", str(record)])
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["bits_per_byte"] > 0
    kept = json.loads((record / "metadata.json").read_text())
    assert kept["config"]["data"] == str(made["text"].resolve())
    assert all(gate["verdict"] != "FAIL" for gate in kept["gates"])
