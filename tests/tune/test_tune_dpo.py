"""`stack dpo`: preference tuning by the training loop against a frozen reference, under GATE-DPO-001..005.

Falsifiers plant each bug in the stack's own code path: a reference kept in bfloat16, a reference
left trainable, a mask that scores padding or the prompt, a loss whose β never reaches it, a loss
with policy and reference swapped, β left out of h, the label noise on the other side, rewards
logged without β. Each threshold is also probed just beyond and just inside its value through the
gate's judge.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.data.prefs_rows import pair_ids, parse_pair, render_pair
from stack.data.sft_reader import SftBatch
from stack.data.sft_template import load_template
from stack.data.tokenizer import ByteTokenizer
from stack.train import dpo_objective
from stack.train.trained import Trained, load_trained
from stack.tune import dpo, frozen, pairs
from stack.tune.dpo import DpoTerms
from tests.support.ledger_support import assert_check_required, each_required_check, findings
from tests.support.paths import DATA
from tests.support.prefs_support import prepared_pairs
from tests.support.trace_support import save_run, tiny_model

PREFS = DATA / "prefs_small.jsonl"
CTX = 64
ROW = 32  # --pack-len of the prepared pairs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model of context 64 saved as a run, and a DATA_DIR of pairs."""
    root = tmp_path_factory.mktemp("dpo")
    save_run(root / "source", tiny_model(ctx=CTX))
    return {"source": root / "source", "data": prepared_pairs(root)}


def _dpo(world: dict[str, Path], out: Path, *options: str) -> int:
    argv = ["dpo", str(world["source"]), "--data", str(world["data"]), "--out", str(out), "--lr", "1e-3"]
    return main([*argv, "--steps", "3", "--batch-size", "1", "--device", "cpu", *options])


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


def _steps(out: Path) -> list[dict[str, float]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == "step"]


def _window(text: dict[str, str], width: int = ROW) -> SftBatch:
    """One pair's window as the reader serves it (2·width tokens and one read past), by prepare's code."""
    tokenizer = ByteTokenizer()
    pair = pair_ids(tokenizer, parse_pair(text, "test", load_template(None)).turns)
    rendered = render_pair(pair, width, tokenizer.eot_id)
    labels = np.where(rendered.padding, 0, 2 + rendered.mask.astype(np.int64))
    tokens = np.append(rendered.ids, tokenizer.eot_id)
    return SftBatch(torch.from_numpy(tokens)[None], torch.from_numpy(np.append(labels, 0))[None])


def _batch(size: int = 4, width: int = 48) -> pairs.PairBatch:
    """The first `size` pairs of prefs_small.jsonl as the objective scores them."""
    records = [json.loads(line) for line in PREFS.read_text().splitlines()][:size]
    windows = [_window(record, width) for record in records]
    batch = SftBatch(torch.cat([w.tokens for w in windows]), torch.cat([w.labels for w in windows]))
    return dpo_objective.pair_rows(batch)


