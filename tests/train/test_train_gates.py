"""Falsifiers of the training gates: each plants its bug in a real `stack train` run and sees it fire."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts import schedule
from contracts.errors import GateViolation
from contracts.judges import judge
from contracts.seeds import monitor_seed, seeded_state_sha256
from contracts.spec import load_spec
from stack.model import generate as generate_module
from stack.model import gpt as gpt_module
from stack.model.gpt import GPT
from stack.model.kv_cache import KVCache
from stack.train import checkpoint as ckpt
from stack.train import loop
from stack.train.early_stop import EarlyStopper
from stack.train.guards import check_clipped, check_first_loss, check_stability
from stack.train.loop import Trainer
from stack.train.metrics import MetricsLog
from stack.train.queued import QueuedStep
from tests.support.ledger_support import assert_caught, edited, findings
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import (
    CrossEntropyScaled,
    autocast_of,
    evidence,
    nan_in_one_gradient,
    nan_loss,
    prepared,
    smoke_args,
    smoke_trainer,
    step_lines,
    train,
    unjudged,
    verdicts,
    weights_and_moments,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


def test_a_clean_run_passes_its_gates(data: Path, tmp_path: Path) -> None:
    """Every gate a training run must judge is in the record and held: a loop that stops calling
    one of its checks (attention paths, overfitting, spikes, ...) leaves it missing or NOT_RUN."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    record = evidence(run)
    assert record["run"]["status"] == "completed"
    assert unjudged(run) == {}
    # A 30k-token corpus cannot feed even a tiny model to the spec's tokens per parameter.
    assert verdicts(run)["GATE-DATA-004"] == "WARN"
    assert [ln["step"] for ln in step_lines(run)] == [1, 2, 3, 4, 5]
    # GATE-TRAIN-005 check seeded: the round after step 5 drew from the seed the monitor states
    sampled = next(g for g in record["gates"] if g["id"] == "GATE-TRAIN-005")["measured"]
    assert sampled["seed"] == monitor_seed(0, 5)
    assert (
        sampled["generator_state_sha256"] == sampled["seeded_state_sha256"] == seeded_state_sha256(5, "cpu")
    )


@pytest.mark.gate("GATE-TRAIN-003")
def test_non_finite_loss_halts_the_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step, steps = Trainer.queue_step, [0]

    def counted(self: Trainer) -> QueuedStep:
        steps[0] += 1
        return step(self)

    # The third step's loss (not a probe's before it) is NaN.
    nan = float("nan")
    monkeypatch.setattr(gpt_module, "F", CrossEntropyScaled(lambda: nan if steps[0] >= 3 else 1.0))
    monkeypatch.setattr(Trainer, "queue_step", counted)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert "GATE-TRAIN-003" in capsys.readouterr().err
    record = evidence(run)
    assert record["run"]["status"] == "halted" and "GATE-TRAIN-003" in record["run"]["stop_reason"]
    assert verdicts(run)["GATE-TRAIN-003"] == "FAIL"
    assert [ln["step"] for ln in step_lines(run)] == [1, 2]  # step 3 never reached the weights
    assert findings(run) == []  # the record of a halted run holds to its artifacts


def poisoned_scale(self: torch.amp.GradScaler, outputs: torch.Tensor) -> torch.Tensor:
    """GradScaler.scale whose scaled loss keeps its value and sends back a NaN gradient: every
    weight's gradient of a training step comes out NaN while its loss stays finite, as no scale
    can fix (the probes, which take no scaled backward, are left alone)."""
    scaled = _real_scale(self, outputs)
    scaled.register_hook(lambda grad: grad * float("nan"))
    return scaled


_real_scale = torch.amp.GradScaler.scale


@pytest.mark.gate("GATE-TRAIN-003")
@pytest.mark.parametrize(("precision", "halted_at"), [("fp32", 1), ("fp16", 17)])
def test_a_gradient_not_finite_at_any_scale_halts_the_run(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    precision: str,
    halted_at: int,
) -> None:
    """Without loss scaling a NaN gradient halts the step it comes in. Under fp16 the scaler skips
    each overflowing step and halves its scale from 65536: the steps that leave it at 1
    (min_loss_scale) and above hold, and step 17, which leaves 0.5, halts the run."""
    monkeypatch.setattr(torch.amp.GradScaler, "scale", poisoned_scale)
    run = tmp_path / "run"
    sets = (
        f"train.precision='{precision}'",
        "train.steps=20",
        "eval.every=20",
        "ckpt.every=20",
        "monitor.sample_every=20",
    )
    assert train(smoke_args(data, run, *sets)) == 3
    assert "GATE-TRAIN-003" in capsys.readouterr().err
    # the halting step's line is never written: the lines end at the step before it
    assert [ln["step"] for ln in step_lines(run)] == list(range(1, halted_at))
    result = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-003")
    assert (result["verdict"], result["step"]) == ("FAIL", halted_at)
    if precision == "fp16":
        limit = load_spec().threshold("GATE-TRAIN-003", "min_loss_scale")
        assert result["measured"]["loss_scale"] == limit / 2


