"""Steps judged late: a fused AdamW steps before its step is judged, and `run` queues the next step
before judging this one (stack.train.queued). On the CPU the loop steps foreach AdamW and judges
every step first; these tests give it the fused AdamW a CUDA run steps with (`fused_adamw`), so
the CUDA loop's order runs here, and hold it to the same gates and the same numbers."""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.errors import GateViolation
from stack.data.reader import TokenReader
from stack.model import gpt as gpt_module
from stack.train import checkpoint as ckpt
from stack.train import loop
from stack.train.loop import Trainer
from stack.train.queued import QueuedStep
from stack.train.readback import Readback
from stack.train.resume_check import tensors_digest
from tests.support.ledger_support import assert_found, edited, findings, gate
from tests.support.train_support import (
    CrossEntropyScaled,
    differences,
    evidence,
    nan_in_one_gradient,
    nan_loss,
    prepared,
    smoke_args,
    smoke_trainer,
    step_lines,
    train,
    verdicts,
    weights_and_moments,
)

# Fourteen steps with everything that reads a step's state at the last one: steps 6 to 12 (after
# the first five, whose state is digested, and before the last, a probe) are judged with the next
# one already queued.
LONG = ("train.steps=14", "eval.every=14", "ckpt.every=14", "monitor.sample_every=14")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """AdamW fused on the CPU, as on CUDA."""
    monkeypatch.setattr(loop, "fused_adamw", lambda _device: True)


def _queued_ahead(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps the loop queues while the step before them is still unjudged, as it queues them."""
    real, ahead = Trainer.queue_step, []

    def queue_step(self: Trainer) -> QueuedStep:
        behind = self.in_flight
        queued = real(self)
        if behind:
            ahead.append(queued.step)
        return queued

    monkeypatch.setattr(Trainer, "queue_step", queue_step)
    return ahead


def _from_step(monkeypatch: pytest.MonkeyPatch, first: int) -> Callable[[], bool]:
    """Whether the step being queued is step `first` or later: counted as the loop queues them."""
    real, queued = Trainer.queue_step, [0]

    def queue_step(self: Trainer) -> QueuedStep:
        queued[0] += 1
        return real(self)

    monkeypatch.setattr(Trainer, "queue_step", queue_step)
    return lambda: queued[0] >= first


def _lines(run: Path) -> list[dict[str, Any]]:
    """The run's step lines without their times."""
    return [{k: v for k, v in line.items() if k != "tokens_per_s"} for line in step_lines(run)]


def _final_weights(run: Path) -> str:
    return tensors_digest(ckpt.saved_weights(ckpt.step_dir(run, 14)))


@pytest.mark.usefixtures("fused")
@pytest.mark.parametrize(
    "model",
    [(), ("model.moe_experts=4", "model.moe_top_k=2", "model.moe_balance_coef=0.1")],
    ids=["dense", "experts"],
)
def test_steps_judged_behind_the_next_one_log_what_steps_judged_first_log(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: tuple[str, ...]
) -> None:
    """The order changes when the host reads, not what the device computes: every line (but its
    time; with experts, each auxiliary term too) and the weights at the end are those of the same
    run judged step by step, before each optimizer step; and the steps the last boundary allows
    were queued ahead."""
    first = tmp_path / "first"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "judges_late", lambda _self, _watched: False)
        assert train(smoke_args(data, first, *LONG, *model)) == 0
    ahead = _queued_ahead(monkeypatch)
    late = tmp_path / "late"
    assert train(smoke_args(data, late, *LONG, *model)) == 0
    assert ahead == list(range(7, 14))  # queued while 6 to 12 were judged; 14 is a probe
    assert _lines(late) == _lines(first) and len(_lines(late)) == 14
    assert _final_weights(late) == _final_weights(first)
    assert evidence(late)["run"]["status"] == "completed"


def _inf_in_one_gradient(trainer: Trainer, _monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss stays finite; one row of one weight's gradient is infinite."""
    trainer.model.layers[0].ffn.up.weight.register_hook(
        lambda grad: torch.cat([grad[:1] * math.inf, grad[1:]])
    )


@pytest.mark.gate("GATE-TRAIN-003")
@pytest.mark.usefixtures("fused")
@pytest.mark.parametrize(
    ("plant", "finite_loss"),
    [(nan_loss, False), (nan_in_one_gradient, True), (_inf_in_one_gradient, True)],
    ids=["nan-loss", "nan-gradient", "inf-gradient"],
)
def test_a_non_finite_step_judged_late_changes_nothing_and_halts(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[Trainer, pytest.MonkeyPatch], None],
    finite_loss: bool,
) -> None:
    """Its optimizer step is queued before it is judged, and skipped on the device: weights and
    AdamW's moments and count are as they were, and judging it halts the run."""
    with smoke_trainer(data, tmp_path / "run", "train.steps=3") as trainer:
        trainer.train_step()  # step 1, a probe: judged before its optimizer step
        trainer.update_judged = True  # and the next one is no probe
        plant(trainer, monkeypatch)
        before = weights_and_moments(trainer)
        queued = trainer.queue_step()
        assert queued.line is None and trainer.in_flight == 1  # stepped, not yet judged
        assert weights_and_moments(trainer) == before
        with pytest.raises(GateViolation) as caught:
            trainer.judge(queued)
        assert caught.value.gate_id == "GATE-TRAIN-003"
        assert isinstance(caught.value.measured["loss"], float) is finite_loss
        assert trainer.state.step == 1


