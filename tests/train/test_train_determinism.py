"""train.deterministic and GATE-CKPT-003's replay: strict kernels, a record that says what ran, and
repeatability checked at run time instead of assumed.

On CPU every kernel the stack uses is deterministic, so the non-deterministic op is a real CPU op
that PyTorch refuses under strict mode (`Tensor.put_` without accumulation), planted in the model
or the optimizer, and the non-repeatable step is a loss nudged on the steps taken but not on their
rehearsal.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.derive.training import CUBLAS_REPRODUCIBLE
from contracts.errors import BadInput
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.model import gpt as gpt_module
from stack.model.gpt import GPT
from stack.train import determinism
from stack.train.loop import Trainer
from stack.train.queued import QueuedStep
from tests.support.ledger_support import findings
from tests.support.train_support import CrossEntropyScaled, evidence, prepared, smoke_args, step_lines, train
from tools.integrity.record_checks import check_record_truth
from tools.integrity.repeatability import repeatability_problems

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

RTOL = load_spec().threshold("GATE-CKPT-003", "nondeterministic_loss_rtol")
SHORT = ("train.steps=2", "train.warmup_steps=1")  # a smoke run of two steps: every cadence at step 2
REFUSED_OP = "put_"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


def put_without_accumulation() -> None:
    """A real CPU op with no deterministic implementation: PyTorch raises on it under strict mode."""
    torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))


def record_of(run: Path) -> dict[str, Any]:
    return evidence(run)


def replay_result(run: Path) -> dict[str, Any]:
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == "GATE-CKPT-003"]
    return result


# -- the setting --------------------------------------------------------------------------------


def test_the_setting_is_strict_and_put_back_after_the_run() -> None:
    before = determinism.Switches.now()
    with determinism.kernels(True):
        on = determinism.Switches.now()
        assert on.deterministic_algorithms and not on.warn_only
        assert on.cudnn_deterministic and not on.cudnn_benchmark and on.inductor_deterministic
        assert "cudnn" not in on.sdpa_backends and "flash" in on.sdpa_backends
        assert on.cublas_workspace_config == CUBLAS_REPRODUCIBLE[0]
        # What torch's deterministic mode would fill with NaN is left unfilled (stack.train.determinism).
        assert not on.fill_uninitialized_memory
    assert determinism.Switches.now() == before
    with determinism.kernels(False):
        assert not torch.are_deterministic_algorithms_enabled()
    assert determinism.Switches.now() == before


@pytest.mark.parametrize("workspace", [":16:8", ":0:0"])
def test_a_cublas_workspace_the_environment_sets_is_kept_only_where_it_is_reproducible(
    monkeypatch: pytest.MonkeyPatch, workspace: str
) -> None:
    monkeypatch.setenv(determinism.CUBLAS_ENV, workspace)
    if workspace in CUBLAS_REPRODUCIBLE:
        assert determinism.Switches.now().wanted(True).cublas_workspace_config == workspace
    else:
        with pytest.raises(BadInput, match="is not one of cuBLAS's reproducible settings"):
            determinism.Switches.now().wanted(True)
    assert determinism.Switches.now().wanted(False).cublas_workspace_config == workspace


def test_inductor_loaded_during_a_run_leaves_its_environment_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that sets Inductor's deterministic mode before Inductor is loaded (its environment
    variable) and loads it (`train.compile`) leaves neither the variable nor the config set: the
    processes started afterwards (a benchmark's legs, a test's commands) inherit the environment."""
    import torch._inductor.config as inductor

    monkeypatch.delenv(determinism.INDUCTOR_ENV, raising=False)
    # Inductor's own patch: monkeypatch's undo of a torch config entry deletes the entry.
    with inductor.patch(deterministic=False):
        monkeypatch.delitem(sys.modules, determinism.INDUCTOR_CONFIG)  # not loaded yet
        with determinism.kernels(True):
            assert os.environ.get(determinism.INDUCTOR_ENV) == "1"
            sys.modules[determinism.INDUCTOR_CONFIG] = inductor  # loaded by the run's compilation
        assert determinism.INDUCTOR_ENV not in os.environ
        assert not inductor.deterministic


STRICT = (
    "does not have a deterministic implementation, but you set 'torch.use_deterministic_algorithms(True)'"
)
DEFAULTS = "defaults to a non-deterministic algorithm. To explicitly enable determinism call"