@pytest.mark.gate("GATE-TRAIN-003")
def test_an_overflow_fires_only_once_its_scale_falls_below_the_least(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The judge on a step the fp16 scaler skipped: the scale it left at min_loss_scale holds, half
    of it fires; a non-finite loss fires whatever the scale."""
    limit = load_spec().threshold("GATE-TRAIN-003", "min_loss_scale")
    overflow = {"loss": 5.0, "grad_norm": "inf"}
    assert judge("GATE-TRAIN-003", {**overflow, "loss_scale": limit}) == []
    assert judge("GATE-TRAIN-003", {**overflow, "loss_scale": limit / 2})
    assert judge("GATE-TRAIN-003", {"loss": "nan", "grad_norm": "nan", "loss_scale": 65536.0})
    assert judge("GATE-TRAIN-003", overflow)  # no loss scale: the step would have taken it


@pytest.mark.gate("GATE-TRAIN-002")
def test_config_without_clipping_is_refused_unless_waived(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "a", "train.clip_norm=0")) == 3
    assert "GATE-TRAIN-002" in capsys.readouterr().err
    waived = [
        *smoke_args(data, tmp_path / "b", "train.clip_norm=0"),
        "--waive",
        "GATE-TRAIN-002",
        "--reason",
        "measuring an unclipped baseline",
    ]
    assert train(waived) == 0
    assert verdicts(tmp_path / "b")["GATE-TRAIN-002"] == "WAIVED"
    assert evidence(tmp_path / "b")["waivers"][0]["reason"] == "measuring an unclipped baseline"


@pytest.mark.gate("GATE-TRAIN-001")
def test_a_skipped_metrics_line_fires(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    line = {
        "step": 1,
        "epoch": 0,
        "loss": 5.0,
        "lr": 1e-3,
        "grad_norm": 1.0,
        "tokens_per_s": 10.0,
        "batch_sha256": "ab",
    }
    log.step(line)
    with pytest.raises(GateViolation, match=r"GATE-TRAIN-001.*jump from step 1 to 3"):
        log.step({**line, "step": 3})
    with pytest.raises(GateViolation, match="lacks grad_norm"):
        log.step({**line, "step": 2, "grad_norm": None})


@pytest.mark.gate("GATE-TRAIN-004")
def test_a_loud_start_is_caught_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights change between the model's start-up checks and its first step (GATE-MODEL-003
    holds the initialisation itself as drawn): the first loss is far from ln(vocab)."""
    original = Trainer.run

    def loud_start(self: Trainer, resumed: bool) -> str:
        with torch.no_grad():
            self.model.embed.weight.mul_(200.0)  # the planted bug: logits far from uniform
        return original(self, resumed)

    monkeypatch.setattr(Trainer, "run", loud_start)
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert verdicts(tmp_path / "run")["GATE-TRAIN-004"] == "FAIL"


@pytest.mark.gate("GATE-TRAIN-005")
def test_degenerate_samples_halt_the_run(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every text scores 0 wherever it is scored: by the loop and by the scored check alike.
    for scorer in ("stack.train.loop.coherence_score", "stack.train.coherence.coherence_score"):
        monkeypatch.setattr(scorer, lambda text: 0.0)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=8", "monitor.sample_every=1")) == 3
    assert verdicts(run)["GATE-TRAIN-005"] == "FAIL"
    assert len(step_lines(run)) == 5  # the fifth low score in a row halts


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_loop_that_skips_sampling_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Trainer, "sample", lambda self: {})
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert verdicts(tmp_path / "run")["GATE-TRAIN-005"] == "FAIL"


def _sampler_with(**changed: object) -> Callable[..., torch.Tensor]:
    """The stack's sampler with some of its settings replaced, whatever it is called with."""
    real = generate_module.sample_next

    def sample_next(logits: torch.Tensor, seen: torch.Tensor, **settings: object) -> torch.Tensor:
        return real(logits, seen, **{**settings, **changed})

    return sample_next


@pytest.mark.gate("GATE-TRAIN-005")
@pytest.mark.parametrize("changed", [{"temperature": 1.0}, {"top_k": 41}])
def test_a_sampler_that_drops_its_temperature_or_widens_its_cut_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: dict[str, object]
) -> None:
    """The monitor's samples come from another distribution than the configured one (temperature
    0.8, top_k 40): the replay of the sampler's draws on spread logits stops the first sampling."""
    monkeypatch.setattr(generate_module, "sample_next", _sampler_with(**changed))
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    result = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-005")
    assert result["verdict"] == "FAIL" and result["step"] == 5
    assert result["measured"]["mismatched_probe_draws"] > 0
    assert (result["measured"]["temperature"], result["measured"]["top_k"]) == (0.8, 40)


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_model_that_samples_at_its_default_temperature_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GPT.generate drops the temperature it is given: the probe samples by that very method."""
    original = GPT.generate
    monkeypatch.setattr(
        GPT, "generate", lambda self, idx, n, **kw: original(self, idx, n, **{**kw, "temperature": 1.0})
    )
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert "GATE-TRAIN-005" in capsys.readouterr().err


@pytest.mark.gate("GATE-TRAIN-005")
def test_one_sampled_token_off_the_replay_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first token the monitor samples is replaced by its neighbour: one mismatched draw, just
    beyond max_mismatched_draws (0), which the clean run of test_a_clean_run_passes_its_gates holds."""
    real, calls = generate_module.sample_next, []

    def one_off(logits: torch.Tensor, seen: torch.Tensor, **settings: object) -> torch.Tensor:
        token = real(logits, seen, **settings)
        calls.append(1)
        return (token + 1) % logits.shape[-1] if len(calls) == 1 else token

    monkeypatch.setattr(generate_module, "sample_next", one_off)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-005")["measured"]
    assert measured["mismatched_draws"] == 1 + load_spec().threshold("GATE-TRAIN-005", "max_mismatched_draws")
    assert measured["mismatched_probe_draws"] == 0


