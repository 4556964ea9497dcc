"""`stack distill`: a student trained against a frozen teacher, under GATE-KD-001..004.

The pipeline test distils a trained dense teacher into a mixture-of-experts student, saves it,
reloads it and samples from it. Falsifiers plant each bug in the stack's own code path: a student
of another vocabulary, a teacher left trainable, a loss that tempers one side only or mixes its
NLL differently (weighted 1 instead of 1 − α, or taken on the teacher's logits), a soft term
without its T². Thresholds are probed just beyond and just inside.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.train.distill_objective import Distill
from stack.train.trained import load_trained
from stack.tune import distill, frozen
from stack.tune.distill import KdTerms
from tests.support.ledger_support import assert_check_required, each_required_check, findings
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import compiled_once, prepared, smoke_args, train

STUDENT = ("--preset", "smoke", "--set", "model.moe_experts=2", "--set", "model.moe_top_k=1")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dense teacher trained 10 steps on a byte-level DATA_DIR, and that DATA_DIR."""
    root = tmp_path_factory.mktemp("distill")
    data, teacher = prepared(root), root / "teacher"
    cadence = ["train.steps=10", "eval.every=10", "ckpt.every=10", "monitor.sample_every=10"]
    assert train(smoke_args(data, teacher, *cadence)) == 0
    return {"data": data, "teacher": teacher}


def _distill(world: dict[str, Path], out: Path, *options: str) -> int:
    argv = ["distill", str(world["teacher"]), "--data", str(world["data"]), "--out", str(out)]
    return main([*argv, "--steps", "3", "--batch-size", "4", *options])


