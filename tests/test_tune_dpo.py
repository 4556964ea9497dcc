"""`stack dpo`: preference tuning against a frozen reference, under GATE-DPO-001..005.

Falsifiers plant each bug in the stack's own code path: a reference kept in bfloat16, a reference
left trainable, a mask that scores padding or the prompt, a loss whose β never reaches it. Each
threshold is also probed just beyond and just inside its value through the gate's judge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from trace_support import save_run, tiny_model

from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.data.sft_template import load_template
from stack.data.tokenizer import ByteTokenizer
from stack.model.gpt import GPT
from stack.train.trained import load_trained
from stack.tune import dpo, dpo_run, frozen, pairs
from stack.tune.pairs import PairBatcher, collate, read_pairs, tokenize_pair

PREFS = Path(__file__).parent / "data" / "prefs_small.jsonl"
CTX = 64


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer byte-level model of context 64 saved as a run."""
    root = tmp_path_factory.mktemp("dpo")
    save_run(root / "source", tiny_model(ctx=CTX))
    return root / "source"


def _dpo(source: Path, out: Path, *options: str) -> int:
    argv = ["dpo", str(source), "--pairs", str(PREFS), "--out", str(out), "--lr", "1e-3"]
    return main([*argv, "--steps", "3", *options])


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


def _batch(size: int = 4) -> pairs.PairBatch:
    tokenizer = ByteTokenizer()
    tokenized = [tokenize_pair(p, tokenizer, CTX + 1) for p in read_pairs(PREFS, load_template(None))]
    return collate(tokenized[:size], tokenizer.eot_id)