def _reseeded_with_zero(real: Callable[..., Any]) -> Callable[..., Any]:
    """Planted in the monitor: each sampling of a round drawn with its generator seeded with
    0, not with the round's seed (contracts.seeds.monitor_seed of train.seed and the step)."""

    def planted(model: Any, idx: torch.Tensor, tokens: int, sampler: Any, generator: torch.Generator) -> Any:
        return real(model, idx, tokens, sampler, generator.manual_seed(0))

    return planted


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_monitor_drawing_from_another_seed_than_its_rounds_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every round would sample the same texts after whatever step; every draw replays from the
    state the sampler kept, and that state is not the one the round's stated seed gives."""
    monkeypatch.setattr(loop, "sample_watched", _reseeded_with_zero(loop.sample_watched))
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert "another seed than the one asked for" in capsys.readouterr().err
    result = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-005")
    measured = result["measured"]
    assert result["verdict"] == "FAIL" and (result["step"], measured["seed"]) == (5, monitor_seed(0, 5))
    assert measured["mismatched_draws"] == 0 and measured["generator_state_sha256"] == seeded_state_sha256(
        0, "cpu"
    )


def _seed_of_another_round(data: dict[str, Any], _run_dir: Path) -> None:
    """The monitor's seed and the state it gives restated as those of the round after step 4."""
    measured = next(g for g in data["gates"] if g["id"] == "GATE-TRAIN-005")["measured"]
    measured["seed"] = monitor_seed(0, 4)
    measured["generator_state_sha256"] = measured["seeded_state_sha256"] = seeded_state_sha256(
        monitor_seed(0, 4), "cpu"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_monitor_seed_of_no_round_the_log_shows_is_caught(data: Path, tmp_path: Path) -> None:
    """The checker derives the round's seed from train.seed and the step of the last sample line
    (contracts.seeds.monitor_seed): a record restating another round's agrees with itself only."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 0
    edited(run, _seed_of_another_round)
    assert_caught(
        run, f"gates[GATE-TRAIN-005].measured.seed is {monitor_seed(0, 4)}, but its artifacts derive 5"
    )


@pytest.mark.gate("GATE-EVAL-001")
def test_early_stopping_on_a_noisy_two_batch_heldout_set_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seeds' run: pretraining whose two held-out batches differ by more than the improvement
    early stopping must find (a start of large random weights spreads their losses). It trains
    with early stopping off and says so; planted, a stopper that judges it anyway halts the run."""
    start = tmp_path / "start"
    save_run(start, tiny_model(0, ctx=32))
    argv = [*smoke_args(data, tmp_path / "off", "eval.batches=2"), "--init-from", str(start)]
    assert train(argv) == 0
    assert "early stopping is off" in capsys.readouterr().err
    monkeypatch.setattr(EarlyStopper, "judges", lambda self, losses: True)
    argv = [*smoke_args(data, tmp_path / "on", "eval.batches=2"), "--init-from", str(start)]
    assert train(argv) == 3
    assert "GATE-EVAL-001" in capsys.readouterr().err


@pytest.mark.gate("GATE-EVAL-002")
def test_impatient_early_stopping_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(smoke_args(data, tmp_path / "run", "eval.patience=1")) == 3
    assert "GATE-EVAL-002" in capsys.readouterr().err
    assert train(smoke_args(data, tmp_path / "ok", "eval.patience=1", "eval.early_stop=false")) == 0


@pytest.mark.gate("GATE-DATA-004")
def test_inadequate_corpus_is_recorded_as_warn(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=6")) == 0
    metrics = evidence(run)["metrics"]
    assert metrics["tokens_per_parameter"] < 1 and verdicts(run)["GATE-DATA-004"] == "WARN"
    assert math.isclose(metrics["planned_tokens"], 6 * 4 * 32)


# -- GATE-TRAIN-002: the stability stack, configured on and seen working ---------------------


def _measured(run: Path, gate_id: str) -> dict:
    """What a FAILed gate measured, from the run's record."""
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == gate_id]
    assert result["verdict"] == "FAIL"
    return result["measured"]


@pytest.mark.gate("GATE-TRAIN-002")
def test_a_loop_that_does_not_clip_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip of 0.05 holds while the loop clips (every real norm is above it) and halts once it does not."""
    tight = ("train.clip_norm=0.05", "train.steps=2")
    clipped = tmp_path / "clipped"
    assert train(smoke_args(data, clipped, *tight)) == 0
    assert all(line["grad_norm"] > 0.05 for line in step_lines(clipped))  # the clip had work to do
    assert verdicts(clipped)["GATE-TRAIN-002"] == "PASS"

    clip = torch.nn.utils.clip_grad_norm_

    def unclipped(parameters: object, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        # The planted bug: the norm is measured, never bounded.
        return clip(parameters, math.inf, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", unclipped)
    run = tmp_path / "unclipped"
    assert train(smoke_args(data, run, *tight)) == 3
    assert _measured(run, "GATE-TRAIN-002")["post_clip_norm"] > 0.05  # the optimizer would have seen it
    assert step_lines(run) == []


@pytest.mark.gate("GATE-TRAIN-002")
@pytest.mark.parametrize(
    ("group", "decay", "counted"),
    [(0, 0.0, "undecayed_matrices"), (1, 0.1, "decayed_vectors")],
    ids=["matrices-undecayed", "norms-decayed"],
)
def test_an_optimizer_that_misplaces_weight_decay_halts_at_start_up(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    group: int,
    decay: float,
    counted: str,
) -> None:
    build = loop.build_optimizer

    def misplaced(model: torch.nn.Module, config: object, device: torch.device) -> torch.optim.AdamW:
        optimizer = build(model, config, device)  # type: ignore[arg-type]
        optimizer.param_groups[group]["weight_decay"] = decay  # group 0: matrices, group 1: norms
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", misplaced)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    # Refused at set-up: the one line carries what was measured, and no run directory is left.
    assert re.search(rf"GATE-TRAIN-002.*'{counted}': [1-9]", capsys.readouterr().err)
    assert not run.exists()


@pytest.mark.gate("GATE-TRAIN-002")
def test_a_schedule_that_skips_warmup_halts_at_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schedule itself gives the peak from step 1, the loop's rate and the one GATE-TRAIN-008
    holds it to alike (contracts.schedule): only the rates read back during warmup show it."""
    peak = lambda step, *, lr, **_: lr  # noqa: E731  the planted bug
    monkeypatch.setattr(loop, "lr_at", peak)
    monkeypatch.setattr(schedule, "lr_at", peak)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    stability = _measured(run, "GATE-TRAIN-002")
    assert (stability["warmup_step"], stability["warmup_lr"]) == (1, stability["peak_lr"])
    assert step_lines(run) == []


# Values just past each threshold and just inside it, strictly between the threshold and its
# double or half, so that a threshold widened or narrowed twofold turns one side red.
STABLE = {"clip_norm": 1.0, "warmup_steps": 20, "weight_decay": 0.1}


@pytest.mark.gate("GATE-TRAIN-002")
@pytest.mark.parametrize(
    ("setting", "past", "inside"),
    [
        ("clip_norm", 10.5, 9.5),  # max_clip_norm 10
        ("weight_decay", 7e-7, 1.5e-6),  # min_weight_decay 1e-6
        ("weight_decay", 0.0, 1.5e-6),  # no decay at all
        ("warmup_steps", 0, 1),  # min_warmup_steps 1
    ],
)
def test_a_stability_setting_past_its_threshold_is_refused(setting: str, past: float, inside: float) -> None:
    with pytest.raises(GateViolation, match="GATE-TRAIN-002"):
        check_stability(**{**STABLE, setting: past})
    check_stability(**{**STABLE, setting: inside})


@pytest.mark.gate("GATE-TRAIN-002")
def test_a_post_clip_norm_past_the_rounding_slack_is_not_clipped() -> None:
    """post_clip_rtol 1e-4: 1.5e-4 over the clip was not clipped, 7e-5 over is the rescale's rounding."""
    with pytest.raises(GateViolation, match="GATE-TRAIN-002"):
        check_clipped(1.00015, 1.0, 3)
    check_clipped(1.00007, 1.0, 3)


# -- GATE-TRAIN-003: nothing non-finite reaches the weights ----------------------------------


@pytest.mark.gate("GATE-TRAIN-003")
@pytest.mark.parametrize(
    ("plant", "finite_loss"),
    [(nan_loss, False), (nan_in_one_gradient, True)],
    ids=["nan-loss", "nan-gradient"],
)
def test_a_non_finite_step_leaves_weights_and_optimizer_untouched(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[Trainer, pytest.MonkeyPatch], None],
    finite_loss: bool,
) -> None:
    """The halt comes before the optimizer step: a check after it would have let the NaN in first."""
    with smoke_trainer(data, tmp_path / "run") as trainer:
        trainer.train_step()  # a good step first, so AdamW holds moments a late check would spoil
        plant(trainer, monkeypatch)
        before = weights_and_moments(trainer)
        with pytest.raises(GateViolation) as caught:
            trainer.train_step()
        assert caught.value.gate_id == "GATE-TRAIN-003"
        assert isinstance(caught.value.measured["loss"], float) is finite_loss
        assert weights_and_moments(trainer) == before and trainer.state.step == 1