@pytest.mark.holds("GATE-TRAIN-003")
@pytest.mark.usefixtures("fused")
def test_a_finite_step_judged_late_is_stepped(data: Path, tmp_path: Path) -> None:
    """The benign side: a finite step queued the same way moves the weights and AdamW's count."""
    with smoke_trainer(data, tmp_path / "run", "train.steps=3") as trainer:
        trainer.train_step()
        trainer.update_judged = True
        before = weights_and_moments(trainer)
        queued = trainer.queue_step()
        weights, moments = weights_and_moments(trainer)
        assert weights != before[0] and moments != before[1]
        assert trainer.judge(queued)["step"] == 2 and trainer.state.step == 2


@pytest.mark.gate("GATE-TRAIN-003")
@pytest.mark.usefixtures("fused")
def test_a_run_halts_at_a_non_finite_step_judged_behind_the_next(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From step 9 the loss is NaN: step 9 is judged with step 10 queued, and the run halts there
    with no line, sample or checkpoint after step 8; the record names the gate, and the checker
    finds it true to its artifacts."""
    ahead = _queued_ahead(monkeypatch)
    from_nine = _from_step(monkeypatch, 9)
    monkeypatch.setattr(gpt_module, "F", CrossEntropyScaled(lambda: math.nan if from_nine() else 1.0))
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *LONG)) == 3
    assert 10 in ahead  # queued before step 9 was judged
    assert [line["step"] for line in step_lines(run)] == list(range(1, 9))
    assert verdicts(run)["GATE-TRAIN-003"] == "FAIL"
    assert evidence(run)["run"]["status"] == "halted"
    assert ckpt.list_checkpoints(run) == []
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert not [line for line in lines if line["type"] == "sample"]
    assert findings(run) == []  # its reader served steps 9 and 10, which no line logs
    # ...and no more: a count three steps past the last line is not the reader's
    taken = edited(run, lambda data, _dir: gate(data, "GATE-DATA-001")["measured"].update(taken_batches=11))
    assert_found(findings(taken), "taken_batches is 11, but a run halted after its step 8")


@pytest.mark.gate("GATE-TRAIN-002")
@pytest.mark.usefixtures("fused")
def test_a_loop_that_stops_clipping_is_caught_on_a_step_judged_late(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From step 8 the norm is measured and never bounded: the step is judged after its optimizer
    step, with the next one queued, and halts the run; the same tight clip, applied, passes."""
    tight = (*LONG, "train.clip_norm=0.05")
    ahead = _queued_ahead(monkeypatch)
    clipped = tmp_path / "clipped"
    assert train(smoke_args(data, clipped, *tight)) == 0
    assert verdicts(clipped)["GATE-TRAIN-002"] == "PASS" and ahead
    from_eight = _from_step(monkeypatch, 8)
    clip = torch.nn.utils.clip_grad_norm_

    def unclipped(parameters: Any, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        return clip(parameters, math.inf if from_eight() else max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", unclipped)
    run = tmp_path / "unclipped"
    assert train(smoke_args(data, run, *tight)) == 3
    assert verdicts(run)["GATE-TRAIN-002"] == "FAIL"
    assert [line["step"] for line in step_lines(run)] == list(range(1, 8))


@pytest.mark.usefixtures("fused")
def test_a_stop_while_a_step_is_queued_behind_saves_a_judged_step_and_resumes_bit_for_bit(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM arrives as step 9 is queued behind step 8: step 9 is judged before the checkpoint,
    which holds the state after it, and the resume's steps and final weights are the straight
    run's bit for bit."""
    straight = tmp_path / "straight"
    assert train(smoke_args(data, straight, *LONG)) == 0
    unpatched = Trainer.queue_step
    ahead = _queued_ahead(monkeypatch)
    real = Trainer.queue_step

    def queue_step(self: Trainer) -> QueuedStep:
        queued = real(self)
        if queued.step == 9 and self.in_flight == 2:  # 8 unjudged, 9 just queued behind it
            os.kill(os.getpid(), signal.SIGTERM)
        return queued

    monkeypatch.setattr(Trainer, "queue_step", queue_step)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *LONG)) == 143
    assert 9 in ahead and [line["step"] for line in step_lines(run)] == list(range(1, 10))
    assert [path.name for path in ckpt.list_checkpoints(run)] == ["step-0000009"]
    monkeypatch.setattr(Trainer, "queue_step", unpatched)
    assert train(["train", "--resume", str(run)]) == 0
    assert differences(straight, run) == []


def test_a_readback_holds_the_values_it_was_made_from() -> None:
    """What a step measured is what its judges read, whatever writes into the tensor after it."""
    measured = torch.tensor([1.5, 2.0, float("nan")])
    readback = Readback(measured)
    measured.fill_(0.0)
    got = readback.values()
    assert got[:2] == [1.5, 2.0] and math.isnan(got[2])


@pytest.mark.usefixtures("fused")
def test_a_corpus_that_runs_out_behind_a_queued_step_stops_at_the_last_whole_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With data.wrap=false no step is queued that the corpus cannot finish: the run stops after
    the epoch's last whole step, checkpointed there, and its record holds to its artifacts."""
    exhausting = ("train.batch_size=8", "model.ctx=64", "train.grad_accum=8", "train.steps=1000")
    nothing_before = ("eval.every=1000", "ckpt.every=1000", "monitor.sample_every=1000")
    ahead = _queued_ahead(monkeypatch)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *exhausting, *nothing_before, "data.wrap=false")) == 3
    last = TokenReader(data, batch_size=8, seq_len=64, seed=0).steps_per_epoch // 8
    assert ahead == list(range(7, last + 1))  # the last whole step too, behind the one before it
    assert [line["step"] for line in step_lines(run)] == list(range(1, last + 1))
    assert ckpt.list_checkpoints(run)[-1].name == f"step-{last:07d}"
    assert evidence(run)["run"]["status"] == "exhausted"
    assert findings(run) == []