def _scores_to_the_end(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """The planted bug: every position after the prompt is scored, padding included."""
    return torch.arange(width) >= prompt_len


def _scores_the_prompt(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """The planted bug: the whole sequence is scored, prompt included."""
    return torch.arange(width) < length


# -- the clean path, through the real CLI ------------------------------------------------------


@pytest.mark.holds("GATE-DPO-001", "GATE-DPO-002", "GATE-DPO-003", "GATE-DPO-004", "GATE-DPO-005")
def test_dpo_writes_a_run_every_reader_takes(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _dpo(world, out) == 0
    assert "completed at step 3" in capsys.readouterr().out
    record = read_evidence(out / "metadata.json")
    required = load_spec().required_gates("dpo", record.config)
    verdicts = _verdicts(out)
    assert set(required) <= verdicts.keys() and {verdicts[g] for g in required} <= {"PASS", "WARN"}
    assert {verdicts[g] for g in required if g.startswith("GATE-DPO-")} == {"PASS"}
    ran = next(g for g in record.gates if g.id == "GATE-DPO-002").measured
    assert isinstance(ran, dict) and ran["forwards"] >= 3  # a forward a step at least, all of them frozen
    assert ran["forwards_in_training"] == ran["forwards_tracking_weights"] == 0
    steps = _steps(out)
    assert all({"loss", "chosen_reward", "rejected_reward", "margin", "accuracy"} <= set(s) for s in steps)
    assert abs(steps[0]["loss"] - math.log(2)) < 1e-6 and steps[0]["margin"] == 0.0
    assert steps[-1]["margin"] > 0 and steps[-1]["loss"] < math.log(2)
    before, after = load_trained(world["source"]).model, load_trained(out).model
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "Q:"]) == 0


@pytest.fixture(scope="module")
def made(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dpo run made today, its record untouched: each test tampers with a copy."""
    out = tmp_path_factory.mktemp("made") / "out"
    assert _dpo(world, out) == 0
    return out


@pytest.mark.holds("GATE-INTEG-001")
def test_a_dpo_record_made_today_shows_every_check_its_kind_asks_for(made: Path) -> None:
    assert findings(made) == []


@pytest.mark.gate("GATE-INTEG-001")
@each_required_check("dpo")
def test_each_check_a_dpo_record_must_show_taken_out_is_caught(
    made: Path, tmp_path: Path, gate_id: str, check: str
) -> None:
    """The values only that check holds taken out (GATE-DPO-002's forward counts among them, whose
    absence re-judges PASS): a completed run may not show a check as never run."""
    assert_check_required(made, tmp_path / "out", "dpo", gate_id, check)


@pytest.mark.holds("GATE-DPO-001", "GATE-DPO-002", "GATE-DPO-005")
def test_a_resume_continues_bit_for_bit(world: dict[str, Path], tmp_path: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert _dpo(world, straight, "--steps", "4", "--save-every", "2") == 0
    assert _dpo(world, halves, "--steps", "2") == 0
    assert main(["dpo", "--resume", str(halves), "--steps", "4"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-0000004" / name))
        b = load_file(str(halves / "checkpoints" / "step-0000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [json.loads((r / "checkpoints/step-0000004/state.json").read_text()) for r in (straight, halves)]
    assert states[0]["objective"] == states[1]["objective"] and len(states[0]["objective"]["margins"]) == 4
    assert read_evidence(halves / "metadata.json").metrics["resumes"][-1]["from_step"] == 2


def test_a_resume_whose_reference_changed_is_refused_in_one_line(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    save_run(reference, tiny_model(ctx=CTX))
    assert _dpo(world, out, "--steps", "2", "--reference", str(reference)) == 0
    save_run(reference, tiny_model(seed=1, ctx=CTX), step=2)  # the reference's run goes on: other weights
    capsys.readouterr()
    assert main(["dpo", "--resume", str(out), "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "changed since the run began" in err


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "Q", "chosen": "a"}', "needs 'chosen' and 'rejected' (and 'prompt'"),
        ('{"prompt": "Q", "chosen": "a", "rejected": "a"}', "nothing to prefer"),
        ('{"prompt": "' + "x" * 80 + '", "chosen": "a", "rejected": "b"}', "1 longer than --pack-len 64"),
        ("not json", "not JSON"),
        ('{"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}', "role"),
    ],
)
def test_bad_pairs_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, problem: str
) -> None:
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(line + "\n")
    argv = ["prepare", str(prefs), "--format", "prefs", "--pack-len", "64", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and problem in err


def test_data_that_is_not_pairs_is_refused_in_one_line(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"prompt": "Q: 1+1? A:", "completion": " 2."}) + "\n")
    data = tmp_path / "sft-data"
    assert main(["prepare", str(chats), "--format", "prompt-completion", "--out", str(data)]) == 0
    capsys.readouterr()
    argv = ["dpo", str(world["source"]), "--data", str(data), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--format prefs" in err


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=50)
@given(
    logps=st.lists(st.floats(-200, 0, width=32), min_size=2, max_size=8).filter(lambda v: len(v) % 2 == 0),
    beta=st.floats(1e-3, 10),
    smoothing=st.floats(0, 0.49),
)
def test_a_policy_equal_to_its_reference_has_loss_ln2_and_no_reward(
    logps: list[float], beta: float, smoothing: float
) -> None:
    values = torch.tensor(logps)
    terms = dpo.dpo_terms(values, values.clone(), beta, smoothing)
    assert abs(float(terms.loss) - math.log(2)) < 1e-6
    assert not terms.chosen_rewards.any() and not terms.rejected_rewards.any()


@settings(max_examples=50)
@given(
    logps=st.lists(st.floats(-50, 0, width=32), min_size=4, max_size=8).filter(lambda v: len(v) % 2 == 0),
    noise=st.floats(0, 0.49),
)
def test_label_noise_is_the_expected_loss_when_each_preference_flips_with_that_probability(
    logps: list[float], noise: float
) -> None:
    """Conservative DPO, named for what it computes: (1 − ε)·L(pairs) + ε·L(pairs with chosen and
    rejected swapped), each the plain DPO loss."""
    policy, reference = torch.tensor(logps), torch.tensor(logps).flip(0)
    half = len(logps) // 2
    swap = lambda t: torch.cat([t[half:], t[:half]])  # noqa: E731
    plain = dpo.dpo_terms(policy, reference, 0.5).loss
    flipped = dpo.dpo_terms(swap(policy), swap(reference), 0.5).loss
    noisy = dpo.dpo_terms(policy, reference, 0.5, label_noise=noise).loss
    assert float(noisy) == pytest.approx(float((1 - noise) * plain + noise * flipped), rel=1e-5, abs=1e-6)


def test_the_old_name_label_smoothing_is_refused_naming_label_noise() -> None:
    from contracts.errors import BadInput
    from stack.train.config import resolve

    sets = ["train.steps=1", "train.task='dpo'", "dpo.reference='RUN'", "dpo.label_smoothing=0.1"]
    with pytest.raises(BadInput, match=r"dpo\.label_noise") as refused:
        resolve("smoke", None, sets, vocab=257)
    assert "TRL" in str(refused.value) and "\n" not in str(refused.value)


@settings(max_examples=30)
@given(size=st.integers(1, 12), width=st.integers(48, 64), pad=st.integers(0, 5))
def test_the_mask_covers_exactly_the_completions(size: int, width: int, pad: int) -> None:
    records = [json.loads(line) for line in PREFS.read_text().splitlines()][:size]
    batch = _batch(size, width)
    wide = pairs.collate_width(batch, ByteTokenizer().eot_id, batch.tokens.shape[1] + pad)
    parsed = [parse_pair(record, "test", load_template(None)) for record in records]
    completions = sum(len(f"{p.chosen}{p.rejected}".encode()) + 2 for p in parsed)  # bytes, two EOS
    assert int(batch.mask.sum()) == int(wide.mask.sum()) == completions
    assert dpo.scored_counts(wide)["completion_tokens"] == completions
    assert (
        dpo.scored_counts(batch)["scored_prompt_tokens"]
        == dpo.scored_counts(batch)["scored_padding_tokens"]
        == 0
    )


_CHARACTERS = 12  # at most, in each of a drawn pair's three texts
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=_CHARACTERS)
# A row that holds any drawn pair: the prompt and the longer completion at four bytes a character
# (UTF-8's most, one byte token each), and the end-of-text token.
_PAIR_WIDTH = 2 * 4 * _CHARACTERS + 1


@settings(max_examples=50)
@given(prompt=_TEXT, chosen=_TEXT, rejected=_TEXT)
@example(prompt="\U00010000" * _CHARACTERS, chosen="0", rejected="\U00010000" * _CHARACTERS)  # the widest
def test_a_prepared_pair_reads_back_as_its_two_sequences(prompt: str, chosen: str, rejected: str) -> None:
    tokenizer = ByteTokenizer()
    assume(chosen != rejected)  # refused at prepare: nothing to prefer
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    rows = dpo_objective.pair_rows(_window(record, width=_PAIR_WIDTH))
    prompt_ids = tokenizer.encode(prompt)
    for row, completion in enumerate((chosen, rejected)):
        sequence = [*prompt_ids, *tokenizer.encode(completion), tokenizer.eot_id]
        assert (rows.prompt_lens[row], rows.lengths[row]) == (len(prompt_ids), len(sequence))
        assert rows.tokens[row, : len(sequence)].tolist() == sequence


# -- falsifiers --------------------------------------------------------------------------------


@pytest.mark.gate("GATE-DPO-001")
def test_a_reference_kept_in_another_dtype_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = dpo_objective.reference_model

    def rounded(
        path: Path, device: torch.device
    ) -> Trained:  # the planted bug: the reference went through bf16
        reference = loaded(path, device)
        reference.model.to(torch.bfloat16).to(torch.float32)
        return reference

    monkeypatch.setattr(dpo_objective, "reference_model", rounded)
    out = tmp_path / "out"
    assert _dpo(world, out) == 3
    assert "GATE-DPO-001" in capsys.readouterr().err
    assert _verdicts(out)["GATE-DPO-001"] == "FAIL"
    assert not (out / "checkpoints").exists()


@pytest.mark.gate("GATE-DPO-001")
def test_a_start_loss_just_beyond_ln2_fires_and_just_inside_holds() -> None:
    spec = load_spec()
    atol, rtol = spec.threshold("GATE-DPO-001", "loss_atol"), spec.threshold("GATE-DPO-001", "reward_atol")
    ln2 = math.log(2)
    assert not measure("GATE-DPO-001", {"loss": ln2 + 1.1 * atol, "ln2": ln2, "max_abs_reward": 0.0}).ok
    assert measure("GATE-DPO-001", {"loss": ln2 - 0.9 * atol, "ln2": ln2, "max_abs_reward": 0.0}).ok
    assert not measure("GATE-DPO-001", {"loss": ln2, "ln2": ln2, "max_abs_reward": 1.1 * rtol}).ok
    assert measure("GATE-DPO-001", {"loss": ln2, "ln2": ln2, "max_abs_reward": 0.9 * rtol}).ok


@pytest.mark.gate("GATE-DPO-002")
def test_a_reference_left_trainable_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(frozen, "freeze", frozen.weights_sha256)  # the planted bug: hashed, never frozen
    out = tmp_path / "out"
    assert _dpo(world, out) == 3
    assert "GATE-DPO-002" in capsys.readouterr().err
    assert _verdicts(out)["GATE-DPO-002"] == "FAIL"


@pytest.mark.gate("GATE-DPO-002")
def test_a_reference_that_scores_the_steps_in_train_mode_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The planted bug: the reference scores the probes in train mode and is back in eval mode when
    the run ends; its weights never move, so only the forwards it ran show it. (Its scorings of
    the steps and the evaluations state their mode on the tape, where GATE-TRAIN-007 and
    GATE-EVAL-001 hold them to eval mode and stop the first step:
    test_loss_consumed.test_a_dpo_reference_scored_in_training_mode_stops_the_first_step.)"""
    probe, finish = dpo_objective.Dpo.probe, dpo_objective.Dpo.finish

    def in_train_mode(self: dpo_objective.Dpo, *args: object) -> object:
        self.reference.train()
        try:
            return probe(self, *args)  # type: ignore[arg-type]
        finally:
            self.reference.eval()

    def back_in_eval_mode(self: dpo_objective.Dpo, model: torch.nn.Module) -> None:
        self.reference.eval()
        finish(self, model)

    monkeypatch.setattr(dpo_objective.Dpo, "probe", in_train_mode)
    monkeypatch.setattr(dpo_objective.Dpo, "finish", back_in_eval_mode)
    out = tmp_path / "out"
    assert _dpo(world, out) == 3
    err = capsys.readouterr().err
    assert "GATE-DPO-002" in err and "forward(s) ran with a module in train mode" in err
    assert _verdicts(out)["GATE-DPO-002"] == "FAIL"


@pytest.mark.gate("GATE-DPO-002")
def test_a_reference_whose_weights_moved_fires() -> None:
    reference = tiny_model(ctx=CTX)
    sha = frozen.freeze(reference)
    frozen.check_reference(reference, sha)  # untouched: holds
    with torch.no_grad():
        reference.final_norm.weight[0] += 1e-6
    with pytest.raises(GateViolation, match="GATE-DPO-002"):
        frozen.check_reference(reference, sha)


@pytest.mark.gate("GATE-DPO-003")
def test_a_mask_that_scores_padding_moves_the_logprobs(monkeypatch: pytest.MonkeyPatch) -> None:
    model, pad = tiny_model(ctx=CTX), ByteTokenizer().eot_id
    dpo.check_padding(model, _batch(), pad)  # the stack's mask: holds
    monkeypatch.setattr(pairs, "completion_mask", _scores_to_the_end)
    with pytest.raises(GateViolation, match="GATE-DPO-003"):
        dpo.check_padding(model, _batch(), pad)


@pytest.mark.gate("GATE-DPO-003")
def test_a_padding_change_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    spec = load_spec()
    limit, probe = (
        spec.threshold("GATE-DPO-003", "max_abs_diff"),
        spec.threshold("GATE-DPO-003", "probe_pad_tokens"),
    )
    case = {"appended": int(probe), "room": 40}
    assert not measure("GATE-DPO-003", {**case, "max_abs_diff": 1.1 * limit}).ok
    assert measure("GATE-DPO-003", {**case, "max_abs_diff": 0.9 * limit}).ok
    assert not measure("GATE-DPO-003", {**case, "appended": 0, "max_abs_diff": 0.0}).ok  # nothing probed
    assert measure("GATE-DPO-003", {"appended": 0, "room": 0, "max_abs_diff": 0.0}).ok  # a full context


@pytest.mark.gate("GATE-DPO-004")
def test_a_loss_stuck_at_ln2_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The planted bug: the loss is built with β = 0, whatever the settings say.
    monkeypatch.setattr(dpo_objective.Dpo, "_loss_args", lambda self: {"beta": 0.0, "label_noise": 0.0})
    out = tmp_path / "out"
    # Every held-out loss is then ln 2 as well, which GATE-EVAL-002 refuses first, and the loss is
    # not the configured β's, which GATE-DPO-005 refuses at step 1: both waived here.
    waivers = (
        *("--waive", "GATE-EVAL-002", "--reason", "the planted beta = 0 gives a constant held-out loss"),
        *("--waive", "GATE-DPO-005", "--reason", "the planted beta = 0 is not the configured beta"),
    )
    assert _dpo(world, out, *waivers) == 3
    assert "GATE-DPO-004" in capsys.readouterr().err
    assert {round(line["loss"], 4) for line in _steps(out)} == {0.6931}
    assert _verdicts(out)["GATE-DPO-004"] == "FAIL"


@pytest.mark.gate("GATE-DPO-004")
def test_a_margin_span_just_below_the_limit_fires_and_just_above_holds() -> None:
    limit = load_spec().threshold("GATE-DPO-004", "min_margin_span")
    case = {"beta": 0.1, "trainable_parameters": 10, "accuracies": [0.0, 0.5]}
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 0.9 * limit]}).ok
    assert measure("GATE-DPO-004", {**case, "margins": [0.0, 1.1 * limit]}).ok
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 1.0], "beta": 0.0}).ok
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 1.0], "accuracies": [0.5, 0.5]}).ok