# -- GATE-TRAIN-004: the first loss within half a nat of ln(vocab) ---------------------------


@pytest.mark.gate("GATE-TRAIN-004")
@pytest.mark.parametrize("side", [1.0, -1.0], ids=["above", "below"])
def test_a_first_loss_0_6_nats_off_fires_and_0_4_holds(side: float) -> None:
    uniform = math.log(257)
    with pytest.raises(GateViolation, match="GATE-TRAIN-004"):
        check_first_loss(uniform + side * 0.6, 257, 1)
    check_first_loss(uniform + side * 0.4, 257, 1)


# -- GATE-EVAL-002: early stopping measures epochs --------------------------------------------


def test_early_stopping_out_of_patience_waits_for_its_epoch_floor(data: Path, tmp_path: Path) -> None:
    """Patience runs out long before min_epochs, so the run must go on to train.steps.

    A learning rate of 1e-9 keeps the held-out loss from improving; a loop that overstates the
    epochs it has trained lets the stopper fire here.
    """
    patience = int(load_spec().threshold("GATE-EVAL-002", "min_patience_evals"))
    run = tmp_path / "run"
    sets = (
        "train.steps=16",
        "eval.every=1",
        f"eval.patience={patience}",
        "train.lr=1e-9",
        "train.min_lr=0.0",
    )
    assert train(smoke_args(data, run, *sets)) == 0
    assert [line["step"] for line in step_lines(run)] == list(range(1, 17))
    assert evidence(run)["run"]["stop_reason"] == "reached train.steps=16"
    state = json.loads((ckpt.list_checkpoints(run)[-1] / "state.json").read_text())
    assert state["monitors"]["early_stop"]["evals_without_improvement"] >= patience  # out of patience