def _metrics(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


def _tempered_student_only(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> KdTerms:
    """The planted bug: the teacher's distribution is taken at T = 1, the student's at T."""
    log_q = torch.log_softmax(student.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher.float(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    nll = F.cross_entropy(student.float().flatten(0, -2), targets.flatten(), ignore_index=-1)
    return KdTerms(alpha * temperature**2 * kl + (1 - alpha) * nll, kl, nll)


def _without_t_squared(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> KdTerms:
    """The planted bug: the soft term is not multiplied by T²."""
    terms = _kd_terms(student, teacher, targets, temperature, alpha)
    soft = alpha * terms.kl
    return KdTerms(soft + (1 - alpha) * terms.nll, terms.kl, terms.nll)


def _nll_weighted_one(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> KdTerms:
    """The planted bug: the NLL is added with weight 1 instead of 1 − α; KL and NLL logged right."""
    terms = _kd_terms(student, teacher, targets, temperature, alpha)
    return KdTerms(alpha * temperature**2 * terms.kl + terms.nll, terms.kl, terms.nll)


def _nll_of_the_teacher(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> KdTerms:
    """The planted bug: the hard term is the teacher's cross-entropy, so the labels never reach the
    student. A student distilled from itself is its own teacher, so the first batch's identities hold."""
    soft = _kd_terms(student, teacher, targets, temperature, alpha)
    hard = _kd_terms(teacher, teacher, targets, temperature, alpha)
    return KdTerms(alpha * temperature**2 * soft.kl + (1 - alpha) * hard.nll, soft.kl, hard.nll)


_kd_terms = distill.kd_terms


# -- the clean path, through the real CLI ------------------------------------------------------


@pytest.mark.holds("GATE-KD-001", "GATE-KD-002", "GATE-KD-003", "GATE-KD-004")
def test_a_dense_teacher_distils_into_an_moe_student_that_reloads_and_samples(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student"
    assert _distill(world, out, *STUDENT) == 0
    # The run speaks as the command typed: it said `stack train: completed …`, a command never typed.
    assert "stack distill: completed at step 3" in capsys.readouterr().out
    steps = [line for line in _metrics(out) if line["type"] == "step"]
    assert len(steps) == 3 and all({"loss", "kl", "nll", "moe_load_balance"} <= set(line) for line in steps)
    assert [line for line in _metrics(out) if line["type"] == "eval"]  # the loop's held-out evaluation
    required = load_spec().required_gates("distill", read_evidence(out / "metadata.json").config)
    verdicts = _verdicts(out)
    assert set(required) <= verdicts.keys() and {verdicts[g] for g in required} <= {"PASS", "WARN"}
    assert {verdicts[g] for g in required if g.startswith("GATE-KD-")} == {"PASS"}
    ran = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-KD-002").measured
    assert isinstance(ran, dict) and ran["forwards"] >= 3  # a forward a step at least, all of them frozen
    assert ran["forwards_in_training"] == ran["forwards_tracking_weights"] == 0
    student = load_trained(out)
    assert student.model.config.moe_experts == 2
    assert student.tokenizer.sha256 == load_trained(world["teacher"]).tokenizer.sha256
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "gate"]) == 0


@pytest.fixture(scope="module")
def made(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distill run made today, its record untouched: each test tampers with a copy."""
    out = tmp_path_factory.mktemp("made") / "out"
    assert _distill(world, out, *STUDENT) == 0
    return out


@pytest.mark.holds("GATE-INTEG-001")
def test_a_distill_record_made_today_shows_every_check_its_kind_asks_for(
    world: dict[str, Path], made: Path
) -> None:
    assert findings(made, world["teacher"]) == []


@pytest.mark.gate("GATE-INTEG-001")
@each_required_check("distill")
def test_each_check_a_distill_record_must_show_taken_out_is_caught(
    made: Path, tmp_path: Path, gate_id: str, check: str
) -> None:
    """The values only that check holds taken out (GATE-KD-002's forward counts among them, whose
    absence re-judges PASS): a completed run may not show a check as never run."""
    assert_check_required(made, tmp_path / "out", "distill", gate_id, check)


@pytest.mark.holds("GATE-KD-001", "GATE-KD-002")
def test_a_resume_continues_bit_for_bit(world: dict[str, Path], tmp_path: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert _distill(world, straight, *STUDENT, "--steps", "4", "--save-every", "2") == 0
    assert _distill(world, halves, *STUDENT, "--steps", "2") == 0
    assert main(["distill", "--resume", str(halves), "--steps", "4"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-0000004" / name))
        b = load_file(str(halves / "checkpoints" / "step-0000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [json.loads((r / "checkpoints/step-0000004/state.json").read_text()) for r in (straight, halves)]
    assert states[0]["reader"] == states[1]["reader"]


def test_a_resume_keeps_the_teacher_and_the_loss_and_may_move_the_device(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _distill(world, out, *STUDENT, "--steps", "2") == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--set", "distill.temperature=2.0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "distill.temperature (4.0 -> 2.0)" in err
    assert main(["distill", "--resume", str(world["teacher"]), "--steps", "3"]) == 2  # not a distillation
    assert "not a distill run" in capsys.readouterr().err
    # Without --steps a resume keeps the run's own train.steps (the option's default, 50, took its
    # place); a finished run has no step left then: it is told so, and nothing is written.
    before = (out / "metadata.json").read_bytes()
    assert main(["distill", "--resume", str(out)]) == 0
    err = capsys.readouterr().err
    assert "is complete at step 2 (train.steps=2): nothing to resume" in err, err
    assert "(--steps N with N above 2)" in err and (out / "metadata.json").read_bytes() == before
    assert main(["distill", "--resume", str(out), "--steps", "3", "--device", "cpu"]) == 0
    resumed = read_evidence(out / "metadata.json").metrics["resumes"][-1]
    assert resumed["changed"] == ["train.device", "train.steps"]


def test_a_resume_whose_teacher_changed_is_refused_in_one_line(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, out = tmp_path / "teacher", tmp_path / "out"
    shutil.copytree(world["teacher"], teacher)
    argv = ["distill", str(teacher), "--data", str(world["data"]), "--out", str(out), *STUDENT]
    assert main([*argv, "--steps", "2", "--batch-size", "4"]) == 0
    state = json.loads((out / "checkpoints/step-0000002/state.json").read_text())
    recorded = state["objective"]["teacher_sha256"]
    assert recorded == frozen.weights_sha256(load_trained(teacher).model)
    # The teacher's run goes on training: its path now names other weights.
    more = ["train.steps=12", "eval.every=12", "ckpt.every=12", "monitor.sample_every=12"]
    assert main(["train", "--resume", str(teacher), *(a for key in more for a in ("--set", key))]) == 0
    capsys.readouterr()
    assert main(["distill", "--resume", str(out), "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "changed since the run began" in err and recorded[:12] in err
    assert not (out / "checkpoints/step-0000003").exists()


def test_a_distill_task_without_a_teacher_is_one_line_and_exit_2(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(world["data"]), "--out", str(tmp_path / "out"), "--preset", "smoke"]
    assert main([*argv, "--set", "train.task=distill"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "distill.teacher" in err
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line_and_exit_2(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ((), "--student RUN|CKPT or as --preset NAME"),
        (("--preset", "smoke", "--student", str(world["teacher"])), "one of the two"),
        (("--preset", "nope"), "unknown preset"),
        (("--preset", "smoke", "--seq-len", "999"), "longer than the student's context"),
        # a student of a longer context than the teacher's (32): its windows are the teacher's limit
        (("--preset", "smoke", "--set", "model.ctx=64"), "pass --seq-len 32 or less"),
        (
            ("--preset", "smoke", "--set", "model.ctx=64", "--seq-len", "48"),
            "longer than the teacher's context",
        ),
    ]
    for options, problem in cases:
        assert _distill(world, tmp_path / "out", *options) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and problem in err, err


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**16),
    temperature=st.floats(0.5, 8.0),
    alpha=st.floats(0.0, 1.0),
)
def test_alpha_zero_is_the_nll_and_self_kl_is_zero(seed: int, temperature: float, alpha: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 5, 11, generator=generator)
    targets = torch.randint(11, (2, 5), generator=generator)
    targets[0, 0] = -1
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
    assert torch.equal(distill.kd_terms(logits, logits, targets, temperature, 0.0).loss, nll)
    assert float(distill.kd_terms(logits, logits, targets, temperature, alpha).kl) == 0.0


# -- falsifiers --------------------------------------------------------------------------------


@pytest.mark.gate("GATE-KD-001")
def test_a_student_of_another_vocabulary_is_refused_unless_truncation_is_declared(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher_vocab = load_trained(world["teacher"]).model.config.vocab
    padded = tmp_path / "padded"
    save_run(padded, tiny_model(vocab=teacher_vocab + 7))
    out = tmp_path / "out"
    assert _distill(world, out, "--student", str(padded)) == 3
    assert "GATE-KD-001" in capsys.readouterr().err
    assert _verdicts(out)["GATE-KD-001"] == "FAIL"
    declared = tmp_path / "declared"
    assert _distill(world, declared, "--student", str(padded), "--truncate-vocab", str(teacher_vocab)) == 0
    assert read_evidence(declared / "metadata.json").config["distill"]["truncate_vocab"] == teacher_vocab


@pytest.mark.gate("GATE-KD-001")
def test_a_truncation_that_cuts_tokenizer_ids_or_another_tokenizer_fires() -> None:
    case = {
        "teacher_tokenizer_identity": "a" * 64,
        "student_tokenizer_identity": "a" * 64,
        "teacher_vocab": 152064,
        "student_vocab": 151936,
        "tokenizer_ids": 151646,
    }
    assert measure("GATE-KD-001", {**case, "truncate_to": 151936}).ok
    assert not measure("GATE-KD-001", {**case, "truncate_to": None}).ok
    assert not measure("GATE-KD-001", {**case, "truncate_to": 151645, "student_vocab": 151645}).ok
    assert not measure(
        "GATE-KD-001", {**case, "truncate_to": 151936, "student_tokenizer_identity": "b" * 64}
    ).ok


@pytest.mark.gate("GATE-KD-002")
def test_a_teacher_left_trainable_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(frozen, "freeze", frozen.weights_sha256)  # the planted bug: hashed, never frozen
    out = tmp_path / "out"
    assert _distill(world, out, *STUDENT) == 3
    assert "GATE-KD-002" in capsys.readouterr().err
    assert _verdicts(out)["GATE-KD-002"] == "FAIL"


@pytest.mark.gate("GATE-KD-002")
def test_a_teacher_that_scores_the_steps_in_train_mode_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The planted bug: the teacher scores each step in train mode and is back in eval mode when
    the run ends (as a teacher registered under the student is, after the last evaluation); its
    weights never move, so only the forwards it ran show it."""
    loss, finish = Distill.loss, Distill.finish

    def in_train_mode(self: Distill, *args: object) -> object:
        self.teacher.model.train()
        return loss(self, *args)  # type: ignore[arg-type]

    def back_in_eval_mode(self: Distill, model: torch.nn.Module) -> None:
        self.teacher.model.eval()
        finish(self, model)

    monkeypatch.setattr(Distill, "loss", in_train_mode)
    monkeypatch.setattr(Distill, "finish", back_in_eval_mode)
    out = tmp_path / "out"
    assert _distill(world, out, *STUDENT) == 3
    err = capsys.readouterr().err
    assert "GATE-KD-002" in err and "forward(s) ran with a module in train mode" in err
    assert _verdicts(out)["GATE-KD-002"] == "FAIL"


@pytest.mark.gate("GATE-KD-002")
def test_a_teacher_forward_with_autograd_over_its_weights_fires() -> None:
    """A forward run while a weight requires a gradient (turned on for it, off again after): no
    .grad is left and nothing moves, so only the watch over its forwards shows it."""
    teacher = tiny_model()
    sha = frozen.freeze(teacher)
    watch = frozen.ForwardWatch(teacher)
    tokens = torch.randint(257, (1, 9), generator=torch.Generator().manual_seed(0))
    teacher(tokens)
    frozen.check_teacher(teacher, sha, watch)  # a frozen forward: holds
    teacher.embed.weight.requires_grad_(True)
    teacher(tokens)
    teacher.embed.weight.requires_grad_(False)
    with pytest.raises(GateViolation, match="1 of the frozen model's 2 forward"):
        frozen.check_teacher(teacher, sha, watch)


@pytest.mark.gate("GATE-KD-002")
def test_a_teacher_whose_weights_moved_fires() -> None:
    teacher = tiny_model()
    sha = frozen.freeze(teacher)
    frozen.check_teacher(teacher, sha)  # untouched: holds
    with torch.no_grad():
        teacher.embed.weight[3, 0] += 1e-6
    with pytest.raises(GateViolation, match="GATE-KD-002"):
        frozen.check_teacher(teacher, sha)


def _probe(model: torch.nn.Module) -> dict[str, float]:
    tokens = torch.randint(257, (2, 17), generator=torch.Generator().manual_seed(0))
    logits, nll = model(tokens[:, :-1], tokens[:, 1:])
    return distill.identity_probe(logits, nll, tokens[:, 1:], 4.0)


@pytest.mark.gate("GATE-KD-003")
def test_a_loss_that_tempers_one_side_only_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    distill.check_identities(_probe(model))  # the stack's loss: holds
    monkeypatch.setattr(distill, "kd_terms", _tempered_student_only)
    with pytest.raises(GateViolation, match="GATE-KD-003"):
        distill.check_identities(_probe(model))


@pytest.mark.gate("GATE-KD-003")
def test_identities_just_beyond_the_tolerance_fire_and_just_inside_hold() -> None:
    """The loss at α = 0 within loss_rtol of the forward's own NLL, relative to it; the self-KL
    within self_kl_atol."""
    spec = load_spec()
    self_kl = spec.threshold("GATE-KD-003", "self_kl_atol")
    nll, allowed = 5.5, 5.5 * spec.threshold("GATE-KD-003", "loss_rtol")

    def identities(diff: float, kl: float = 0.0) -> bool:
        return measure("GATE-KD-003", {"alpha0_abs_diff": diff, "model_nll": nll, "self_kl": kl}).ok

    assert identities(0.9 * allowed) and not identities(1.1 * allowed)
    assert identities(0.0, 0.9 * self_kl) and not identities(0.0, 1.1 * self_kl)


def test_a_compiled_distillation_holds_the_identities_to_its_own_forward(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A compiled student computes its cross-entropy in Inductor's kernel, a rounding away from the
    loss's torch one: the first batch's identities hold it to that within loss_rtol, and the run
    trains (held bit for bit, a compiled distillation would halt there), compiling its forward once."""
    out = tmp_path / "out"
    with compiled_once():
        assert _distill(world, out, "--preset", "smoke", "--set", "train.compile=true") == 0
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-KD-003")
    assert result.verdict.value == "PASS"


@pytest.mark.gate("GATE-KD-003")
@pytest.mark.parametrize(
    "mutant", [_nll_weighted_one, _nll_of_the_teacher], ids=["nll-weighted-one", "nll-of-the-teacher"]
)
def test_a_loss_that_mixes_other_terms_stops_at_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mutant: object,
) -> None:
    """The KL is the teacher's and the first batch's identities hold; the loss the first step's probe
    reads is not α·T²·KL + (1 − α)·NLL of the recomputed terms."""
    monkeypatch.setattr(distill, "kd_terms", mutant)
    out = tmp_path / "out"
    assert _distill(world, out, *STUDENT) == 3
    assert "GATE-KD-003" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-KD-003")
    measured = result.measured
    assert isinstance(measured, dict) and result.verdict.value == "FAIL" and result.step == 1
    assert measured["alpha0_abs_diff"] == 0.0 and measured["self_kl"] == 0.0
    assert measured["kl_minimised"] == pytest.approx(measured["kl_recomputed"], rel=1e-4)
    assert "mixed with other weights" in str(result.message)


def _kd_case(delta_loss: float = 0.0, delta_nll: float = 0.0) -> dict[str, float]:
    """GATE-KD-003's loss values for logits whose loss, KL and NLL the stack's kd_terms computes in
    float64, the loss and the NLL minimised then moved by the given amounts."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 6, 11, generator=generator, dtype=torch.float64)
    teacher = torch.randn(2, 6, 11, generator=generator, dtype=torch.float64)
    targets = torch.randint(11, (2, 6), generator=generator)
    terms = _kd_terms(student, teacher, targets, 4.0, 0.7)
    return {
        "alpha": 0.7,
        "temperature": 4.0,
        "loss_minimised": float(terms.loss) + delta_loss,
        "kl_recomputed": float(terms.kl),
        "nll_minimised": float(terms.nll) + delta_nll,
        "nll_recomputed": float(terms.nll),
    }


@pytest.mark.gate("GATE-KD-003")
def test_a_loss_or_nll_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    """The loss may move by α·T²·(kl_atol + kl_rtol·KL) + loss_rtol × itself, the NLL by loss_rtol ×
    itself: 0.9 and 1.1 times that."""
    thresholds = load_spec().gate("GATE-KD-003").threshold_values
    case = _kd_case()
    kl, nll, loss = case["kl_recomputed"], case["nll_recomputed"], case["loss_minimised"]
    loss_allowed = (
        0.7 * 16 * (thresholds["kl_atol"] + thresholds["kl_rtol"] * kl) + thresholds["loss_rtol"] * loss
    )
    nll_allowed = thresholds["loss_rtol"] * nll
    assert measure("GATE-KD-003", case).ok
    assert measure("GATE-KD-003", _kd_case(delta_loss=0.9 * loss_allowed)).ok
    assert not measure("GATE-KD-003", _kd_case(delta_loss=1.1 * loss_allowed)).ok
    assert measure("GATE-KD-003", _kd_case(delta_nll=-0.9 * nll_allowed)).ok
    assert not measure("GATE-KD-003", _kd_case(delta_nll=-1.1 * nll_allowed)).ok


@pytest.mark.gate("GATE-KD-004")
def test_a_soft_term_without_t_squared_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(distill, "kd_terms", _without_t_squared)
    out = tmp_path / "out"
    assert _distill(world, out, *STUDENT) == 3
    assert "GATE-KD-004" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-KD-004")
    assert result.verdict.value == "FAIL" and result.measured["grad_ratio"] < 0.1  # type: ignore[index]


@pytest.mark.gate("GATE-KD-004")
def test_a_gradient_ratio_just_outside_the_band_fires_and_just_inside_holds() -> None:
    spec = load_spec()
    low, high = (
        spec.threshold("GATE-KD-004", "min_grad_ratio"),
        spec.threshold("GATE-KD-004", "max_grad_ratio"),
    )
    case = {
        "temperature": spec.threshold("GATE-KD-004", "probe_temperature"),
        "logit_scale": spec.threshold("GATE-KD-004", "probe_logit_scale"),
    }
    assert not measure("GATE-KD-004", {**case, "grad_ratio": 0.99 * low}).ok
    assert measure("GATE-KD-004", {**case, "grad_ratio": 1.01 * low}).ok
    assert measure("GATE-KD-004", {**case, "grad_ratio": 0.99 * high}).ok
    assert not measure("GATE-KD-004", {**case, "grad_ratio": 1.01 * high}).ok
    assert not measure("GATE-KD-004", {**case, "temperature": 1.0, "grad_ratio": 1.0}).ok  # a trivial probe
