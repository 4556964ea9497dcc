"""Supervised fine-tuning in the one training loop: the objective, packing isolation (GATE-SFT-003),
`stack sft` end to end with its evidence, and an exact resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.errors import BadInput, GateViolation
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.data import sft_prepare
from stack.data.manifest import load_manifest
from stack.data.sft_prepare import prepare_sft
from stack.data.sft_reader import SftBatch, sft_heldout_batches
from stack.model.attention import naive_attention, sdpa_attention, softmax_scale, triton_attention
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.train.sft_objective import Sft, check_isolation, isolation_outcome
from stack.train.tasks import OBJECTIVES, objective_for
from tests.support.ledger_support import SMOKE_OPTIONS, assert_check_required, each_required_check, findings
from tests.support.paths import DATA
from tests.support.train_support import evidence, prepared, smoke_args, step_lines, train, unjudged, verdicts

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

CHAT = DATA / "chat_small.jsonl"
PACK = 96
SFT_STEPS = [
    "train.device='cpu'",
    "train.batch_size=1",
    "eval.every=4",
    "ckpt.every=2",
    "monitor.sample_every=4",
    "monitor.tokens=8",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke model pretrained with ctx 128, and the small chat set packed into windows of 96."""
    root = tmp_path_factory.mktemp("sft-world")
    data = prepared(root)
    base = root / "base"
    assert (
        train(smoke_args(data, base, "model.ctx=128", "train.steps=2", "eval.every=2", "ckpt.every=2")) == 0
    )
    sft = root / "sft"
    prepare_sft([CHAT], sft, fmt="chat", pack_len=PACK, val_fraction=0.5)
    return {"base": base, "sft": sft, "text": data, "root": root}


def _sft(world: dict[str, Path], out: Path, *sets: str) -> list[str]:
    argv = ["sft", "--data", str(world["sft"]), "--init-from", str(world["base"]), "--out", str(out)]
    for item in [*SFT_STEPS, *sets]:
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="module")
def sft_run(world: dict[str, Path]) -> Path:
    out = world["root"] / "sft-run"
    assert main(_sft(world, out, "train.steps=4")) == 0
    return out


@pytest.mark.holds("GATE-INTEG-001")
def test_an_sft_record_made_today_shows_every_check_its_kind_asks_for(
    world: dict[str, Path], sft_run: Path
) -> None:
    assert findings(sft_run, world["base"]) == []


@pytest.mark.holds("GATE-INTEG-001")
def test_an_sft_run_on_a_small_held_out_set_shows_every_check(world: dict[str, Path], tmp_path: Path) -> None:
    """A held-out set of 2 batches needs no waiver (GATE-EVAL-001 rev 6): the run trains, early
    stopping off where the loss is too noisy for it, and the checks the gate makes at each
    evaluation (what it read, in which precision, how noisy) are in the record, which the integrity
    check asks of every completed sft run."""
    out = tmp_path / "small"
    assert main(_sft(world, out, "train.steps=4", "eval.batches=2")) == 0
    assert verdicts(out)["GATE-EVAL-001"] == "PASS"
    assert findings(out, world["base"]) == []


@pytest.mark.gate("GATE-INTEG-001")
@each_required_check("sft", SMOKE_OPTIONS)
def test_each_check_an_sft_record_must_show_taken_out_is_caught(
    sft_run: Path, tmp_path: Path, gate_id: str, check: str
) -> None:
    """The values only that check holds taken out (GATE-SFT-003's start-up isolation among them):
    a completed run may not show a check as never run."""
    assert_check_required(sft_run, tmp_path / "out", "sft", gate_id, check)


def _model(path: str = "sdpa") -> GPT:
    config = ModelConfig(vocab=257, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=64, ctx=64)
    return GPT(config.model_copy(update={"attention": path}), seed=0).eval()


# -- the objective registry ------------------------------------------------------------------


def test_an_unset_task_is_pretraining_and_sft_is_registered() -> None:
    assert objective_for(None).name == "pretrain"
    assert objective_for("sft").name == "sft" and set(OBJECTIVES) >= {"pretrain", "sft"}
    with pytest.raises(BadInput, match=r"unknown train\.task 'nope'"):
        objective_for("nope")


# -- GATE-SFT-003: packing isolation ---------------------------------------------------------


@pytest.mark.holds("GATE-SFT-003")
@pytest.mark.parametrize("path", ["naive", "sdpa"])
def test_rewriting_one_example_leaves_the_other_exactly_as_it_was(path: str) -> None:
    model = _model(path)
    tokens = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1))
    outcome = isolation_outcome(lambda idx, docs: model(idx, docs=docs)[0], tokens, 257)
    assert outcome.ok and outcome.measured["max_abs_logit_diff"] == 0.0
    check_isolation(lambda idx, docs: model(idx, docs=docs)[0], tokens, 257)