class _Decoder:
    """A model as `generate` calls it, with a planted change to every cached call: a fresh KV cache
    at each decoding step (each token drawn with no context, at position 0), or
    the head's logits scaled by `scale` before anything reads them (the monitor's kept logits
    and the draw alike, so only the plain forward can tell)."""

    def __init__(self, model: torch.nn.Module, *, fresh_cache: bool = False, scale: float = 1.0) -> None:
        self.model, self.config, self.embed = model, model.config, model.embed
        self.fresh_cache, self.scale = fresh_cache, scale

    def __call__(self, idx: torch.Tensor, *, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.fresh_cache and idx.shape[1] == 1:
            cache = KVCache(self.config, idx.shape[0], idx.device, self.embed.weight.dtype)
        hook = self.model.lm_head.register_forward_hook(lambda _m, _i, out: out * self.scale, prepend=True)
        try:
            return self.model(idx, cache=cache)
        finally:
            hook.remove()


def _decoding_with(monkeypatch: pytest.MonkeyPatch, **planted: object) -> None:
    """GPT.generate decodes the model (not the spread probe) through a `_Decoder` with `planted`."""
    real = gpt_module.generate

    def generate(model: torch.nn.Module, idx: torch.Tensor, n: int, **sampling: object) -> torch.Tensor:
        return real(_Decoder(model, **planted) if isinstance(model, GPT) else model, idx, n, **sampling)

    monkeypatch.setattr(gpt_module, "generate", generate)


def _sampled(run: Path) -> dict[str, object]:
    return next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-005")


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_decoder_given_a_fresh_cache_at_every_step_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each token is drawn from the logits the model gives it alone, at position 0: drawn exactly
    as configured from those logits (the replay holds), but not from the model's for the text."""
    _decoding_with(monkeypatch, fresh_cache=True)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    result = _sampled(run)
    assert result["verdict"] == "FAIL" and result["measured"]["mismatched_draws"] == 0
    assert result["measured"]["context_logits_deviation"] > 0.01


@pytest.mark.parametrize(
    "times, fires",
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRAIN-005")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRAIN-005")),
    ],
)
def test_decoding_logits_off_just_beyond_context_logits_rtol_fire_and_just_inside_hold(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: float, fires: bool
) -> None:
    """Every cached call's logits scaled by 1 + times × context_logits_rtol: each is off the plain
    forward's by that fraction of the largest |logit|."""
    rtol = load_spec().threshold("GATE-TRAIN-005", "context_logits_rtol")
    _decoding_with(monkeypatch, scale=1.0 + times * rtol)
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == (3 if fires else 0)
    measured = _sampled(run)["measured"]
    assert measured["context_logits_deviation"] == pytest.approx(times * rtol, rel=0.01)


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize(
    "configured, computed",
    [("fp32", "bfloat16"), ("bf16", None)],
    ids=["fp32-run-in-bf16", "bf16-run-in-fp32"],
)
def test_a_run_computing_in_another_precision_than_it_states_stops_at_its_first_step(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    configured: str,
    computed: str | None,
) -> None:
    """An fp32 run under bf16 autocast, and its mirror."""
    monkeypatch.setattr(Trainer, "_autocast", autocast_of(computed))
    run = tmp_path / "run"
    assert train(smoke_args(data, run, f"train.precision='{configured}'")) == 3
    assert "GATE-TRAIN-007" in capsys.readouterr().err
    result = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")
    assert result["verdict"] == "FAIL" and result["step"] == 1
    assert result["measured"]["logits_dtypes"] == [computed or "float32"]


@pytest.mark.holds("GATE-TRAIN-007")
def test_a_bf16_run_states_the_dtype_its_loss_read(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.precision='bf16'")) == 0
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert (measured["precision"], measured["logits_dtypes"]) == ("bf16", ["bfloat16"])


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_loss_that_stops_stating_its_logits_dtype_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every scoring is recorded without the dtype of its logits: the precision it ran in goes
    unshown, which stops the run at step 1 rather than passing for any precision."""
    real = gpt_module.record
    monkeypatch.setattr(
        gpt_module, "record", lambda consumed: real(dataclasses.replace(consumed, logits_dtype=None))
    )
    run = tmp_path / "run"
    assert train(smoke_args(data, run)) == 3
    assert "GATE-TRAIN-007" in capsys.readouterr().err
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert measured["logits_dtypes"] == [] and measured["scorings"] > 0


def test_fsdp_asked_of_one_process_says_it_trains_unsharded(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.parallel='fsdp' without --nproc shards nothing: the run says so rather than leave the
    user believing it sharded."""
    assert train(smoke_args(data, tmp_path / "run", "train.parallel='fsdp'")) == 0
    assert "train.parallel='fsdp' shards over the processes of --nproc N; this run has one process" in (
        capsys.readouterr().err
    )
