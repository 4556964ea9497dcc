"""Checkpoints hold everything, are verified on load, and a resume continues bit for bit."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from contracts.errors import GateViolation
from contracts.evidence import read_evidence, sha256_file
from contracts.spec import load_spec
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train import loop, rng
from stack.train.coherence import CoherenceMonitor
from stack.train.loop import Trainer, TrainState
from tests.support.train_support import (
    COMPARED,
    differences,
    evidence,
    interrupted_copy,
    prepared,
    smoke_args,
    step_lines,
    train,
    unjudged,
    verdicts,
)
from tools.integrity import check as check_integrity
from tools.integrity.record_checks import check_record_truth

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight steps without interruption, a checkpoint every two."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train(smoke_args(data, run, "train.steps=8", "ckpt.every=2", "ckpt.keep_last=8")) == 0
    return run


@pytest.mark.holds("GATE-CKPT-003")
def test_resume_is_bit_exact(straight: Path, tmp_path: Path) -> None:
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run)]) == 0
    assert differences(straight, run) == []
    lines = step_lines(run)
    assert [ln["step"] for ln in lines] == list(range(1, 9))  # history unbroken, no duplicate steps
    assert (run / "metrics.rolled-back.jsonl").is_file()  # what the dead run wrote after step 4
    assert evidence(run)["metrics"]["resumes"][0]["from_step"] == 4


def test_a_resumed_record_is_true_and_judged_its_checkpoint(straight: Path, tmp_path: Path) -> None:
    """The verified load of the resume lands in the record, and the integrity checker agrees with it."""
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run)]) == 0
    assert verdicts(run)["GATE-CKPT-002"] == "PASS"
    assert unjudged(run) == {}  # the earlier part's verdicts were carried: TRAIN-004 ran at step 1 only
    record = read_evidence(run / "metadata.json")
    assert check_record_truth(record, run, load_spec()).violations == []
    assert record.checkpoint is not None and record.checkpoint.name == "step-0000008"


@pytest.mark.gate("GATE-DATA-001")
def test_a_resume_whose_reader_restarts_after_the_restore_check_halts_at_its_first_step(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The restore is exact (GATE-CKPT-003 holds), then the stream starts again from its first batch:
    each batch is its own step's planned windows, but not the run's step 5. The loop's count of
    batches taken, set from the checkpoint, is what the reader's count is held to."""
    original = Trainer.restore

    def forgetful(self: Trainer, checkpoint: ckpt.Checkpoint) -> None:
        fresh = self.reader.state_dict()
        original(self, checkpoint)
        self.reader.load_state_dict(fresh)  # the planted bug: the reader restarts from zero

    monkeypatch.setattr(Trainer, "restore", forgetful)
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run)]) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-001" in err and "has served 1 batch(es) where the run has taken 5" in err, err
    assert [line["step"] for line in step_lines(run)] == [1, 2, 3, 4]  # step 5 never trained


@pytest.mark.holds("GATE-CKPT-001")
def test_checkpoint_holds_the_whole_state(straight: Path) -> None:
    path = ckpt.list_checkpoints(straight)[-1]
    assert sorted(p.name for p in path.iterdir()) == sorted([*ckpt.FILES, ckpt.TOKENIZER_FILE, ckpt.MANIFEST])
    state = json.loads((path / "state.json").read_text())
    assert set(ckpt.STATE_KEYS) <= set(state)
    assert {"python", "numpy", "torch", "cuda", "torch_version"} <= set(state["rng"])
    assert state["optimizer"]["param_groups"] and load_file(str(path / "optimizer.safetensors"))
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))


def _mismatched(run: Path) -> list[str]:
    """The restored states GATE-CKPT-003 found different from the checkpoint, from the record."""
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == "GATE-CKPT-003"]
    assert result["verdict"] == "FAIL"
    return result["measured"]["mismatched"]


@pytest.mark.gate("GATE-CKPT-003")
def test_a_resume_that_leaves_the_rng_unrestored_halts(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rng, "restore", lambda state: None)  # the planted bug
    run = interrupted_copy(straight, tmp_path, at_step=4)
    before = random.getstate()
    random.seed(20261122)  # a resumed process's generators are not where the checkpoint left them
    try:
        assert train(["train", "--resume", str(run)]) == 3
    finally:
        random.setstate(before)
    assert _mismatched(run) == ["rng"]