@pytest.mark.gate("GATE-SFT-003")
def test_a_batch_that_drops_its_document_ids_fires() -> None:
    """The planted bug: the collator packs examples but the forward gets no document ids."""
    model = _model()
    tokens = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1))
    with pytest.raises(GateViolation) as fired:
        check_isolation(lambda idx, docs: model(idx)[0], tokens, 257)
    assert fired.value.gate_id == "GATE-SFT-003" and "attention crosses examples" in str(fired.value)


@pytest.mark.gate("GATE-SFT-003")
def test_a_difference_just_beyond_the_threshold_fires_and_just_inside_holds() -> None:
    limit = float(load_spec().threshold("GATE-SFT-003", "max_abs_logit_diff"))
    assert not measure("GATE-SFT-003", {"max_abs_logit_diff": limit * 1.01, "positions_compared": 8}).ok
    assert measure("GATE-SFT-003", {"max_abs_logit_diff": limit * 0.99, "positions_compared": 8}).ok


def test_the_document_mask_is_the_same_on_naive_and_sdpa_and_triton_refuses_it() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 12, 8, generator=generator) for _ in range(3))
    docs = torch.tensor([[1] * 5 + [2] * 4 + [0] * 3, [1] * 12])
    scale = softmax_scale(8)
    naive = naive_attention(q, k, v, causal=True, scale=scale, docs=docs)
    sdpa = sdpa_attention(q, k, v, causal=True, scale=scale, docs=docs)
    torch.testing.assert_close(naive, sdpa, atol=1e-6, rtol=1e-5)
    # One document per row is plain causal attention.
    torch.testing.assert_close(naive[1], naive_attention(q, k, v, causal=True, scale=scale)[1])
    with pytest.raises(BadInput, match="no document mask"):
        triton_attention(q, k, v, causal=True, scale=scale, docs=docs)


# -- the loss --------------------------------------------------------------------------------


def test_the_loss_ignores_padding_and_prompt_targets(world: dict[str, Path]) -> None:
    """Rewriting padding changes nothing; the loss counts exactly the supervised targets."""
    sft = objective_for("sft")
    batch = sft_heldout_batches(world["sft"], 2, PACK, 2)[0]
    model = GPT(
        ModelConfig(vocab=257, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=64, ctx=128),
        seed=0,
    ).eval()
    padding = (batch.labels >> 1) == 0
    assert bool(padding.any())
    rewritten = SftBatch(torch.where(padding, torch.full_like(batch.tokens, 65), batch.tokens), batch.labels)
    with torch.no_grad():
        before, after = sft.loss(model, model, batch), sft.loss(model, model, rewritten)
    assert torch.equal(before.logged, after.logged)
    assert int(before.metrics["supervised_tokens"]) == int((batch.targets >= 0).sum()) > 0