@pytest.mark.gate("GATE-DPO-004")
@pytest.mark.parametrize(
    ("accuracies", "holds"), [([1.0, 1.0], True), ([0.0, 0.0], False), ([0.5, 0.5], False)]
)
def test_an_accuracy_that_never_moves_fires_unless_every_pair_is_preferred_throughout(
    accuracies: list[float], holds: bool
) -> None:
    """A reference weaker than the starting policy (`--reference`) can leave every pair preferred
    from the first step: an accuracy of 1 throughout cannot move, and the margins still must."""
    case = {"beta": 0.1, "trainable_parameters": 10, "margins": [0.04, 0.31], "accuracies": accuracies}
    assert measure("GATE-DPO-004", case).ok is holds
    assert not measure("GATE-DPO-004", {**case, "margins": [0.04, 0.04]}).ok


_real_dpo_terms = dpo.dpo_terms


def _policy_and_reference_swapped(
    policy: torch.Tensor, reference: torch.Tensor, beta: float, label_noise: float = 0.0
) -> DpoTerms:
    """The planted bug: each log-ratio taken as reference − policy."""
    return _real_dpo_terms(reference, policy, beta, label_noise)


def _beta_left_out_of_h(
    policy: torch.Tensor, reference: torch.Tensor, beta: float, label_noise: float = 0.0
) -> DpoTerms:
    """The planted bug: h = chosen − rejected without β; the rewards keep their β."""
    plain = _real_dpo_terms(policy, reference, 1.0, label_noise)
    return DpoTerms(plain.loss, beta * plain.chosen_rewards, beta * plain.rejected_rewards)