@pytest.mark.parametrize(
    ("message", "op"),
    [
        (f"put_ {STRICT}.", "put_"),
        (f"Failed running call_function (*(FakeTensor(...))): index_add_cuda_ {STRICT}", "index_add_cuda_"),
        (f"Flash Attention {DEFAULTS}", "Flash Attention"),
        (f"Memory Efficient attention {DEFAULTS}", "Memory Efficient attention"),
        (f"cuDNN Attention {DEFAULTS}", "cuDNN Attention"),
        (
            "but this operation is not deterministic because it uses CuBLAS and you have CUDA >= 10.2",
            "CuBLAS",
        ),
        ("shapes do not match", None),
    ],
)
def test_pytorchs_reports_are_read_as_the_op_they_name(message: str, op: str | None) -> None:
    assert determinism.alerted_op(message) == op


def test_reported_ops_are_counted_not_printed_and_other_warnings_pass() -> None:
    alerts = determinism.Alerts()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with alerts.watching():
            for _ in range(2):
                warnings.warn(
                    "Flash Attention defaults to a non-deterministic algorithm.", UserWarning, stacklevel=1
                )
            warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert alerts.as_flags() == {"Flash Attention": 2}
    assert [str(w.message) for w in shown] == ["an unrelated warning"]


# -- the record says what ran -------------------------------------------------------------------


def test_the_record_states_the_switches_of_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No record's flags differ from what ran: they are read at the first step, where this test
    reads them too, and the process's switches are its own again after the run."""
    seen: list[bool] = []
    original = Trainer.queue_step

    def spying(self: Trainer) -> QueuedStep:
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(self)

    monkeypatch.setattr(Trainer, "queue_step", spying)
    before = determinism.Switches.now()
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT)) == 0
    flags = record_of(run)["determinism"]["flags"]
    assert seen == [True, True] and flags["deterministic_algorithms"] is True
    assert flags["deterministic"] is True and flags["warn_only"] is False
    assert "cudnn" not in flags["sdpa_backends"] and flags["non_deterministic_ops"] == {}
    assert flags["repeatable"] is None  # nothing replayed its steps: unchecked, not claimed
    assert determinism.Switches.now() == before


def test_a_model_op_without_a_deterministic_kernel_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forward = GPT.forward

    def planted(self: GPT, *args: Any, **kwargs: Any) -> Any:
        put_without_accumulation()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", planted)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and REFUSED_OP in lines[0] and "train.deterministic" in lines[0]
    assert not run.exists()  # set-up's forward checks reach the op: nothing was written


