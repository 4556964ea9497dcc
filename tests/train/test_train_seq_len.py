"""`train.seq_len`: pretraining's windows shorter than the model's context.

A model made for a long context (an imported Llama 3.2's is 131,072 tokens) could be trained only on
windows of that context, which neither a small corpus nor a device holds, and its context cannot
change on a run started from it. `train.seq_len` sets the window and leaves the model as it is. The
record of such a run is derived with that window by the checker, so a loop that read other windows
than the configured ones is caught; settings the run would not read are refused in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import BadInput
from stack.train import loop
from stack.train.config import resolve
from tests.support.ledger_support import findings
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import one_line_cli, prepared, smoke_args, step_lines, train

# The smoke preset's context is 32.
WINDOW = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("seq_len"))


@pytest.mark.holds("GATE-INTEG-001")
def test_a_run_reads_windows_of_its_seq_len_and_its_record_holds(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(smoke_args(data, out, f"train.seq_len={WINDOW}")) == 0
    assert {line["tokens"] for line in step_lines(out)} == {4 * WINDOW}  # batch 4 × the window
    assert f"seq_len = {WINDOW}" in (out / "config.toml").read_text()
    assert findings(out) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_loop_that_reads_the_context_instead_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the loop sizes its windows by the model's context whatever train.seq_len says. No
    gate of the run can tell (each judges the windows it read); the checker derives the record's
    step tokens and window targets from its config and finds them twice the configured ones."""
    monkeypatch.setattr(loop, "training_window", lambda config: config.model.ctx)
    out = tmp_path / "run"
    assert train(smoke_args(data, out, f"train.seq_len={WINDOW}")) == 0
    found = "\n".join(findings(out))
    assert f"measured.step_tokens is {4 * 32}, but its artifacts derive {4 * WINDOW}" in found, found
    assert f"measured.window_targets is 32, but its artifacts derive {WINDOW}" in found, found


def test_a_model_of_a_long_context_trains_on_windows_of_the_corpus_and_keeps_its_context(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run started from a model of context 65,536 on a corpus of some 43,000 tokens, which has no
    window of that length: refused naming train.seq_len, then trained with it, the model's context
    unchanged."""
    base = save_run(tmp_path / "long", tiny_model(ctx=65536))
    argv = ["train", "--init-from", str(base), "--data", str(data), "--set", "train.steps=3"]
    argv += ["--set", "eval.every=3", "--set", "ckpt.every=3", "--set", "train.device='cpu'"]
    code, err = one_line_cli(capsys, *argv, "--out", str(tmp_path / "refused"))
    assert code == 2 and "train.seq_len" in err, err
    out = tmp_path / "run"
    assert train([*argv, "--out", str(out), "--set", f"train.seq_len={WINDOW}"]) == 0
    assert "ctx = 65536" in (out / "config.toml").read_text()
    assert {line["tokens"] for line in step_lines(out)} == {8 * WINDOW}  # the default batch of 8


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["train.seq_len=33"], "train.seq_len 33 is longer than model.ctx 32: give at most 32"),
        (["train.seq_len=0"], "train.seq_len"),
    ],
    ids=["past-the-context", "zero"],
)
def test_a_window_the_model_cannot_read_is_refused_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sets: list[str], needle: str
) -> None:
    argv = smoke_args(data, tmp_path / "run")
    for item in sets:
        argv += ["--set", item]
    code, err = one_line_cli(capsys, *argv)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_a_task_with_windows_of_its_own_refuses_it() -> None:
    """sft reads its data's pack length: a train.seq_len there would be read by nothing."""
    with pytest.raises(BadInput) as refused:
        resolve("smoke", None, ["train.task='sft'", "train.seq_len=16"], vocab=257)
    assert "train.task=sft reads windows of the data's pack length (--pack-len): drop train.seq_len" in str(
        refused.value
    )


def test_a_resume_cannot_change_the_window(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert train(smoke_args(data, out, f"train.seq_len={WINDOW}")) == 0
    capsys.readouterr()
    code, err = one_line_cli(
        capsys, "train", "--resume", str(out), "--set", "train.steps=8", "--set", "train.seq_len=8"
    )
    assert code == 2 and f"changed train.seq_len ({WINDOW} -> 8)" in err, err
