"""`check_integrity --replay` of a run of the Triton attention kernel.

A replay runs on the CPU, where the kernel runs only in Triton's interpreter; it computes with the
run's own kernel there (tools/integrity/replay.py, `kernel_runnable`) whatever the caller's
environment says, and leaves that environment as it found it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from contracts.errors import BadInput
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity import replay as replaying

pytestmark = [
    pytest.mark.triton,  # the run itself trains with the kernel, interpreted
    pytest.mark.skipif(torch.cuda.is_available(), reason="in this process the kernels are built for the GPU"),
]


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A smoke run of two steps trained with model.attention='triton', and its data. The kernel runs
    interpreted, a tenth of a second a forward, so the run does little else: two held-out batches,
    one prompt of four tokens."""
    base = tmp_path_factory.mktemp("replay-kernel")
    data, run = prepared(base), base / "run"
    every = ("train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2")
    little = ("eval.batches=2", "monitor.tokens=4", "monitor.prompts=['def ']")
    assert train(smoke_args(data, run, "model.attention='triton'", *every, *little)) == 0
    return run, data


def test_a_run_of_the_kernel_replays_bit_for_bit_with_it(
    kernel_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")  # as a user's shell leaves it
    result = replaying.replay(*kernel_run, steps=2)
    assert result.differences == [] and result.steps == 2
    assert "TRITON_INTERPRET" not in os.environ  # switched off again after the replay


def test_without_the_interpreter_the_replay_is_refused_not_run_on_another_path(
    kernel_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay left to the caller's environment cannot run the kernel: the stack refuses the path."""
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(replaying, "kernel_runnable", lambda _attention: nullcontext())
    with pytest.raises(BadInput, match=r"model\.attention='triton' cannot run on cpu"):
        replaying.replay(*kernel_run, steps=2)