def _scores_to_the_end(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """The planted bug: every position after the prompt is scored, padding included."""
    return torch.arange(width) >= prompt_len


def _scores_the_prompt(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """The planted bug: the whole sequence is scored, prompt included."""
    return torch.arange(width) < length


# -- the clean path, through the real CLI ------------------------------------------------------


@pytest.mark.holds("GATE-DPO-001", "GATE-DPO-002", "GATE-DPO-003", "GATE-DPO-004", "GATE-DPO-005")
def test_dpo_writes_a_run_every_reader_takes(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _dpo(source, out) == 0
    printed = capsys.readouterr().out
    assert "step 1/3: loss 0.6931" in printed and "margin" in printed and "wrote" in printed
    required = load_spec().required_gates("dpo")
    assert {g: v for g, v in _verdicts(out).items() if g in required} == dict.fromkeys(required, "PASS")
    steps = read_evidence(out / "metadata.json").metrics["steps"]
    assert [set(line) >= {"loss", "chosen_reward", "rejected_reward", "margin", "accuracy"} for line in steps]
    assert steps[-1]["margin"] > 0 and steps[-1]["loss"] < math.log(2)
    before, after = load_trained(source).model, load_trained(out).model
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "Q:"]) == 0


@pytest.mark.holds("GATE-DPO-001", "GATE-DPO-002", "GATE-DPO-005")
def test_a_resume_continues_bit_for_bit(source: Path, tmp_path: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert _dpo(source, straight, "--steps", "4", "--save-every", "2") == 0
    assert _dpo(source, halves, "--steps", "2") == 0
    assert main(["dpo", "--resume", str(halves), "--steps", "4"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-0000004" / name))
        b = load_file(str(halves / "checkpoints" / "step-0000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [json.loads((r / "checkpoints/step-0000004/state.json").read_text()) for r in (straight, halves)]
    assert states[0]["tune"]["history"] == states[1]["tune"]["history"]
    assert read_evidence(halves / "metadata.json").metrics["resumed_from"] == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "Q", "chosen": "a"}', "needs 'prompt', 'chosen' and 'rejected'"),
        ('{"prompt": "Q", "chosen": "a", "rejected": "a"}', "nothing to prefer"),
        ('{"prompt": "' + "x" * 80 + '", "chosen": "a", "rejected": "b"}', "does not fit"),
        ("not json", "not JSON"),
        ('{"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}', "role"),
    ],
)
def test_bad_pairs_are_one_line_and_exit_2(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, problem: str
) -> None:
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(line + "\n")
    argv = ["dpo", str(source), "--pairs", str(prefs), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and problem in err


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
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


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 12), pad=st.integers(0, 5))
def test_the_mask_covers_exactly_the_completions(size: int, pad: int) -> None:
    tokenizer = ByteTokenizer()
    tokenized = [tokenize_pair(p, tokenizer, CTX + 1) for p in read_pairs(PREFS, load_template(None))][:size]
    batch = collate(tokenized, tokenizer.eot_id)
    wide = pairs.collate_width(batch, tokenizer.eot_id, batch.tokens.shape[1] + pad)
    completions = sum(len(p.chosen) + len(p.rejected) for p in tokenized)
    assert int(batch.mask.sum()) == int(wide.mask.sum()) == completions
    assert dpo.scored_counts(wide)["completion_tokens"] == completions


def test_the_batcher_resumes_where_it_stopped() -> None:
    tokenizer = ByteTokenizer()
    tokenized = [tokenize_pair(p, tokenizer, CTX + 1) for p in read_pairs(PREFS, load_template(None))]
    straight, resumed = (PairBatcher(tokenized, 5, 3, tokenizer.eot_id) for _ in range(2))
    for _ in range(3):
        straight.next_batch()
    state = straight.state_dict()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(4):  # across an epoch boundary
        assert torch.equal(straight.next_batch().tokens, resumed.next_batch().tokens)


# -- falsifiers --------------------------------------------------------------------------------


@pytest.mark.gate("GATE-DPO-001")
def test_a_reference_kept_in_another_dtype_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = dpo_run._reference

    def rounded(path: Path, policy: object) -> GPT:  # the planted bug: the reference went through bf16
        return loaded(path, policy).to(torch.bfloat16).to(torch.float32)  # type: ignore[arg-type]

    monkeypatch.setattr(dpo_run, "_reference", rounded)
    out = tmp_path / "out"
    assert _dpo(source, out) == 3
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
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(frozen, "freeze", frozen.weights_sha256)  # the planted bug: hashed, never frozen
    out = tmp_path / "out"
    assert _dpo(source, out) == 3
    assert "GATE-DPO-002" in capsys.readouterr().err
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
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The planted bug: the loss is built with β = 0, whatever the settings say.
    monkeypatch.setattr(dpo_run.DpoTask, "_loss_args", lambda self: {"beta": 0.0, "label_smoothing": 0.0})
    out = tmp_path / "out"
    assert _dpo(source, out) == 3
    assert "GATE-DPO-004" in capsys.readouterr().err
    steps = json.loads((out / "checkpoints/step-0000003/state.json").read_text())["tune"]["history"]
    assert {round(line["loss"], 4) for line in steps} == {0.6931}
    assert _verdicts(out)["GATE-DPO-004"] == "FAIL"


@pytest.mark.gate("GATE-DPO-004")
def test_a_margin_span_just_below_the_limit_fires_and_just_above_holds() -> None:
    limit = load_spec().threshold("GATE-DPO-004", "min_margin_span")
    case = {"beta": 0.1, "trainable_parameters": 10, "accuracies": [0.0, 0.5]}
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 0.9 * limit]}).ok
    assert measure("GATE-DPO-004", {**case, "margins": [0.0, 1.1 * limit]}).ok
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 1.0], "beta": 0.0}).ok
    assert not measure("GATE-DPO-004", {**case, "margins": [0.0, 1.0], "accuracies": [0.5, 0.5]}).ok


@pytest.mark.gate("GATE-DPO-005")
def test_scoring_the_prompt_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pairs, "completion_mask", _scores_the_prompt)
    out = tmp_path / "out"
    assert _dpo(source, out) == 3
    assert "GATE-DPO-005" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-DPO-005")
    assert result.verdict.value == "FAIL" and result.measured["scored_prompt_tokens"] > 0  # type: ignore[index]
