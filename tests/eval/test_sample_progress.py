"""`stack sample` on a long request: progress while it draws, and what was
drawn kept when it is interrupted.

A `stack sample R --tokens 1000000` must not say nothing for minutes, nor a SIGTERM throw every
token drawn away. A request longer than the default shows `stack sample: drawn: N of M tokens`
off a terminal (stack.cli.progress.amount_progress), fed by a per-token callback through
sample_checked and generate_long that changes nothing GATE-TRAIN-005 replays (the draws, the
generator, the record: proved bit-identical with and without it), and an interrupt prints the text
drawn so far with one line saying where it was cut short, exit 143 (SIGTERM) or 130 (Ctrl-C).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.errors import Interrupted
from stack.cli import main
from stack.cli.progress import is_amount_line
from stack.cli.sample import DEFAULT_TOKENS, cut_short, sample_text, shown_draws
from stack.model import generate as generate_module
from stack.model import sampling_checks
from stack.model.generate import generate_long
from stack.train.trained import load_measured
from tests.support.train_support import prepared, smoke_args, train

# Longer than the default, so the progress shows; past the smoke model's context of 32 many times.
TOKENS = DEFAULT_TOKENS + 40
PROMPT = "the gate "


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model (ctx 32) trained a few steps."""
    root = tmp_path_factory.mktemp("sampleprog")
    out = root / "run"
    assert train(smoke_args(prepared(root), out)) == 0
    return out


def _sample(run: Path, tokens: int, *options: str) -> int:
    return main(["sample", str(run), "--prompt", PROMPT, "--tokens", str(tokens), "--seed", "3", *options])


def _record(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample's result and the parts of its record the draws decide (not its times or ids)."""
    data = json.loads((directory / "metadata.json").read_text())
    return json.loads((directory / "sample.json").read_text()), {
        "gates": data["gates"],
        "metrics": data["metrics"],
        "config": data["config"],
        "status": data["run"]["status"],
    }


@pytest.mark.holds("GATE-TRAIN-005")
def test_the_callback_changes_no_draw_and_no_generator_state(run: Path) -> None:
    """generate_long with and without `on_token`: the same tokens and the generator left in the same
    state, and the callback saw every token drawn, in order."""
    model = load_measured(run).model
    idx = torch.tensor([[1, 2, 3]])
    results = []
    seen: list[torch.Tensor] = []
    for on_token in (None, seen.append):
        generator = torch.Generator().manual_seed(3)
        out = generate_long(
            model, idx, TOKENS, temperature=0.8, top_k=5, generator=generator, on_token=on_token
        )
        results.append((out, generator.get_state()))
    (plain, plain_state), (watched, watched_state) = results
    assert torch.equal(plain, watched) and torch.equal(plain_state, watched_state)
    assert torch.equal(torch.cat(seen, dim=1), watched[:, idx.shape[1] :])


@pytest.mark.holds("GATE-TRAIN-005")
def test_the_record_is_the_same_with_and_without_the_callback(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command with its progress, and again with sample_checked handed no callback: the same
    text, the same sample.json and the same gates, measured values and config in the record."""
    assert _sample(run, TOKENS, "--record", str(tmp_path / "with")) == 0
    printed = capsys.readouterr().out
    checked = sampling_checks.sample_checked

    def without_callback(*args: Any) -> torch.Tensor:
        return checked(*args[:6])

    monkeypatch.setattr(sampling_checks, "sample_checked", without_callback)
    assert _sample(run, TOKENS, "--record", str(tmp_path / "without")) == 0
    assert capsys.readouterr().out == printed
    assert _record(tmp_path / "with") == _record(tmp_path / "without")
    assert _record(tmp_path / "with")[1]["status"] == "completed"


def test_a_long_request_shows_its_progress_off_a_terminal(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line per tenth, `stack sample: drawn: N of M tokens` (stack.cli.progress.AMOUNT_LINE), the
    last at M; a request of the default's size prints no progress line."""
    assert _sample(run, TOKENS) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if is_amount_line(line)]
    assert len(progress) == 10, progress
    assert progress[-1] == f"stack sample: drawn: {TOKENS:,} of {TOKENS:,} tokens"
    assert _sample(run, DEFAULT_TOKENS) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if is_amount_line(line)]


@pytest.mark.parametrize(
    ("stop", "code", "ignore_eot"),
    [(Interrupted("SIGTERM"), 143, True), (KeyboardInterrupt(), 130, False)],
    ids=["sigterm-ignore-eot", "ctrl-c"],
)
def test_an_interrupt_prints_what_was_drawn_and_where_it_stopped(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stop: KeyboardInterrupt,
    code: int,
    ignore_eot: bool,
) -> None:
    """A signal after 100 draws (raised where the sampler draws, as SIGTERM's handler or Ctrl-C
    raises it): the prompt and those 100 tokens on stdout (up to an end-of-text without
    --ignore-eot), the same as the whole run's first 100, and one line saying it was cut short at
    100 of M, exit 143 or 130; no record is kept."""
    options = ["--ignore-eot"] if ignore_eot else []
    assert _sample(run, TOKENS, *options, "--record", str(tmp_path / "whole")) == 0
    drawn = json.loads((tmp_path / "whole" / "sample.json").read_text())["drawn"][:100]
    capsys.readouterr()
    draw = generate_module.sample_next
    calls = []

    def stopped_after_100(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 100:
            raise stop
        return draw(*args, **kwargs)

    monkeypatch.setattr(generate_module, "sample_next", stopped_after_100)
    assert _sample(run, TOKENS, *options, "--record", str(tmp_path / "cut")) == code
    out, err = capsys.readouterr()
    tokenizer = load_measured(run).tokenizer
    assert out == sample_text(tokenizer, PROMPT, drawn, ignore_eot) + "\n"
    said = [line for line in err.splitlines() if not is_amount_line(line) and "note:" not in line]
    signal_name = "SIGTERM" if code == 143 else "SIGINT"
    line = cut_short(100, len(shown_draws(tokenizer, drawn, ignore_eot)), TOKENS)
    assert said == [f"stack sample: interrupted by {signal_name}: {line}"], err
    assert not (tmp_path / "cut" / "metadata.json").exists()