def _counting_one_more(real: Callable[..., tuple[Any, Any, int]]) -> Callable[..., tuple[Any, Any, int]]:
    """A prepare whose manifest counts one supervised token more than its labels hold (the count
    of a packer that counts its padding), the labels themselves honest."""

    def planted(*args: Any) -> tuple[Any, Any, int]:
        shards, labels, supervised = real(*args)
        return shards, labels, supervised + 1 if supervised else 0

    return planted


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_manifest_count_one_past_the_statement_stops_stack_sft_at_set_up(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every step's targets would match their statement, and GATE-SFT-001 holds of every example;
    only the statement read over each split against the manifest's count shows the token too many,
    before anything of the run is written."""
    with monkeypatch.context() as planted:
        planted.setattr(sft_prepare, "_write_split", _counting_one_more(sft_prepare._write_split))
        prepare_sft([CHAT], tmp_path / "data", fmt="chat", pack_len=PACK, val_fraction=0.5)
    counted = load_manifest(tmp_path / "data").sft.supervised_tokens  # type: ignore[union-attr]
    out = tmp_path / "run"
    code = main(_sft({**world, "sft": tmp_path / "data"}, out, "train.steps=2"))
    err = capsys.readouterr().err
    assert code == 3 and "GATE-TRAIN-007" in err and "step 1/" not in err and not out.exists(), err
    stated = counted["train"] - 1
    assert f"the batches state {stated} target(s) where the manifest counts {counted['train']}" in err


@pytest.mark.holds("GATE-TRAIN-007")
def test_the_statement_over_each_split_names_the_manifests_supervised_tokens(sft_run: Path) -> None:
    measured = next(g for g in evidence(sft_run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert measured["stated_split_targets"] == measured["split_supervised_tokens"]
    assert all(measured["split_supervised_tokens"].values())


# -- `stack sft` end to end ------------------------------------------------------------------


@pytest.mark.holds("GATE-SFT-001")
@pytest.mark.holds("GATE-SFT-002")
@pytest.mark.holds("GATE-SFT-003")
def test_stack_sft_judges_every_gate_of_its_kind(sft_run: Path) -> None:
    record = evidence(sft_run)
    assert record["run"]["kind"] == "sft" and record["run"]["status"] == "completed"
    assert record["config"]["train"]["task"] == "sft"
    assert unjudged(sft_run, "sft") == {}
    assert {verdicts(sft_run)[g] for g in ("GATE-SFT-001", "GATE-SFT-002", "GATE-SFT-003")} == {"PASS"}
    lines = step_lines(sft_run)
    assert len(lines) == 4 and all(line["supervised_tokens"] > 0 for line in lines)


def test_a_resumed_sft_run_continues_bit_for_bit(
    world: dict[str, Path], sft_run: Path, tmp_path: Path
) -> None:
    half = tmp_path / "half"
    assert main(_sft(world, half, "train.steps=2")) == 0
    assert main(["sft", "--resume", str(half), "--set", "train.steps=4"]) == 0
    keys = ("loss", "grad_norm", "batch_sha256", "supervised_tokens")
    whole = [{k: line[k] for k in keys} for line in step_lines(sft_run)]
    resumed = [{k: line[k] for k in keys} for line in step_lines(half)]
    assert resumed == whole
    # the resumed leg started from the base's weights as the whole run did (GATE-DATA-004 rev 2:
    # judged on repeats alone), and the checker derives that start from the record
    (adequacy,) = [g for g in evidence(half)["gates"] if g["id"] == "GATE-DATA-004"]
    assert adequacy["measured"]["start_from"] == "checkpoint" and adequacy["verdict"] == "PASS"
    assert findings(half, world["base"]) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sft", "--data", "{sft}", "--out", "{out}", "--set", "train.steps=1"], "pass --init-from"),
        (
            ["sft", "--data", "{text}", "--init-from", "{base}", "--out", "{out}", "--set", "train.steps=1"],
            "is a prepared DATA_DIR of pretraining text (written by `stack prepare`); `stack sft --data`",
        ),
        (
            [
                "sft",
                "--data",
                "{sft}",
                "--init-from",
                "{base}",
                "--out",
                "{out}",
                "--set",
                "train.task=pretrain",
            ],
            "drop --set train.task",
        ),
        (
            ["train", "--data", "{sft}", "--out", "{out}", "--preset", "smoke", "--set", "train.task=sft"],
            "pass --init-from",
        ),
        (
            ["train", "--data", "{text}", "--out", "{out}", "--preset", "smoke", "--set", "train.task=nope"],
            "unknown",
        ),
    ],
)
def test_bad_sft_runs_are_one_line_and_exit_2(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    places = {"sft": world["sft"], "text": world["text"], "base": world["base"], "out": tmp_path / "out"}
    code = main([a.format(**places) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.holds("GATE-SFT-003")
def test_the_isolation_check_fits_a_window_as_long_as_the_context(world: dict[str, Path]) -> None:
    sft = objective_for("sft")
    model = GPT(
        ModelConfig(vocab=257, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=64, ctx=PACK),
        seed=0,
    )
    assert sft.window(world["sft"], PACK) == PACK
    sft.start(model, sft.heldout(world["sft"], 1, PACK, 1))
    with pytest.raises(BadInput, match="longer than the model's ctx"):
        sft.window(world["sft"], PACK - 1)


def test_an_unset_task_leaves_a_pretraining_config_and_its_hash_as_they_were() -> None:
    from stack.train.config import resolve

    plain = resolve("smoke", None, [], vocab=257)
    assert "task" not in plain.as_dict()["train"]
    assert resolve("smoke", None, ["train.task=sft"], vocab=257).sha256 != plain.sha256


@pytest.mark.holds("GATE-TRAIN-003")
def test_an_fp16_fine_tune_whose_first_scaled_gradients_overflow_trains_on(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """LoRA adapters on every projection in fp16: the first scaled gradients overflow, the scaler
    skips those steps and halves its scale, and the run trains on from there rather than halt at
    step 1 for an overflow the scaler skips."""
    out = tmp_path / "fp16"
    sets = ("train.steps=12", "train.precision='fp16'", "lora.r=2", "lora.targets='*'", "train.batch_size=1")
    assert main(_sft(world, out, *sets, "eval.every=12", "ckpt.every=12", "monitor.sample_every=12")) == 0
    lines = step_lines(out)
    assert not math.isfinite(lines[0]["grad_norm"]) and math.isfinite(lines[-1]["grad_norm"])
    assert lines[-1]["loss_scale"] < lines[0]["loss_scale"] and verdicts(out)["GATE-TRAIN-003"] == "PASS"
    assert findings(out, world["base"]) == []


@pytest.mark.gate("GATE-EVAL-002")
def test_an_sft_held_out_set_sized_by_the_default_not_eval_batches_stops_the_run(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the SFT objective, the loop hands `heldout` no eval.batches, so the set is
    the spec minimum's, not the 2 batches the config asks for. GATE-EVAL-002's check asked, in the
    loop every objective shares, stops the run."""
    heldout = Sft.heldout

    def dropped(self: Sft, data_dir: Path, batch_size: int, seq_len: int, n: int | None) -> list[Any]:
        return heldout(self, data_dir, batch_size, seq_len, None)

    monkeypatch.setattr(Sft, "heldout", dropped)
    out = tmp_path / "run"
    assert main(_sft(world, out, "train.steps=4", "eval.batches=2")) == 3
    assert verdicts(out)["GATE-EVAL-002"] == "FAIL"