def _label_noise_on_the_other_side(
    policy: torch.Tensor, reference: torch.Tensor, beta: float, label_noise: float = 0.0
) -> DpoTerms:
    """The planted bug: ε weights −log σ(h) and 1 − ε weights −log σ(−h)."""
    return _real_dpo_terms(policy, reference, beta, 1.0 - label_noise)


def _rewards_without_beta(
    policy: torch.Tensor, reference: torch.Tensor, beta: float, label_noise: float = 0.0
) -> DpoTerms:
    """The planted bug: the loss is DPO's, the logged rewards (so margin and accuracy) leave β out."""
    terms = _real_dpo_terms(policy, reference, beta, label_noise)
    return DpoTerms(terms.loss, terms.chosen_rewards / beta, terms.rejected_rewards / beta)


def _dpo_005(out: Path) -> tuple[dict[str, object], int | None]:
    """GATE-DPO-005's measured values in a run's record, and the step they were judged at."""
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-DPO-005")
    assert isinstance(result.measured, dict)
    return result.measured, result.step


@pytest.mark.gate("GATE-DPO-005")
@pytest.mark.parametrize(
    ("mutant", "options", "gradient"),
    [
        (_policy_and_reference_swapped, (), 0.05),
        (_beta_left_out_of_h, (), -0.5),
        (_label_noise_on_the_other_side, ("--label-noise", "0.2"), 0.03),
        (_rewards_without_beta, (), -0.05),
    ],
    ids=["policy-reference-swapped", "beta-left-out-of-h", "label-noise-other-side", "rewards-without-beta"],
)
def test_a_loss_other_than_dpos_stops_at_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mutant: Callable[..., DpoTerms],
    options: tuple[str, ...],
    gradient: float,
) -> None:
    """At the start policy and reference are one model, so h = 0, the loss is ln 2 and every reward 0
    whatever the bug (GATE-DPO-001 holds); the first step's probe reads ∂L/∂log π(y_c) per pair
    (−β(1 − 2ε)/2 = −0.05 with β 0.1) and holds the loss and rewards to the formula."""
    monkeypatch.setattr(dpo, "dpo_terms", mutant)
    out = tmp_path / "out"
    assert _dpo(world, out, *options) == 3
    assert "GATE-DPO-005" in capsys.readouterr().err
    verdicts = _verdicts(out)
    assert verdicts["GATE-DPO-005"] == "FAIL" and verdicts["GATE-DPO-001"] == "PASS"
    measured, step = _dpo_005(out)
    assert step == 1 and measured["chosen_gradient"] == pytest.approx([gradient, gradient], rel=1e-5)
    assert measured["rejected_gradient"] == pytest.approx([-gradient, -gradient], rel=1e-5)


