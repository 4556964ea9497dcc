"""What the loss consumed, measured at the loss (GATE-TRAIN-007), and the objectives' identities on the
batch the loss just used (GATE-SFT-003 rev 2, GATE-DPO-005 rev 2, GATE-KD-003 rev 2).

Each falsifier patches the stack's own code between the batch and the loss, as a
sitecustomize could, and runs the real command: an SFT loss on the prompt's tokens, packed examples
handed to the model without their document ids, a DPO sum that skips each row's first completion
token, pretraining targets off by one, a loss computed outside the model's forward, an attention
mask that mixes the rows of a batch, a sum that gathers the wrong tokens, a KL taken the wrong way
round. Each stops with exit 3 naming its gate; the unpatched commands exit 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import GateViolation
from contracts.gates import measure
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.cli import main
from stack.data.sft_prepare import prepare_sft
from stack.data.sft_reader import SftBatch
from stack.model import attention
from stack.model.checks import PROBE_LEN
from stack.model.consumed import Consumed, mode_of, record
from stack.train import dpo_objective
from stack.train.consumption import COUNTS, compare, targets_sha256
from stack.train.distill_objective import Distill
from stack.train.objective import Pretrain, StepLoss, probe_rows
from stack.train.sft_objective import Sft
from stack.tune import distill, dpo, pairs
from stack.tune.distill import KdTerms
from tests.support.paths import DATA
from tests.support.prefs_support import prepared_pairs
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared, smoke_args, step_lines, train

CHAT = DATA / "chat_small.jsonl"
PACK = 96
SFT_SETS = [
    "train.device='cpu'",
    "train.batch_size=1",
    "train.steps=2",
    "eval.every=2",
    "ckpt.every=2",
    "monitor.sample_every=2",
    "monitor.tokens=8",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A byte-level corpus and a smoke model pretrained on it (ctx 128, the teacher and SFT base),
    the small chat set packed into windows of 96, and a tiny model with a DATA_DIR of pairs."""
    root = tmp_path_factory.mktemp("consumed")
    text, base = prepared(root), root / "base"
    cadence = ["model.ctx=128", "train.steps=4", "eval.every=4", "ckpt.every=4", "monitor.sample_every=4"]
    assert train(smoke_args(text, base, *cadence)) == 0
    sft, sums = root / "sft", root / "sums"
    prepare_sft([CHAT], sft, fmt="chat", pack_len=PACK, val_fraction=0.5)
    prepare_sft([_sums_chat(root / "sums.jsonl")], sums, fmt="chat", pack_len=PACK, val_fraction=0.5)
    save_run(root / "policy", tiny_model(ctx=64))
    places = {"text": text, "base": base, "sft": sft, "sums": sums}
    return {**places, "policy": root / "policy", "pairs": prepared_pairs(root)}