@pytest.mark.gate("GATE-CKPT-003")
def test_a_resume_that_forgets_a_monitor_halts(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = TrainState.load_monitors

    def forgetful(self: TrainState, state: dict) -> None:
        load(self, {**state, "coherence": CoherenceMonitor().state_dict()})  # the planted bug

    monkeypatch.setattr(TrainState, "load_monitors", forgetful)
    run = interrupted_copy(straight, tmp_path, at_step=6)
    saved = json.loads((ckpt.step_dir(run, 6) / "state.json").read_text())
    assert saved["monitors"]["coherence"] != CoherenceMonitor().state_dict()  # step 5 was sampled
    assert train(["train", "--resume", str(run)]) == 3
    assert _mismatched(run) == ["monitors"]


@pytest.mark.gate("GATE-CKPT-001")
def test_a_checkpoint_missing_its_rng_is_refused(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Trainer.checkpoint_state

    def without_rng(self: Trainer) -> dict:
        state = original(self)
        del state["rng"]
        return state

    monkeypatch.setattr(Trainer, "checkpoint_state", without_rng)
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert verdicts(tmp_path / "run")["GATE-CKPT-001"] == "FAIL"


def _a_fresh_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model a save is handed instead of the one the run trains: the same shape, drawn anew."""
    return GPT(model.config, seed=12345)


def _one_ulp_off(model: torch.nn.Module) -> torch.nn.Module:
    """The model trained, but for one element of one tensor moved by one unit in the last place."""
    copy = GPT(model.config, seed=0)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        weight = copy.embed.weight
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(float("inf"), dtype=weight.dtype))
    return copy


@pytest.mark.gate("GATE-CKPT-001")
@pytest.mark.parametrize("saved", [_a_fresh_model, _one_ulp_off], ids=["a-fresh-model", "one-ulp-off"])
def test_a_checkpoint_of_another_model_than_the_one_trained_halts_the_run(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    saved: Callable[[torch.nn.Module], torch.nn.Module],
) -> None:
    """The save is handed another model: the checkpoint is complete and verifies file by file, and a
    resume would continue from it; only reading it back against the model in memory shows it."""
    real = ckpt.save_checkpoint
    monkeypatch.setattr(
        ckpt, "save_checkpoint", lambda run_dir, step, model, *rest: real(run_dir, step, saved(model), *rest)
    )
    assert train(smoke_args(data, tmp_path / "run")) == 3
    result = next(g for g in evidence(tmp_path / "run")["gates"] if g["id"] == "GATE-CKPT-001")
    assert result["verdict"] == "FAIL" and result["measured"]["weights_differing"] >= 1


def _moments_in_bf16(real: Callable[..., tuple[dict[str, torch.Tensor], dict]]) -> Callable[..., Any]:
    """Planted: the optimizer's moments written as bf16 to halve optimizer.safetensors."""

    def planted(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = real(optimizer)
        return {k: t.to(torch.bfloat16) if t.dim() else t for k, t in tensors.items()}, meta

    return planted


def _one_moment_one_ulp_off(real: Callable[..., tuple[dict[str, torch.Tensor], dict]]) -> Callable[..., Any]:
    """The optimizer state written as it is, but for one element of one moment one unit in the last
    place off: the least a file can differ by."""

    def planted(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = real(optimizer)
        name = next(k for k, t in sorted(tensors.items()) if t.dim())
        moment = tensors[name].clone()
        moment.view(-1)[0] = torch.nextafter(moment.view(-1)[0], torch.tensor(float("inf")))
        return {**tensors, name: moment}, meta

    return planted


@pytest.mark.gate("GATE-CKPT-001")
@pytest.mark.parametrize("written", [_moments_in_bf16, _one_moment_one_ulp_off], ids=["bf16", "one-ulp-off"])
def test_a_checkpoint_whose_optimizer_file_is_not_the_live_state_halts_the_run(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    written: Callable[..., Any],
) -> None:
    """The file is complete and verifies, and a resume would restore it and find the restored state
    equal to it; only reading it back against the optimizer in memory shows the rounding."""
    monkeypatch.setattr(ckpt, "optimizer_tensors", written(ckpt.optimizer_tensors))
    assert train(smoke_args(data, tmp_path / "run")) == 3
    assert "GATE-CKPT-001" in capsys.readouterr().err
    result = next(g for g in evidence(tmp_path / "run")["gates"] if g["id"] == "GATE-CKPT-001")
    assert result["verdict"] == "FAIL" and result["measured"]["optimizer_differing"] >= 1


@pytest.mark.holds("GATE-CKPT-001")
def test_every_save_reads_the_optimizer_file_back_equal_to_the_live_state(straight: Path) -> None:
    measured = next(g for g in evidence(straight)["gates"] if g["id"] == "GATE-CKPT-001")["measured"]
    assert measured["optimizer_compared"] > 0 and measured["optimizer_differing"] == 0


def _flip_last_byte(path: Path) -> None:
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0xFF
    path.write_bytes(bytes(payload))


def _flip_a_weight_bit(checkpoint: Path) -> None:
    _flip_last_byte(checkpoint / "model.safetensors")


def _flip_a_moment_bit(checkpoint: Path) -> None:
    _flip_last_byte(checkpoint / ckpt.OPTIMIZER_FILE)


def _miscount_tokens_seen(checkpoint: Path) -> None:
    """state.json still parses; one counter of the monitors is off by one."""
    state = json.loads((checkpoint / "state.json").read_text())
    state["monitors"]["tokens_seen"] += 1
    (checkpoint / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))


def _misstate_a_size(checkpoint: Path) -> None:
    """manifest.json still parses; it claims one byte more for state.json."""
    manifest = json.loads((checkpoint / ckpt.MANIFEST).read_text())
    manifest["files"]["state.json"]["bytes"] += 1
    (checkpoint / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1))


@pytest.mark.gate("GATE-CKPT-002")
@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (_flip_a_weight_bit, "model.safetensors"),
        (_flip_a_moment_bit, "optimizer.safetensors"),
        (_miscount_tokens_seen, "state.json"),
        (_misstate_a_size, "state.json"),  # the manifest is the reference: its lie names the file
    ],
    ids=["model", "optimizer", "state", "manifest"],
)
def test_a_corrupt_checkpoint_is_refused_and_resume_falls_back(
    straight: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    named: str,
) -> None:
    """Every file of a checkpoint is verified on load, and a damaged newest one is skipped on resume."""
    run = interrupted_copy(straight, tmp_path, at_step=6)
    newest = ckpt.list_checkpoints(run)[-1]
    damage(newest)
    with pytest.raises(GateViolation, match=rf"GATE-CKPT-002.*{re.escape(named)}"):
        ckpt.load_checkpoint(newest)
    assert train(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "skipping step-0000006" in err and "resuming from step-0000004" in err
    assert differences(straight, run) == []


def _oldest_first(run_dir: Path, resumable: bool = False) -> tuple[Path | None, list[str]]:
    """Planted: the choice of a run directory's checkpoint takes its oldest."""
    return ckpt.list_checkpoints(run_dir)[0], []


def _newest_check(record: dict[str, object]) -> dict[str, object]:
    """GATE-CKPT-002's measured values in a record (plain data)."""
    gates = record["gates"]
    assert isinstance(gates, list)
    return next(g for g in gates if g["id"] == "GATE-CKPT-002")["measured"]


@pytest.mark.gate("GATE-CKPT-002")
def test_a_resume_of_a_completed_run_from_an_older_checkpoint_is_refused_before_anything_is_written(
    straight: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Extending the finished run from step 2 would retrain steps 3 to 8 over its history; its
    newest checkpoint, step 8, loads, and the run's log says it wrote it."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    config = (run / "config.toml").read_bytes()
    monkeypatch.setattr(ckpt, "latest_valid", _oldest_first)
    assert train(["train", "--resume", str(run), "--set", "train.steps=10"]) == 3
    err = capsys.readouterr().err
    assert "GATE-CKPT-002" in err and "step-0000002 was read" in err and "step-0000008" in err, err
    assert (run / "config.toml").read_bytes() == config and len(step_lines(run)) == 8


@pytest.mark.parametrize(
    ("steps", "code", "said"),
    [
        ((), 0, "is complete at step 8 (train.steps=8): nothing to resume"),
        (("--set", "train.steps=7"), 2, "cannot resume"),
    ],
    ids=["as-it-was", "below-its-step"],
)
def test_a_resume_with_no_step_left_writes_nothing(
    straight: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    steps: tuple[str, ...],
    code: int,
    said: str,
) -> None:
    """A finished run resumed again (a retried job) ran no step, appended to its log and wrote a
    record the integrity check called false (an early-stopping verdict at no step; with train.steps
    below its step, a log ending past it). Resumed as it was, it is told it is complete and left
    alone (exit 0); asked for fewer steps than it took, it is refused. Both name the way to train
    on, and one step more trains."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = {name: (run / name).read_bytes() for name in ("config.toml", "metadata.json", "metrics.jsonl")}
    assert train(["train", "--resume", str(run), *steps]) == code
    err = capsys.readouterr().err
    assert said in err and "raise train.steps (--set train.steps=N with N above 8)" in err, err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert train(["train", "--resume", str(run), "--set", "train.steps=9"]) == 0
    assert [line["step"] for line in step_lines(run)] == list(range(1, 10))


@pytest.mark.gate("GATE-CKPT-002")
def test_an_evaluation_of_a_run_dir_that_reads_an_older_checkpoint_is_refused(
    straight: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(ckpt, "latest_valid", _oldest_first)
    scored = tmp_path / "scored"
    assert train(["eval", str(straight), "--split", "val", "--record", str(scored)]) == 3
    assert "GATE-CKPT-002" in capsys.readouterr().err
    measured = _newest_check(json.loads((scored / "metadata.json").read_text()))
    assert measured["chosen_checkpoint"] == "step-0000002"
    assert measured["newer_valid"] == ["step-0000004", "step-0000006", "step-0000008"]


@pytest.mark.holds("GATE-CKPT-002")
def test_a_resume_past_a_newer_checkpoint_that_does_not_load_holds_and_names_it(
    straight: Path, tmp_path: Path
) -> None:
    """The newest checkpoint is damaged: resuming from the one before is the newest valid one, and
    the record names the one passed over, and those the log names but the disk no longer holds."""
    run = interrupted_copy(straight, tmp_path, at_step=6)
    _flip_a_weight_bit(ckpt.list_checkpoints(run)[-1])
    assert train(["train", "--resume", str(run)]) == 0
    measured = _newest_check(evidence(run))
    assert measured["chosen_checkpoint"] == "step-0000004" and measured["newer_valid"] == []
    assert measured["newer_checkpoints"] == ["step-0000006", "step-0000008"]


def unlogged_newest(straight: Path, tmp_path: Path, torn: bool) -> Path:
    """The straight run as a kill between its last checkpoint's rename into place and the log line
    that records it leaves it: step-0000008 on disk and verifying, the log's
    last line (its `checkpoint` event) lost whole, or `torn` mid-write."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    assert (last.get("event"), last.get("path")) == ("checkpoint", "step-0000008")
    log.write_text("".join(lines[:-1]) + (lines[-1][:-40] if torn else ""))
    return run


@pytest.mark.holds("GATE-CKPT-002")
@pytest.mark.parametrize("torn", [False, True], ids=["lost", "torn"])
def test_a_checkpoint_its_log_never_recorded_is_adopted_and_the_run_goes_on(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], torn: bool
) -> None:
    """The resume continued from step-0000008, which the log never named, then GATE-CKPT-002
    fired at every later save (the prune's kept set is read from the log). The resume adopts it,
    saying so in one line, and logs its event: every later prune and resume holds, the steps before
    it are the ones that made it (nothing retaken), and the record passes the integrity check."""
    run = unlogged_newest(straight, tmp_path, torn)
    manifest = sha256_file(ckpt.step_dir(run, 8) / ckpt.MANIFEST)
    assert train(["train", "--resume", str(run), "--set", "train.steps=10", "--set", "ckpt.keep_last=1"]) == 0
    err = capsys.readouterr().err
    assert err.count("adopting step-0000008") == 1 and "its checkpoint event is logged now" in err, err
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"checkpoint"' in x]
    adopted = [e for e in events if e.get("adopted")]
    assert [(e["path"], e["manifest_sha256"]) for e in adopted] == [("step-0000008", manifest)]
    assert evidence(run)["metrics"]["resumes"][-1]["from_step"] == 8
    assert train(["train", "--resume", str(run), "--set", "train.steps=12", "--set", "ckpt.keep_last=1"]) == 0
    assert "adopting" not in capsys.readouterr().err
    assert [ln["step"] for ln in step_lines(run)] == list(range(1, 13))
    kept = [{k: ln[k] for k in COMPARED} for ln in step_lines(run)[:8]]
    assert kept == [{k: ln[k] for k in COMPARED} for ln in step_lines(straight)]
    assert not (run / "metrics.rolled-back.jsonl").exists()  # no step was taken twice
    assert verdicts(run)["GATE-CKPT-002"] == "PASS"
    assert check_integrity.main(["--runs-only", "--run", str(run)]) == 0, capsys.readouterr()


OPTIMIZER_SETS = ["train.weight_decay=0.05", "train.eps=1e-7", "train.beta2=0.99"]


@pytest.mark.holds("GATE-TRAIN-008")
def test_a_resume_that_changes_the_optimizer_settings_steps_with_them_and_records_them(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.toml says the new weight decay, betas and eps: the restored groups step with them (the
    optimizer's update is held to them at the first resumed step), the resume entry lists each
    group's old and new value, and the next checkpoint holds them."""
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert (
        train(["train", "--resume", str(run), *(w for item in OPTIMIZER_SETS for w in ("--set", item))]) == 0
    )
    assert "the restored optimizer steps with this resume's settings" in capsys.readouterr().err
    assert verdicts(run)["GATE-TRAIN-008"] == "PASS"
    changes = evidence(run)["metrics"]["resumes"][0]["optimizer_settings"]
    assert {"group": 0, "key": "weight_decay", "was": 0.1, "now": 0.05} in changes
    groups = ckpt.read_state(ckpt.list_checkpoints(run)[-1])["optimizer"]["param_groups"]
    assert [(g["weight_decay"], g["eps"], g["betas"]) for g in groups] == [
        (0.05, 1e-7, [0.9, 0.99]),
        (0.0, 1e-7, [0.9, 0.99]),
    ]


@pytest.mark.gate("GATE-TRAIN-008")
def test_a_resume_whose_restored_optimizer_keeps_the_checkpoints_settings_halts_at_its_first_step(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings changed in config.toml and left off the restored groups: the first resumed
    step's update is not the configured AdamW's."""
    monkeypatch.setattr(loop, "apply_settings", lambda optimizer, settings: [])
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run), "--set", OPTIMIZER_SETS[0]]) == 3
    assert "GATE-TRAIN-008" in capsys.readouterr().err
    assert [line["step"] for line in step_lines(run)] == [1, 2, 3, 4]


def test_no_temporary_directory_is_left_behind(straight: Path) -> None:
    assert not [p for p in (straight / ckpt.CKPT_DIR).iterdir() if p.name.startswith(".")]


def _steps_logged(run: Path) -> int:
    """The step lines a running run has logged so far (its last line may be half written)."""
    log = run / "metrics.jsonl"
    return log.read_text(encoding="utf-8").count('{"type": "step"') if log.is_file() else 0


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["term", "int"])
def test_a_signal_checkpoints_ends_not_completed_and_resume_completes(
    data: Path, straight: Path, tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """SIGTERM or Ctrl-C: a checkpoint at the next step boundary, the record `interrupted`, and the
    conventional status 128 + the signal (once, it was 0, so `stack train ... && next` went on
    from a half-trained model); one line names the checkpoint, and --resume runs to the end."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    steps = 100_000  # the run's end, far beyond any step the signal can land at on a loaded machine
    never = steps + 1
    settings = (f"ckpt.every={never}", f"eval.every={never}", f"monitor.sample_every={never}")
    argv = [sys.executable, "-m", "stack", *smoke_args(data, run, f"train.steps={steps}", *settings)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _steps_logged(run) < 3:
        time.sleep(0.2)
    assert proc.poll() is None and _steps_logged(run) >= 3, "the run is past step 3 when the signal comes"
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    record = evidence(run)
    assert record["run"]["status"] == "interrupted" and stop.name in record["run"]["stop_reason"]
    stopped = len(step_lines(run))
    assert ckpt.list_checkpoints(run)[-1].name == f"step-{stopped:07d}"
    assert stopped < steps
    assert err.splitlines()[-1] == (
        f"stack train: interrupted by {stop.name}: stopped at step {stopped} of {steps}, which is saved in "
        f"step-{stopped:07d}; continue with --resume {run}"
    )
    assert train(["train", "--resume", str(run), "--set", f"train.steps={stopped + 2}"]) == 0
    assert evidence(run)["run"]["status"] == "completed"


def test_a_changed_mixture_on_resume_is_applied_and_recorded(
    data: Path, straight: Path, tmp_path: Path
) -> None:
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run), "--set", "data.weights={main = 0.5}"]) == 0
    record = evidence(run)
    assert record["metrics"]["resumes"][0]["changed"] == ["data.weights"]
    assert record["config"]["data"]["weights"] == {"main": 0.5}
    later = [ln["batch_sha256"] for ln in step_lines(run)][4:]
    assert later != [ln["batch_sha256"] for ln in step_lines(straight)][4:]


def test_init_from_starts_a_new_run_from_trained_weights(data: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "finetune"
    assert (
        train(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                "--preset",
                "smoke",
                "--init-from",
                str(straight),
            ]
        )
        == 0
    )
    first = step_lines(run)[0]
    assert first["step"] == 1 and first["loss"] < step_lines(straight)[-1]["loss"] + 0.5
    record = evidence(run)
    assert record["metrics"]["init_from"]["step"] == 8
    # A trained start is not a fresh init: a fine-tuning run does not judge its first loss.
    assert evidence(run)["run"]["kind"] == "finetune" and "GATE-TRAIN-004" not in verdicts(run)


def test_init_from_and_resume_together_is_bad_input(
    straight: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(["train", "--resume", str(straight), "--init-from", str(straight)]) == 2
    assert "pick one" in capsys.readouterr().err


@pytest.mark.parametrize(
    "setting",
    [
        "model.moe_experts=4",
        "model.diff_attn=true",
        "model.mod_every=1",
        "model.n_layers=3",
        "model.d_model=64",
    ],
)
def test_init_from_refuses_a_model_setting_that_would_change_the_architecture(
    data: Path, straight: Path, tmp_path: Path, setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The started model's architecture is the checkpoint's: a --set that would change it is refused
    in one line naming the key, before anything is written (it was dropped in silence, and the run
    trained the checkpoint's dense model under a config that asked for experts)."""
    out = tmp_path / "ft"
    argv = [*smoke_args(data, out, setting, "train.steps=2"), "--init-from", str(straight)]
    assert train(argv) == 2
    err = capsys.readouterr().err
    assert f"--init-from {straight} keeps the architecture" in err and setting.split("=")[0] in err
    assert "drop that setting" in err and "--preset" in err and err.count("\n") == 1
    assert not out.exists()


def test_init_from_refuses_a_config_file_model_that_would_change_it(
    data: Path, straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ft.toml"
    config.write_text("[model]\nffn_hidden = 32\n")
    out = tmp_path / "ft"
    argv = [*smoke_args(data, out, "train.steps=2"), "--config", str(config), "--init-from", str(straight)]
    assert train(argv) == 2
    assert "model.ffn_hidden (64 -> 32)" in capsys.readouterr().err and not out.exists()


def test_init_from_takes_the_attention_path_and_settings_equal_to_the_checkpoints(
    data: Path, straight: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    sets = ("model.attention='naive'", "model.n_layers=1", "train.steps=2", "eval.every=2", "ckpt.every=2")
    assert train([*smoke_args(data, out, *sets), "--init-from", str(straight)]) == 0
    assert evidence(out)["config"]["model"]["attention"] == "naive"


def test_init_from_honours_the_training_settings_of_an_option(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mod_capacity and the mixture's loss weights are training settings: a started run takes them.
    On a model without the option they are refused, naming the key, as on a fresh model."""
    steps = ("train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2")
    source = tmp_path / "mod"
    assert train(smoke_args(data, source, "model.mod_every=1", "model.mod_capacity=0.5", *steps)) == 0
    out = tmp_path / "ft"
    assert train([*smoke_args(data, out, "model.mod_capacity=0.25", *steps), "--init-from", str(source)]) == 0
    assert evidence(out)["config"]["model"]["mod_capacity"] == 0.25
    capsys.readouterr()
    dense = tmp_path / "dense-ft"
    argv = [*smoke_args(data, dense, "model.moe_z_coef=0.01", *steps), "--init-from", str(out)]
    assert train(argv) == 2
    assert "moe_z_coef only apply with moe_experts > 0" in capsys.readouterr().err and not dense.exists()


def test_a_distillation_student_keeps_its_architecture(
    data: Path, straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kd"
    argv = ["distill", str(straight), "--data", str(data), "--out", str(out), "--student", str(straight)]
    assert train([*argv, "--steps", "2", "--device", "cpu", "--set", "model.moe_experts=2"]) == 2
    err = capsys.readouterr().err
    assert f"--student {straight} keeps the architecture" in err and "model.moe_experts (0 -> 2)" in err
    assert not out.exists()


def test_a_resume_refusal_names_a_default_by_its_value(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A saved config leaves an option at its default out; the refusal still says what it was (it
    said None: `model.moe_top_k (None -> 1)` of a run at top-2)."""
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run), "--set", "model.qkv_bias=true"]) == 2
    assert "model.qkv_bias (False -> True)" in capsys.readouterr().err
    assert train(["train", "--resume", str(run), "--set", "model.init_std=0.05"]) == 2
    assert "model.init_std (0.02 -> 0.05)" in capsys.readouterr().err


def test_a_resume_of_a_run_never_filed_files_it_under_its_own_id(straight: Path, tmp_path: Path) -> None:
    """The first filing of a run is its run id, whichever leg it is; a resumed leg of a run the
    ledger holds is filed as the next leg (tests/release/test_release.py walks that chain)."""
    run = interrupted_copy(straight, tmp_path, at_step=6)
    ledger = tmp_path / "ledger"
    assert train(["train", "--resume", str(run), "--evidence-dir", str(ledger)]) == 0
    assert sorted(p.name for p in ledger.iterdir()) == ["run"]
    filed = evidence(ledger / "run")
    assert filed["run"]["id"] == "run" and filed["lineage"] is None


@pytest.mark.holds("GATE-TRAIN-002")
@pytest.mark.parametrize(
    "changes",
    [("train.clip_norm=0.5",), ("train.warmup_steps=6",), ("train.lr=0.001", "train.warmup_steps=6")],
    ids=["lower-clip", "longer-warmup", "rate-and-warmup"],
)
def test_a_resume_that_changes_the_clip_or_the_warmup_is_judged_by_the_new_setting(
    straight: Path, tmp_path: Path, changes: tuple[str, ...]
) -> None:
    """The earlier leg's post-clip norm and warmup rates were measured under the old settings; a
    resume that changes them is judged on what it measures under the new ones, never on the old
    values against the new limits (GATE-TRAIN-002 would fire with no problem named)."""
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run), *(a for c in changes for a in ("--set", c))]) == 0
    record = read_evidence(run / "metadata.json")
    assert verdicts(run)["GATE-TRAIN-002"] == "PASS"
    assert check_record_truth(record, run, load_spec()).violations == []


@pytest.mark.parametrize(
    ("change", "named"),
    [("train.grad_accum=2", "train.grad_accum (1 -> 2)"), ("eval.batches=20", "eval.batches")],
    ids=["accumulation", "held-out-batches"],
)
def test_a_resume_that_changes_a_steps_tokens_or_the_held_out_set_is_refused(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, named: str
) -> None:
    """Accumulation sets the tokens a step serves, the unit of the run's plan and epochs; the
    held-out batches are the one set every evaluation scores. Changed on resume, each would leave a
    record the integrity check refuses; they are refused up front, in one line."""
    run = interrupted_copy(straight, tmp_path, at_step=4)
    assert train(["train", "--resume", str(run), "--set", change]) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1