def _heldout_swapped(self: dpo_objective.Dpo, model: torch.nn.Module, batch: SftBatch) -> torch.Tensor:
    """The planted bug: the held-out loss with policy and reference swapped; training's is DPO's."""
    policy, reference = self._logprobs(model, dpo_objective.pair_rows(batch))
    return _real_dpo_terms(reference, policy, self.settings.beta, self.settings.label_noise).loss


@pytest.mark.gate("GATE-DPO-005")
def test_a_heldout_loss_other_than_dpos_stops_at_the_evaluation(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every training step's loss is DPO's, so the probes hold; the evaluation's loss of the same
    pairs is not, which the first held-out batch held to the formula shows once the policy has
    moved from the reference (at the start the two agree whatever the order)."""
    monkeypatch.setattr(dpo_objective.Dpo, "heldout_loss", _heldout_swapped)
    out = tmp_path / "out"
    assert _dpo(world, out, "--set", "eval.every=3") == 3
    assert "GATE-DPO-005" in capsys.readouterr().err
    measured, step = _dpo_005(out)
    assert step == 3 and "loss" in measured
    assert len(_steps(out)) == 3  # every training step passed; the evaluation after them fired


@pytest.mark.holds("GATE-DPO-005")
def test_label_noise_with_lora_holds_the_loss_and_its_gradient(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A benign configuration far from the defaults: β 0.5, ε 0.2, adapters on a frozen base."""
    out = tmp_path / "out"
    options = ("--beta", "0.5", "--label-noise", "0.2", "--set", "lora.r=4", "--lr", "1e-2")
    assert _dpo(world, out, *options) == 0
    assert _verdicts(out)["GATE-DPO-005"] == "PASS"
    measured, _ = _dpo_005(out)
    assert measured["chosen_gradient"] == pytest.approx([-0.15, -0.15], rel=1e-6)  # −β(1 − 2ε)/2


def _written_case(delta_loss: float = 0.0, delta_reward: float = 0.0) -> dict[str, object]:
    """GATE-DPO-005's loss values for two pairs whose loss and rewards the stack's dpo_terms computes
    in float64 (so exactly), the loss and the first reward then moved by the given amounts."""
    policy = torch.tensor([-10.0, -22.0, -31.0, -18.0], dtype=torch.float64)
    reference = torch.tensor([-10.5, -21.0, -30.0, -18.25], dtype=torch.float64)
    terms = _real_dpo_terms(policy, reference, 0.1, 0.2)
    chosen = terms.chosen_rewards.tolist()
    return {
        "beta": 0.1,
        "label_noise": 0.2,
        "max_abs_logprob_diff": 1e-5,
        "loss": float(terms.loss) + delta_loss,
        "chosen_rewards": [chosen[0] + delta_reward, *chosen[1:]],
        "rejected_rewards": terms.rejected_rewards.tolist(),
        "policy_logps": policy.tolist(),
        "reference_logps": reference.tolist(),
    }


@pytest.mark.gate("GATE-DPO-005")
def test_a_loss_or_reward_just_beyond_the_formula_fires_and_just_inside_holds() -> None:
    """The loss may move by 4βd and a reward by 2βd (d the measured sum difference) plus
    identity_tol × (1 + |value|): 0.9 and 1.1 times that."""
    tol = load_spec().threshold("GATE-DPO-005", "identity_tol")
    case = _written_case()
    loss, reward = float(case["loss"]), case["chosen_rewards"][0]  # type: ignore[arg-type,index]
    loss_allowed = 4 * 0.1 * 1e-5 + tol * (1 + abs(loss))
    reward_allowed = 2 * 0.1 * 1e-5 + tol * (1 + abs(reward))
    assert measure("GATE-DPO-005", case).ok
    assert measure("GATE-DPO-005", _written_case(delta_loss=0.9 * loss_allowed)).ok
    assert not measure("GATE-DPO-005", _written_case(delta_loss=1.1 * loss_allowed)).ok
    assert measure("GATE-DPO-005", _written_case(delta_reward=-0.9 * reward_allowed)).ok
    assert not measure("GATE-DPO-005", _written_case(delta_reward=-1.1 * reward_allowed)).ok


@pytest.mark.gate("GATE-DPO-005")
def test_a_gradient_just_beyond_its_tolerance_fires_and_just_inside_holds() -> None:
    """∓β(1 − 2ε)/2 = ∓0.03 per pair at β 0.1, ε 0.2, read 0.9 and 1.1 times gradient_rtol off."""
    rtol = load_spec().threshold("GATE-DPO-005", "gradient_rtol")
    size = 0.1 * (1 - 2 * 0.2) / 2
    off = rtol * size

    def case(chosen: float = -size, rejected: float = size, residual: float = 0.0) -> dict[str, object]:
        return {
            "beta": 0.1,
            "label_noise": 0.2,
            "chosen_gradient": [-size, chosen],
            "rejected_gradient": [rejected, size],
            "gradient_residual": residual,
        }

    assert measure("GATE-DPO-005", case()).ok
    for moved in ({"chosen": -size + 0.9 * off}, {"rejected": size - 0.9 * off}, {"residual": 0.9 * off}):
        assert measure("GATE-DPO-005", case(**moved)).ok, moved
    for moved in ({"chosen": -size + 1.1 * off}, {"rejected": size - 1.1 * off}, {"residual": 1.1 * off}):
        assert not measure("GATE-DPO-005", case(**moved)).ok, moved
    assert not measure("GATE-DPO-005", case(chosen=size, rejected=-size)).ok  # policy and reference swapped


@pytest.mark.gate("GATE-DPO-005")
def test_scoring_the_prompt_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(pairs, "completion_mask", _scores_the_prompt)
    out = tmp_path / "out"
    assert _dpo(world, out) == 3
    assert "GATE-DPO-005" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-DPO-005")
    assert result.verdict.value == "FAIL" and result.measured["scored_prompt_tokens"] > 0  # type: ignore[index]


def test_pairs_are_refused_as_sft_data_in_one_line(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sft", "--init-from", str(world["source"]), "--data", str(world["data"])]
    assert main([*argv, "--out", str(tmp_path / "out"), "--set", "train.steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "`stack dpo RUN_DIR --data" in err


def test_a_resume_or_an_out_of_a_run_of_another_kind_names_the_command_that_takes_it(
    made: Path, world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack sft --resume` of a run of another task must not blame settings the user never gave,
    or the data; it is refused as dpo and distill refuse it, naming the command that resumes it.
    `--out` of a run of another kind must not offer `--resume`, which that command would refuse; it is
    told to choose another --out, and --resume is offered only for a run of the command's own kind."""
    run = Path(shutil.copytree(made, tmp_path / "run"))
    for command, steps in (("sft", ["--set", "train.steps=4"]), ("distill", ["--steps", "4"])):
        assert main([command, "--resume", str(run), *steps]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"is not a {command} run" in err and f"`stack dpo --resume {run}`" in err, err
    chat = tmp_path / "chat"
    prepare = ["prepare", str(PREFS.parent / "chat_small.jsonl"), "--format", "chat", "--out", str(chat)]
    assert main([*prepare, "--pack-len", str(CTX), "--val-fraction", "0.25"]) == 0
    capsys.readouterr()
    argv = ["--init-from", str(world["source"]), "--data", str(chat), "--out", str(run)]
    assert main(["sft", *argv, "--set", "train.steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("choose another --out") and "--resume" not in err, err
    assert _dpo(world, run) == 2
    assert f"continue it with --resume {run}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "pair"),
    [
        ("dpo", ["--steps", "2", "--set", "train.steps=3"]),
        ("dpo", ["--beta", "0.2", "--set", "dpo.beta=0.3"]),
        ("dpo", ["--lr", "1e-3", "--set", "train.min_lr=1e-4"]),
        ("distill", ["--steps", "2", "--set", "train.steps=3"]),
        ("distill", ["--temperature", "2.0", "--set", "distill.temperature=3.0"]),
    ],
)
def test_an_option_and_a_set_of_the_same_key_are_refused_in_one_line(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, pair: list[str]
) -> None:
    """`--steps 2 --set train.steps=3` must not run 3 steps, dropping the option the user typed
    without a word. The pair is refused, naming both, before anything is written."""
    out = tmp_path / "out"
    argv = [command, str(world["source"]), "--data", str(world["data"]), "--out", str(out), *pair]
    assert main([*argv, *(["--preset", "smoke"] if command == "distill" else [])]) == 2
    err = capsys.readouterr().err.strip()
    flag, key = pair[0], pair[3].split("=")[0]
    assert err.splitlines() == [
        f"stack {command}: error: {flag} and --set {key} both set {key}; give one of the two"
    ]
    assert not out.exists()


def test_a_set_without_its_option_is_taken(world: dict[str, Path], tmp_path: Path) -> None:
    """`--set train.steps=2` alone (the option --steps left at its default) is the user's setting."""
    out = tmp_path / "out"
    argv = [
        "dpo",
        str(world["source"]),
        "--data",
        str(world["data"]),
        "--out",
        str(out),
        "--set",
        "train.steps=2",
    ]
    assert main([*argv, "--batch-size", "1", "--device", "cpu"]) == 0
    assert len(_steps(out)) == 2