def test_a_non_deterministic_op_during_training_lands_in_the_record(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = torch.optim.AdamW.step

    def planted(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        put_without_accumulation()
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", planted)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT)) == 2
    record = record_of(run)
    assert record["run"]["status"] == "failed" and REFUSED_OP in record["run"]["stop_reason"]
    assert record["determinism"]["flags"]["non_deterministic_ops"] == {REFUSED_OP: 1}
    assert step_lines(run) == []  # the first step never completed


def test_an_attention_path_the_device_cannot_run_is_refused_at_set_up(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eager or compiled, before anything is written, not at the first step's forward: here a head
    width the Triton kernel is not built for (head_dim 24)."""
    run = tmp_path / "run"
    shape = ("model.attention='triton'", "model.d_model=48", "model.n_heads=2", "model.n_kv_heads=2")
    assert train(smoke_args(data, run, *SHORT, *shape, "train.compile=true")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.attention='triton' cannot run on cpu at head_dim 24" in line and not run.exists()


# -- GATE-CKPT-003: the steps taken repeat their rehearsal ----------------------------------------


@pytest.mark.holds("GATE-CKPT-003")
def test_a_deterministic_run_replays_bit_for_bit_and_says_so(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT, "train.replay_steps=2")) == 0
    result = replay_result(run)
    assert result["verdict"] == "PASS" and result["measured"]["replayed_steps"] == 2
    assert result["measured"]["bit_for_bit"] is True and result["measured"]["replay_mismatched"] == []
    record = record_of(run)
    assert record["determinism"]["flags"]["repeatable"] is True
    assert record["metrics"]["repeatability"]["seconds"] > 0  # priced
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"]  # no scratch left
    parsed = read_evidence(run / "metadata.json")
    assert check_record_truth(parsed, run, load_spec()).violations == []


@pytest.fixture
def nudged(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Multiply the cross-entropy the model computes in every step the run takes, but not in its
    rehearsal, by the factor put in the yielded list: a kernel that does not repeat itself, as far
    as the replay can tell (made inside the forward, as such a kernel's result would be). Nor in
    the probes, which hold the loss to the cross-entropy of the model's own logits
    (GATE-TRAIN-007's inference check): a kernel's noise moves the logits, and their cross-entropy
    with them, not one away from the other."""
    factor: list[float] = []
    unscaled = [False]  # while the loop rehearses or probes
    rehearse, probe = Trainer.rehearse, Trainer.probe

    def marked(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Trainer, *args: Any) -> Any:
            unscaled[0] = True
            try:
                return method(self, *args)
            finally:
                unscaled[0] = False

        return run

    scaled = CrossEntropyScaled(lambda: 1.0 if unscaled[0] or not factor else factor[0])
    monkeypatch.setattr(gpt_module, "F", scaled)
    monkeypatch.setattr(Trainer, "rehearse", marked(rehearse))
    monkeypatch.setattr(Trainer, "probe", marked(probe))
    yield factor


@pytest.mark.gate("GATE-CKPT-003")
def test_a_deterministic_run_whose_steps_do_not_repeat_halts(
    data: Path, tmp_path: Path, nudged: list[float]
) -> None:
    nudged.append(1 + 2**-20)  # far below any tolerance: bit for bit is the rule here
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT, "train.replay_steps=1")) == 3
    result = replay_result(run)
    assert result["verdict"] == "FAIL" and "step 1 loss" in result["measured"]["replay_mismatched"]
    record = record_of(run)
    assert record["run"]["status"] == "halted" and record["determinism"]["flags"]["repeatable"] is False


def _off_with_gap(data: Path, run: Path, nudged: list[float], gap: float) -> int:
    """A run with train.deterministic=false whose replayed loss differs from the step's by `gap`,
    relative: |a - b| / max(|a|, |b|) = 1 - 1/factor."""
    nudged.append(1 / (1 - gap))
    return train(smoke_args(data, run, *SHORT, "train.deterministic=false", "train.replay_steps=1"))


@pytest.mark.holds("GATE-CKPT-003")
def test_a_run_without_deterministic_kernels_says_so_and_replays_within_tolerance(
    data: Path, tmp_path: Path, nudged: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _off_with_gap(data, run, nudged, 0.99 * RTOL) == 0
    assert "train.deterministic=false" in capsys.readouterr().err
    result = replay_result(run)
    assert result["verdict"] == "PASS" and result["measured"]["bit_for_bit"] is False
    assert 0.98 * RTOL < result["measured"]["max_loss_rel_diff"] < RTOL
    flags = record_of(run)["determinism"]["flags"]
    assert flags["deterministic"] is False and flags["deterministic_algorithms"] is False
    assert flags["repeatable"] is False  # not claimed, though its noise is measured and bounded
    assert repeatability_problems(read_evidence(run / "metadata.json")) == []


@pytest.mark.gate("GATE-CKPT-003")
def test_a_run_without_deterministic_kernels_halts_beyond_the_tolerance(
    data: Path, tmp_path: Path, nudged: list[float]
) -> None:
    run = tmp_path / "run"
    assert _off_with_gap(data, run, nudged, 1.01 * RTOL) == 3
    result = replay_result(run)
    assert result["verdict"] == "FAIL" and result["measured"]["max_loss_rel_diff"] > RTOL


# -- the integrity rule -------------------------------------------------------------------------


def test_a_claim_needs_its_replay_and_a_replay_its_setting(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *SHORT, "train.replay_steps=1")) == 0
    record = read_evidence(run / "metadata.json")
    assert repeatability_problems(record) == []
    unchecked = record.model_copy(deep=True)
    unchecked.gates = [g for g in unchecked.gates if g.id != "GATE-CKPT-003"]
    assert any("without a passing GATE-CKPT-003 replay" in p for p in repeatability_problems(unchecked))
    tolerant = record.model_copy(deep=True)
    next(g for g in tolerant.gates if g.id == "GATE-CKPT-003").measured["bit_for_bit"] = False  # type: ignore[index]
    assert any("train.deterministic is True" in p for p in repeatability_problems(tolerant))


def test_two_runs_of_one_configuration_are_twins_only_where_their_replays_claim_it(
    data: Path, tmp_path: Path
) -> None:
    """Two honest runs of one configuration at one commit log the same steps, as a record filed twice
    would: the check names them one run, and the way out a training run has (its replay); with a
    replay each claims its configuration repeatable, and the two are twins held to agree."""
    plain = [tmp_path / "a", tmp_path / "b"]
    for run in plain:
        assert train(smoke_args(data, run, *SHORT)) == 0
    (line,) = findings(*plain)
    assert "one run filed under two ids" in line and "--set train.replay_steps=2" in line
    replayed = [tmp_path / "c", tmp_path / "d"]
    for run in replayed:
        assert train(smoke_args(data, run, *SHORT, "train.replay_steps=1")) == 0
    assert findings(*replayed) == []