def _sums_chat(path: Path) -> Path:
    """256 short distinct conversations: enough held-out windows of 96 for batches of two."""
    lines = []
    for a in range(16):
        for b in range(16):
            turns = [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": f"{a + b}."}]
            lines.append(json.dumps({"messages": turns}) + "\n")
    path.write_text("".join(lines))
    return path


def _sft(world: dict[str, Path], out: Path, *sets: str, data: str = "sft") -> int:
    argv = ["sft", "--data", str(world[data]), "--init-from", str(world["base"]), "--out", str(out)]
    for item in [*SFT_SETS, *sets]:
        argv += ["--set", item]
    return main(argv)


def _dpo(world: dict[str, Path], out: Path) -> int:
    argv = ["dpo", str(world["policy"]), "--data", str(world["pairs"]), "--out", str(out), "--lr", "1e-3"]
    return main([*argv, "--steps", "2", "--batch-size", "1", "--device", "cpu"])


def _distill(world: dict[str, Path], out: Path) -> int:
    argv = ["distill", str(world["base"]), "--data", str(world["text"]), "--out", str(out)]
    return main([*argv, "--steps", "2", "--batch-size", "4", "--preset", "smoke"])


def _pretrain(world: dict[str, Path], out: Path) -> int:
    return train(smoke_args(world["text"], out, "train.steps=2", "eval.every=2", "ckpt.every=2"))


def _result(out: Path, gate_id: str) -> dict[str, Any]:
    """The gate's result in the run's record, as plain data."""
    gates = json.loads((out / "metadata.json").read_text())["gates"]
    return next(g for g in gates if g["id"] == gate_id)


def _stopped_by(out: Path, code: int, err: str, gate_id: str) -> dict[str, Any]:
    """Assert the run exited 3 in `gate_id`'s name with a halted record; the gate's measured values."""
    assert code == 3 and gate_id in err and "Traceback" not in err, err
    assert json.loads((out / "metadata.json").read_text())["run"]["status"] == "halted"
    result = _result(out, gate_id)
    assert result["verdict"] == "FAIL"
    return result["measured"]


# -- the unpatched commands ------------------------------------------------------------------


@pytest.mark.holds("GATE-TRAIN-007", "GATE-SFT-003", "GATE-DPO-005", "GATE-KD-003")
@pytest.mark.parametrize("command", ["pretrain", "sft", "dpo", "distill"])
def test_every_objective_consumes_what_its_batches_state(
    world: dict[str, Path], tmp_path: Path, command: str
) -> None:
    """Each unpatched command exits 0, every step's line says what the loss scored, and the probes
    of the batch the loss used ran on its objective's gate."""
    run = {"pretrain": _pretrain, "sft": _sft, "dpo": _dpo, "distill": _distill}[command]
    out = tmp_path / command
    assert run(world, out) == 0
    consumed = _result(out, "GATE-TRAIN-007")
    assert consumed["verdict"] == "PASS" and consumed["measured"]["targets"] > 0
    assert consumed["measured"]["targets_sha256"] == consumed["measured"]["stated_targets_sha256"]
    lines = step_lines(out)
    assert all(line["targets"] > 0 and len(line["targets_sha256"]) == 64 for line in lines)
    probed = {"sft": ("GATE-SFT-003", "probe_positions"), "dpo": ("GATE-DPO-005", "rows_compared")}
    probed["distill"] = ("GATE-KD-003", "kl_recomputed")
    if command in probed:
        gate_id, key = probed[command]
        result = _result(out, gate_id)
        assert result["verdict"] == "PASS" and result["measured"][key] > 0


# -- GATE-TRAIN-007: what the loss consumed against what the batch states ---------------------


def _supervise_every_token(self: SftBatch) -> torch.Tensor:
    """The planted bug: every next token of the same example is a target, the user's included."""
    follows = (self.labels[:, 1:] >> 1) == self.docs
    return torch.where(follows, self.tokens[:, 1:], torch.full_like(self.tokens[:, 1:], -1))


@pytest.mark.gate("GATE-TRAIN-007")
def test_an_sft_loss_on_the_prompt_tokens_stops_the_run(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(SftBatch, "targets", property(_supervise_every_token))
    out = tmp_path / "prompt"
    measured = _stopped_by(out, _sft(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["targets"] > measured["stated_targets"] > 0 and measured["mismatched_targets"] > 0
    assert measured["targets_sha256"] != measured["stated_targets_sha256"]
    assert not (out / "checkpoints").exists()  # stopped before its first update was saved


@pytest.mark.gate("GATE-TRAIN-007")
def test_packed_examples_handed_over_without_document_ids_stop_the_run(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = Sft.loss

    def without_docs(self: Sft, forward: Any, model: Any, batch: SftBatch) -> StepLoss:
        """The planted bug: the model is called without the batch's document ids."""
        return real(self, lambda idx, targets, docs=None: forward(idx, targets), model, batch)

    monkeypatch.setattr(Sft, "loss", without_docs)
    out = tmp_path / "nodocs"
    measured = _stopped_by(out, _sft(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["mismatched_docs"] > 0 and measured["mismatched_targets"] == 0
    assert "attention crossed the packed examples" in _result(out, "GATE-TRAIN-007")["message"]


def _rows_from_the_second_completion_token(batch: SftBatch) -> pairs.PairBatch:
    """The planted bug: each row's completion is taken to start one token late."""
    rows = _real_pair_rows(batch)
    return pairs.rows_batch(rows.tokens, tuple(p + 1 for p in rows.prompt_lens), rows.lengths)


def _mask_without_first_token(model: Any, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The planted bug: the sum is asked for every scored position but each row's first."""
    first = mask.int().argmax(dim=1)
    trimmed = mask.clone()
    trimmed[torch.arange(mask.shape[0]), first] = False
    return _real_sequence_logprobs(model, tokens, trimmed)


def _rows_at_full_width(batch: SftBatch) -> pairs.PairBatch:
    """Benign: the rows are not cut to the longest sequence (more padding, nothing else scored)."""
    rows = _real_pair_rows(batch)
    width = batch.tokens.shape[1] // 2
    full = torch.cat([batch.tokens[:, :width], batch.tokens[:, width : 2 * width]])
    return pairs.PairBatch(
        full,
        torch.stack(
            [pairs.completion_mask(p, n, width) for p, n in zip(rows.prompt_lens, rows.lengths, strict=True)]
        ),
        rows.prompt_lens,
        rows.lengths,
    )


_real_pair_rows = dpo_objective.pair_rows
_real_sequence_logprobs = dpo.sequence_logprobs


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize(
    ("target", "name", "mutant"),
    [
        (dpo_objective, "pair_rows", _rows_from_the_second_completion_token),
        (dpo, "sequence_logprobs", _mask_without_first_token),
    ],
    ids=["rows-built-late", "sum-skips-a-token"],
)
def test_a_dpo_sum_that_skips_each_rows_first_completion_token_stops_the_run(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: object,
    name: str,
    mutant: Callable[..., Any],
) -> None:
    """GATE-DPO-005 checks the mask against the bounds the same code derived, so it holds; the
    labels say otherwise. A scoring wider than the rows (benign) holds."""
    monkeypatch.setattr(dpo_objective, "pair_rows", _rows_at_full_width)
    assert _dpo(world, tmp_path / "wide") == 0
    monkeypatch.setattr(target, name, mutant)
    out = tmp_path / "late"
    measured = _stopped_by(out, _dpo(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["stated_targets"] - measured["targets"] == 2 * measured["scorings"]  # one per row


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_dpo_reference_scored_in_training_mode_stops_the_first_step(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The frozen reference is put in training mode before it scores (its dropout drawn into every
    reward): the step's statement names evaluation mode for the reference's scoring, and the
    policy's, in training mode, holds (GATE-TRAIN-007 rev 6, check mode)."""
    logprobs = dpo_objective.Dpo._logprobs

    def reference_in_training(self: dpo_objective.Dpo, forward: Any, rows: Any) -> Any:
        self.reference.train()
        return logprobs(self, forward, rows)

    monkeypatch.setattr(dpo_objective.Dpo, "_logprobs", reference_in_training)
    out = tmp_path / "reference-in-training"
    measured = _stopped_by(out, _dpo(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["modes"] == ["train"] and measured["mismatched_modes"] == 1


def _targets_are_the_inputs(self: Pretrain, forward: Any, model: Any, batch: torch.Tensor) -> StepLoss:
    """The planted bug: the window's own tokens as targets (the shift forgotten)."""
    _, loss = forward(batch[:, :-1], batch[:, :-1])
    return StepLoss(backprop=loss, logged=loss)


def _loss_beside_the_model(self: Pretrain, forward: Any, model: Any, batch: torch.Tensor) -> StepLoss:
    """The planted bug: the cross-entropy taken from the logits by hand, over every position but
    the last (the model never saw targets, so nothing recorded what was scored)."""
    logits, _ = forward(batch[:, :-1])
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:-1].flatten())
    return StepLoss(backprop=loss, logged=loss)


_real_distill_loss = Distill.loss


def _window_read_one_late(self: Distill, forward: Any, model: Any, batch: torch.Tensor) -> StepLoss:
    """The planted bug: the loss reads the window rolled by one token (an off-by-one between the
    reader and the loss). Teacher, student and the identities all see the same rolled window."""
    return _real_distill_loss(self, forward, model, batch.roll(1, dims=1))


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize(
    ("command", "objective", "mutant", "count"),
    [
        ("pretrain", Pretrain, _targets_are_the_inputs, "mismatched_targets"),
        ("pretrain", Pretrain, _loss_beside_the_model, "scorings"),
        ("distill", Distill, _window_read_one_late, "mismatched_inputs"),
    ],
    ids=["pretrain-unshifted", "pretrain-outside-the-model", "distill-unshifted"],
)
def test_other_objectives_whose_loss_reads_other_targets_stop(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    objective: type,
    mutant: Callable[..., StepLoss],
    count: str,
) -> None:
    """Planted in pretraining and distillation: targets unshifted, the loss computed beside the
    model, a window read one late; each stops the run under GATE-TRAIN-007, on every objective."""
    monkeypatch.setattr(objective, "loss", mutant)
    out = tmp_path / "mutant"
    run = _pretrain if command == "pretrain" else _distill
    measured = _stopped_by(out, run(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    if count == "scorings":
        assert measured["scorings"] == 0 and measured["stated_scorings"] == 1
    else:
        assert measured[count] > 0


@pytest.mark.gate("GATE-TRAIN-007")
def test_each_measured_difference_alone_fires_and_agreement_holds() -> None:
    agree = {
        "scorings": 2,
        "stated_scorings": 2,
        **{name: 0 for name in COUNTS},
        "targets": 6,
        "stated_targets": 6,
        "targets_sha256": "a" * 64,
        "stated_targets_sha256": "a" * 64,
    }
    assert judge("GATE-TRAIN-007", agree) == []
    changes = [
        {"scorings": 1},
        {"targets": 7},
        {"mismatched_targets": 1},
        {"mismatched_inputs": 1},
        {"mismatched_docs": 1},
        {"stated_targets_sha256": "b" * 64},
    ]
    for change in changes:
        assert judge("GATE-TRAIN-007", {**agree, **change}) != [], change
    missing = {k: v for k, v in agree.items() if k != "mismatched_docs"}
    assert "malformed" in judge("GATE-TRAIN-007", missing)[0]


@pytest.mark.holds("GATE-TRAIN-007")
@settings(max_examples=40)
@given(
    rows=st.integers(1, 3),
    width=st.integers(2, 9),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**16),
    where=st.integers(0, 10**6),
)
def test_a_scoring_is_its_statement_and_one_changed_target_shows(
    rows: int, width: int, extra: int, seed: int, where: int
) -> None:
    """A scoring equal to its statement (or wider, with nothing scored past it) differs nowhere; a
    target changed at any one position is counted once and changes the hash."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 50, (rows, width), generator=generator)
    targets = torch.where(torch.rand(rows, width, generator=generator) < 0.5, inputs.roll(1, 1), -1)
    docs = torch.randint(0, 3, (rows, width), generator=generator)
    stated = Consumed(inputs, targets, docs)
    pad = torch.full((rows, extra), -1)
    wider = Consumed(
        torch.cat([inputs, pad.abs()], 1), torch.cat([targets, pad], 1), torch.cat([docs, pad], 1)
    )
    for consumed in (stated, wider):
        counts = dict(zip(COUNTS, compare(consumed, stated).tolist(), strict=True))
        assert counts["targets"] == counts["stated_targets"] and counts["mismatched_targets"] == 0
        assert counts["mismatched_inputs"] == counts["mismatched_docs"] == 0
    assert targets_sha256([wider.targets]) == targets_sha256([targets])
    row, column = divmod(where % (rows * width), width)
    changed = targets.clone()
    changed[row, column] = 51 if changed[row, column] < 0 else -1
    counts = dict(zip(COUNTS, compare(Consumed(inputs, changed, docs), stated).tolist(), strict=True))
    assert counts["mismatched_targets"] == 1
    assert targets_sha256([changed]) != targets_sha256([targets])
    assert compare(Consumed(inputs, targets, None), stated)[COUNTS.index("mismatched_docs")] == rows * width


# -- GATE-SFT-003 rev 2: isolation on the batch the loss used ---------------------------------


@pytest.mark.gate("GATE-SFT-003")
def test_a_mask_that_mixes_the_rows_of_a_batch_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The planted bug: the document mask of a batch is built from its first row for every row, in
    windows longer than GATE-MODEL-003's probe (which packs rows of its own and would stop the run
    at start-up). The start-up check (one window) cannot see it, and the loss is handed the right
    document ids; the probe of the batch the loss used sees another example's losses move."""
    real = attention.document_mask

    def first_rows_mask(docs: torch.Tensor) -> torch.Tensor:
        return real(docs[:1].expand_as(docs) if docs.shape[1] > PROBE_LEN else docs)

    monkeypatch.setattr(attention, "document_mask", first_rows_mask)
    out = tmp_path / "mixed"
    measured = _stopped_by(
        out, _sft(world, out, "train.batch_size=2", data="sums"), capsys.readouterr().err, "GATE-SFT-003"
    )
    assert measured["max_abs_token_loss_diff"] > 0 and measured["probe_positions"] > 0
    assert measured["max_abs_logit_diff"] == 0.0  # the start-up check held
    assert _result(out, "GATE-TRAIN-007")["verdict"] == "PASS"


@pytest.mark.gate("GATE-SFT-003")
def test_a_token_loss_moved_at_all_fires_and_bit_identical_holds() -> None:
    limit = float(load_spec().threshold("GATE-SFT-003", "max_abs_token_loss_diff"))
    assert limit == 0.0  # bit-identical: the smallest positive difference is beyond it
    assert measure("GATE-SFT-003", {"max_abs_token_loss_diff": limit, "probe_positions": 8}).ok
    assert not measure("GATE-SFT-003", {"max_abs_token_loss_diff": 5e-324, "probe_positions": 8}).ok
    assert not measure("GATE-SFT-003", {"max_abs_token_loss_diff": float("nan"), "probe_positions": 8}).ok
    assert not measure("GATE-SFT-003", {"max_abs_token_loss_diff": 0.0, "probe_positions": 0}).ok


# -- GATE-DPO-005 rev 2: the sums recomputed by a plain forward -------------------------------


def _gathers_the_current_token(model: Any, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The planted bug: the scoring records the right targets, then sums the log-probability of
    each position's own token instead of the next one."""
    targets = torch.where(mask[:, 1:], tokens[:, 1:], torch.full_like(tokens[:, 1:], -1))
    logits, _ = model(tokens[:, :-1])
    record(Consumed(tokens[:, :-1], targets, logits_dtype=logits.dtype, mode=mode_of(model)))
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, :-1, None]).squeeze(-1)
    return torch.where(targets >= 0, logp, torch.zeros_like(logp)).sum(dim=-1)


@pytest.mark.gate("GATE-DPO-005")
def test_a_sum_of_the_wrong_tokens_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dpo, "sequence_logprobs", _gathers_the_current_token)
    out = tmp_path / "gather"
    measured = _stopped_by(out, _dpo(world, out), capsys.readouterr().err, "GATE-DPO-005")
    limit = float(load_spec().threshold("GATE-DPO-005", "max_abs_logprob_diff"))
    assert measured["max_abs_logprob_diff"] > 100 * limit and measured["rows_compared"] == 2
    assert _result(out, "GATE-TRAIN-007")["verdict"] == "PASS"  # what it recorded was right


@pytest.mark.gate("GATE-DPO-005")
def test_a_recomputed_sum_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    limit = float(load_spec().threshold("GATE-DPO-005", "max_abs_logprob_diff"))
    assert measure("GATE-DPO-005", {"max_abs_logprob_diff": 0.99 * limit, "rows_compared": 2}).ok
    assert not measure("GATE-DPO-005", {"max_abs_logprob_diff": 1.01 * limit, "rows_compared": 2}).ok
    assert not measure("GATE-DPO-005", {"max_abs_logprob_diff": 0.0, "rows_compared": 0}).ok


# -- GATE-KD-003 rev 2: the KL minimised is the teacher's KL ----------------------------------

_real_kd_terms = distill.kd_terms


def _kl_the_wrong_way_round(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> KdTerms:
    """The planted bug: the soft term is KL(student ‖ teacher). A student distilled from itself
    still has KL 0 and α = 0 is still the NLL, so the first batch's identities hold."""
    forward = _real_kd_terms(student, teacher, targets, temperature, alpha)
    reverse = _real_kd_terms(teacher, student, targets, temperature, 1.0)
    soft = alpha * temperature**2 * reverse.kl
    return KdTerms(soft + (1 - alpha) * forward.nll, reverse.kl, forward.nll)


@pytest.mark.gate("GATE-KD-003")
def test_a_kl_taken_the_wrong_way_round_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(distill, "kd_terms", _kl_the_wrong_way_round)
    out = tmp_path / "reversed"
    measured = _stopped_by(out, _distill(world, out), capsys.readouterr().err, "GATE-KD-003")
    assert measured["alpha0_abs_diff"] == 0.0 and measured["self_kl"] == 0.0  # the identities held
    assert measured["kl_minimised"] != measured["kl_recomputed"]


@pytest.mark.gate("GATE-KD-003")
def test_a_minimised_kl_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    thresholds = load_spec().gate("GATE-KD-003").threshold_values
    recomputed = 0.5
    allowed = thresholds["kl_atol"] + thresholds["kl_rtol"] * recomputed
    for factor, holds in ((0.99, True), (1.01, False)):
        measured = {"kl_minimised": recomputed + factor * allowed, "kl_recomputed": recomputed}
        assert measure("GATE-KD-003", measured).ok is holds


# -- what the loss scored, read off its gradient ------------------------------------------------


def _drops_the_last_target(real: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A cross-entropy that leaves out one target, the last of the flattened batch, after the
    forward recorded its tape: what the tape says the loss read is no longer what it scored."""

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        kept = targets.clone()
        kept[-1] = -1
        return real(logits, kept, **kwargs)

    return cross_entropy


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_cross_entropy_that_skips_one_target_after_the_tape_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One target left out of each loss: the probe, which reads the batch a part at a time
    (`probe_rows`), reads one fewer scored per part than the window states."""
    import stack.model.gpt as gpt

    monkeypatch.setattr(gpt.F, "cross_entropy", _drops_the_last_target(F.cross_entropy))
    out = tmp_path / "mutant"
    measured = _stopped_by(out, _pretrain(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    rows = json.loads((out / "metadata.json").read_text())["config"]["train"]["batch_size"]
    assert measured["stated_targets"] - measured["targets"] == -(-rows // probe_rows(rows))


@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 9),
    vocab=st.integers(2, 40),
    data=st.data(),
)
@settings(max_examples=40)
def test_the_gradient_reads_back_exactly_the_targets_a_cross_entropy_scores(
    batch: int, length: int, vocab: int, data: st.DataObject
) -> None:
    """Whatever the logits' values, the masked positions and the ids: the rows scored and their ids;
    and a mean cross-entropy sits on the identity the probe judges, where a sum over N > 1 scored
    rows sits (N - 1)(1 - 1/V) from it."""
    from stack.train.consumption import consumed_by_gradient

    ids = data.draw(st.lists(st.integers(-1, vocab - 1), min_size=batch * length, max_size=batch * length))
    targets = torch.tensor(ids).reshape(batch, length)
    reduction = data.draw(st.sampled_from(["mean", "sum"]))
    head = torch.nn.Linear(4, vocab)
    inputs = torch.randn(batch, length, 4) * 30  # saturating logits: the zeros make no difference

    def loss() -> torch.Tensor:
        logits = head(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction=reduction)

    reading = consumed_by_gradient(loss, head)
    assert len(reading.targets) == 1 and torch.equal(reading.targets[0], targets)
    scored = int((targets >= 0).sum())
    expected = (scored - 1) * (1 - 1 / vocab) if reduction == "sum" and scored else 0.0
    assert reading.deviation == pytest.approx(expected, abs=1e-5)


# -- how the loss scored: its gradient at uniform logits against the mean cross-entropy's ----------


def _smoothed(real: Callable[..., torch.Tensor], smoothing: float) -> Callable[..., torch.Tensor]:
    """A cross-entropy with smoothed labels: the same targets, the same tape, another value."""

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return real(logits, targets, label_smoothing=smoothing, **kwargs)

    return cross_entropy


def _mean_over_every_position(real: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A cross-entropy summed over the scored targets and divided by every position of the batch:
    the prompt tokens it ignores still dilute the supervised ones' weight."""

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return real(logits, targets, reduction="sum", **kwargs) / targets.numel()

    return cross_entropy


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_cross_entropy_with_smoothed_labels_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Label smoothing 0.1 reads every target the window states, so the tape and the targets read
    off the gradient agree; the gradient is (1 - 0.1) times the mean cross-entropy's."""
    import stack.model.gpt as gpt

    monkeypatch.setattr(gpt.F, "cross_entropy", _smoothed(F.cross_entropy, 0.1))
    out = tmp_path / "smoothed"
    measured = _stopped_by(out, _pretrain(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["targets"] == measured["stated_targets"] and measured["mismatched_targets"] == 0
    assert 0.09 < measured["loss_gradient_deviation"] <= 0.1


@pytest.mark.gate("GATE-TRAIN-007")
def test_labels_smoothed_in_training_mode_only_stop_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The loss smooths its labels only when the model is in training mode (`self.training`): a
    probe in evaluation mode reads an unsmoothed gradient; one in the mode the run trains in does not."""
    import stack.model.gpt as gpt

    forward, cross_entropy = gpt.GPT.forward, F.cross_entropy
    mode = {"training": False}

    def recording_mode(self: gpt.GPT, *args: Any, **kwargs: Any) -> Any:
        mode["training"] = self.training
        return forward(self, *args, **kwargs)

    def smoothed_in_training(logits: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return cross_entropy(logits, targets, label_smoothing=0.1 if mode["training"] else 0.0, **kwargs)

    monkeypatch.setattr(gpt.GPT, "forward", recording_mode)
    monkeypatch.setattr(gpt.F, "cross_entropy", smoothed_in_training)
    out = tmp_path / "smoothed-in-training"
    measured = _stopped_by(out, _pretrain(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert 0.09 < measured["loss_gradient_deviation"] <= 0.1


def test_the_probe_trains_as_the_run_does_and_leaves_its_random_streams_alone() -> None:
    """Training mode inside (adapter dropout draws), the mode and the global generator as they were after."""
    from stack.model.lora import apply_lora
    from stack.train.consumption import in_mode

    model = tiny_model(ctx=16)
    apply_lora(model, "q,v", 2, 4.0, dropout=0.5)
    with torch.no_grad():  # a trained adapter: its term, and so its dropout, shows
        for parameter in (p for name, p in model.named_parameters() if name.endswith("lora_B")):
            parameter.fill_(0.5)
    tokens = torch.arange(8).unsqueeze(0)
    before = torch.get_rng_state()
    with in_mode(model, training=True):
        assert model.training
        first, second = model(tokens)[0], model(tokens)[0]
    assert not torch.equal(first, second)  # the dropout drew, twice differently
    assert not model.training and torch.equal(torch.get_rng_state(), before)


@pytest.mark.gate("GATE-TRAIN-007")
def test_an_sft_loss_averaged_over_every_position_stops_at_the_probe(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The supervised targets are the right ones; their mean is taken over the prompt's positions too."""
    import stack.model.gpt as gpt

    monkeypatch.setattr(gpt.F, "cross_entropy", _mean_over_every_position(F.cross_entropy))
    out = tmp_path / "diluted"
    measured = _stopped_by(out, _sft(world, out), capsys.readouterr().err, "GATE-TRAIN-007")
    assert measured["targets"] == measured["stated_targets"] and measured["mismatched_targets"] == 0
    assert measured["loss_gradient_deviation"] > load_spec().threshold("GATE-TRAIN-007", "loss_gradient_atol")


def _probe_smoothed(smoothing: float, vocab: int = 50) -> dict[str, Any]:
    """GATE-TRAIN-007's probe, by the stack's own path, of a small head trained with `smoothing`."""
    from stack.train.consumption import check_loss_gradient

    head = torch.nn.Linear(4, vocab)
    inputs, targets = (
        torch.randn(2, 6, 4),
        torch.randint(0, vocab, (2, 6), generator=torch.Generator().manual_seed(0)),
    )
    stated = [Consumed(inputs=torch.zeros(2, 6, dtype=torch.int64), targets=targets)]

    def loss() -> torch.Tensor:
        logits = head(inputs)
        return F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=-1, label_smoothing=smoothing
        )

    with recording(Ledger()) as ledger:
        check_loss_gradient([loss], torch.nn.ModuleDict({"lm_head": head}), stated, step=1)
    return ledger.results["GATE-TRAIN-007"].measured


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_smoothing_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    """Smoothing ε puts the gradient ε(1 - 1/V) from the mean cross-entropy's: 1.1 and 0.9 times
    the tolerance."""
    atol, vocab = load_spec().threshold("GATE-TRAIN-007", "loss_gradient_atol"), 50
    inside = _probe_smoothed(0.9 * atol / (1 - 1 / vocab), vocab)
    assert inside["loss_gradient_deviation"] == pytest.approx(0.9 * atol, rel=1e-3)
    with pytest.raises(GateViolation, match="gradient at uniform logits"):
        _probe_smoothed(1.1 * atol / (1 - 1 / vocab), vocab)


def test_the_deviation_is_the_same_taken_a_row_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row chunks bound the copies' memory, never the result (a smoothed loss, some rows unscored)."""
    from stack.train import consumption

    head = torch.nn.Linear(4, 30)
    inputs = torch.randn(3, 9, 4)
    targets = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(1))
    targets[1, ::2] = -1

    def loss() -> torch.Tensor:
        logits = head(inputs).flatten(0, 1)
        return F.cross_entropy(logits, targets.flatten(), ignore_index=-1, label_smoothing=0.3)

    whole = consumption.consumed_by_gradient(loss, head).deviation
    monkeypatch.setattr(consumption, "DEVIATION_ROWS", 1)
    assert (
        consumption.consumed_by_gradient(loss, head).deviation == whole == pytest.approx(0.3 * (1 - 1 / 30))
    )
