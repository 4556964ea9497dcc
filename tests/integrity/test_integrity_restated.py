"""Falsifiers of what a training record restates: values its config, its model's shape or its log decide.

A gate's measured values include settings the run was given and counts its model or its log fix:
the device, the tensors a checkpoint holds and the optimizer steps, the logits a probe compares,
the initialisation each parameter was drawn at, the draws the monitor made, the held-out batches
an evaluation read, the step the reader was at. A forger who edits one of them (and whatever the
gate's judge reads beside it, so the verdict stands) leaves the record consistent with itself; the
integrity check derives each again from config.toml, the model's shape (contracts.model_shape,
contracts.model_init) and metrics.jsonl (contracts/derive/restated.py, training.py). So do the
log lines the config schedules (checkpoints, phase switches, epochs) and the formulas an
objective's terms obey (a distillation's loss, a DPO margin), and every gate's message, which is
its judge's problems. Each test plants one such edit in a copy of a real record, re-hashing the
artifacts as a forger would, and asserts the check names the field; a value held within a
tolerance is planted just past it, and just inside it stands.

The pretraining record is the ledger's CURRENT_RUN (a mixture of experts under a bandit policy and
a curriculum phase); sft (with LoRA), dpo and distill records are made by this checkout in a
module fixture, since the ledger's are of specs older than the values derived here.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from contracts.checkpoint_layout import model_file_bytes, optimizer_file_bytes
from contracts.derive.training import FLOAT32_U, kd_loss, kd_roundings, margin_slack
from contracts.evidence import EVIDENCE_FILE
from contracts.model_parameters import lora_touched
from contracts.model_shape import model_file_tensors, trained_tensors
from contracts.spec import load_spec
from stack.cli import main
from stack.model import GPT, ModelConfig
from stack.model.lora import apply_lora
from stack.train.checkpoint import optimizer_tensors
from stack.train.config import LoraSection, RunConfig, TrainSection
from stack.train.loop import build_optimizer
from tests.support.ledger_support import (
    CURRENT_RUN,
    RECORDS,
    Change,
    assert_caught,
    edited,
    findings,
    gate,
    log_lines,
    planted,
    rederive,
    write_log,
)
from tests.support.paths import DATA
from tests.support.prefs_support import prepared_pairs
from tests.support.train_support import prepared, smoke_args, train

CHAT = DATA / "chat_small.jsonl"
Edit = Callable[[dict[str, Any]], None]
# An edit of a run's log lines, given its config.
LogEdit = Callable[[list[dict[str, Any]], dict[str, Any]], None]


def measured(gate_id: str, **values: Any) -> Change:
    """A gate's measured values set as given."""
    return lambda data, _dir: gate(data, gate_id)["measured"].update(values)


def logged(edit: LogEdit) -> Change:
    """metrics.jsonl edited, and every field it derives re-derived: a perfect forger's edit."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        edit(lines, tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")))
        write_log(run_dir, lines)
        rederive(data, run_dir)

    return change


def step_line(lines: list[dict[str, Any]], step: int) -> dict[str, Any]:
    return next(line for line in lines if line.get("type") == "step" and line["step"] == step)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke run (`base`), and from it a LoRA fine-tune on chat examples (`stack sft`, adapters on
    q and v), a DPO run and a distillation into a smoke student, each of a few steps on CPU."""
    root = tmp_path_factory.mktemp("tuned")
    text, chat, base = prepared(root), root / "chat", root / "base"
    halves = ["--val-fraction", "0.5", "--pack-len", "96"]
    assert main(["prepare", str(CHAT), "--format", "chat", *halves, "--out", str(chat)]) == 0
    assert train(smoke_args(text, base, "model.ctx=96")) == 0
    runs = {"base": base, "sft": root / "sft", "dpo": root / "dpo", "distill": root / "distill"}
    quick = ["train.steps=3", "eval.every=3", "train.device='cpu'", "train.batch_size=1"]
    lora = ["lora.r=4", "lora.targets='q,v'"]
    sets = [f"--set={item}" for item in (*quick, *lora)]
    assert (
        train(["sft", "--init-from", str(base), "--out", str(runs["sft"]), "--data", str(chat), *sets]) == 0
    )
    pairs = ["--data", str(prepared_pairs(root)), "--steps", "3", "--batch-size", "1", "--device", "cpu"]
    assert main(["dpo", str(base), "--out", str(runs["dpo"]), *pairs]) == 0
    student = [
        "--data",
        str(text),
        "--preset",
        "smoke",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    assert main(["distill", str(base), "--out", str(runs["distill"]), *student]) == 0
    return runs


def tuned_copy(tuned: dict[str, Path], kind: str, tmp_path: Path, change: Change) -> Path:
    """A copy of the `kind` run with `change` planted."""
    return edited(Path(shutil.copytree(tuned[kind], tmp_path / kind)), change)


def assert_tuned_caught(tuned: dict[str, Path], run: Path, *fragments: str) -> None:
    """The copy is caught, checked with the run its lineage starts from."""
    found = findings(run, tuned["base"])
    assert any(all(f in line for f in fragments) for line in found), "\n".join(found) or "(nothing found)"


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("kind", ["sft", "dpo", "distill"])
def test_the_tuning_runs_made_today_agree_with_what_they_restate(tuned: dict[str, Path], kind: str) -> None:
    """The runs the falsifiers below edit pass untouched: their tensor counts, probes, windows,
    checkpoint files and objective terms are what this checkout derives."""
    assert findings(tuned[kind], tuned["base"]) == []


# -- group 4: what the config or the model's shape decides ---------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_device_other_than_the_config_names_is_caught(tmp_path: Path) -> None:
    """CURRENT_RUN's config says train.device = "cpu": a record claiming CUDA ran elsewhere."""
    run = planted(tmp_path, CURRENT_RUN, lambda d, _: d["env"].update(device="cuda", cuda="12.4"))
    assert_caught(run, 'env.device is "cuda", but its artifacts derive "cpu"')


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            measured("GATE-CKPT-001", weights_compared=40),
            "weights_compared is 40, but its artifacts derive 21",
        ),
        (
            measured("GATE-TRAIN-008", updated_parameters=40, stepped_parameters=40, moved_parameters=40),
            "updated_parameters is 40, but its artifacts derive 21",
        ),
        (
            measured("GATE-TRAIN-008", stepped_parameters=22, moved_parameters=22),
            "stepped_parameters is 22, more than the 21 tensors the optimizer steps",
        ),
        (
            measured("GATE-TRAIN-008", stepped_parameters=21, moved_parameters=22),
            "moved_parameters is 22, more than the 21 stepped_parameters",
        ),
        (
            measured("GATE-TRAIN-008", start_tensors=21),
            "start_tensors is 21, but its artifacts derive 22",
        ),
    ],
    ids=["weights-compared", "updated", "stepped-past-updated", "moved-past-stepped", "start"],
)
def test_tensor_counts_the_model_shape_contradicts_are_caught(
    tmp_path: Path, change: Change, fragment: str
) -> None:
    """CURRENT_RUN's model (one block of four experts, tied head) has 21 parameter tensors, and the
    state dict it was drawn as from the seed 22 entries (the tied head under both keys)."""
    assert_caught(planted(tmp_path, CURRENT_RUN, change), "gates[GATE-", fragment)


@pytest.mark.holds("GATE-INTEG-001")
def test_fewer_stepped_tensors_than_trained_stand(tmp_path: Path) -> None:
    """A probe may find gradients that are all zeros (a clip of 0, a β of 0): fewer tensors stepped,
    and moved, than the optimizer holds is a bound kept, not a contradiction."""
    run = planted(
        tmp_path, CURRENT_RUN, measured("GATE-TRAIN-008", stepped_parameters=20, moved_parameters=20)
    )
    assert findings(run) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_draws_other_than_the_monitors_prompts_and_tokens_make_are_caught(tmp_path: Path) -> None:
    """Three prompts of 16 tokens each: 48 draws per sampling round."""
    run = planted(tmp_path, CURRENT_RUN, measured("GATE-TRAIN-005", draws=4800))
    assert_caught(run, "gates[GATE-TRAIN-005].measured.draws is 4800, but its artifacts derive 48")


def scaled_std(name: str, std: float) -> Change:
    """Parameter `name`'s named std, mean and rms in GATE-MODEL-003's init scaled to `std`: the
    judge's z-scores unchanged, the record of a model drawn at another scale."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        values = gate(data, "GATE-MODEL-003")["measured"]["init"][name]
        factor = std / values["named_std"]
        values.update(named_std=std, mean=values["mean"] * factor, rms=values["rms"] * factor)

    return change


def init_edited(edit: Edit) -> Change:
    return lambda data, _dir: edit(gate(data, "GATE-MODEL-003")["measured"]["init"])


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            scaled_std("embed.weight", 0.05),
            "init.embed.weight.named_std is 0.05, but its artifacts derive 0.02",
        ),
        (
            scaled_std("layers.0.attn.o.weight", 0.02),  # a residual writer: 0.02 / sqrt(2 n_layers)
            "init.layers.0.attn.o.weight.named_std is 0.02, but its artifacts derive 0.01414",
        ),
        (
            init_edited(lambda init: init.pop("layers.0.moe.expert3.down.weight")),
            "init.layers.0.moe.expert3.down.weight.named_std is (absent), but its artifacts derive",
        ),
        (
            init_edited(lambda init: init["layers.0.attn.q.weight"].update(elements=4096)),
            "init.layers.0.attn.q.weight.elements is 4096, but its artifacts derive 1024",
        ),
        (
            init_edited(lambda init: init.update({"layers.1.attn.q.weight": init["layers.0.attn.q.weight"]})),
            "init names layers.1.attn.q.weight, which the model of its config.toml does not have",
        ),
    ],
    ids=["std", "residual-std", "tensor-left-out", "elements", "tensor-added"],
)
def test_an_initialisation_other_than_the_model_names_is_caught(
    tmp_path: Path, change: Change, fragment: str
) -> None:
    run = planted(tmp_path, CURRENT_RUN, _at_current_revision(change))
    assert_caught(run, "gates[GATE-MODEL-003].measured.", fragment)


def _at_current_revision(change: Change) -> Change:
    """`change` on a record whose GATE-MODEL-003 is judged at the spec's revision, stating what that
    revision measures of a model of experts (the reference writes them out: checked, none skipped);
    CURRENT_RUN's is rev 4 until the records are refiled, and a gate of an older revision is stale."""

    def changed(data: dict[str, Any], run_dir: Path) -> None:
        result = gate(data, "GATE-MODEL-003")
        result["revision"] = load_spec().gates["GATE-MODEL-003"].revision
        result["measured"].update(checked=True, skipped_options=[])
        change(data, run_dir)

    return changed


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("record", [CURRENT_RUN, "current/eval", "current/export", "current/sample"])
def test_a_reference_comparison_denied_to_a_model_of_experts_is_caught(tmp_path: Path, record: str) -> None:
    """Since GATE-MODEL-003 rev 5 the reference writes out experts: a record saying it skipped them
    did not make the comparison its revision makes, whichever command judged the model (a training
    run, or an evaluation, an export or a sample of a checkpoint)."""
    skipped = measured("GATE-MODEL-003", checked=False, skipped_options=["moe"])
    run = planted(tmp_path, record, _at_current_revision(skipped))
    assert_caught(run, "gates[GATE-MODEL-003].measured.checked is false, but its artifacts derive true")
    assert_caught(
        run, 'gates[GATE-MODEL-003].measured.skipped_options is ["moe"], but its artifacts derive []'
    )


def file_bytes(name: str, size: int) -> Change:
    return lambda data, _dir: data["checkpoint"]["files"][name].update(bytes=size)


def file_size(name: str) -> int:
    """The size CURRENT_RUN's checkpoint file `name` has, as its config.toml's model decides it
    (every parameter trained)."""
    model = json.loads((RECORDS / CURRENT_RUN / "metadata.json").read_text())["config"]["model"]
    size = model_file_bytes(model) if name == "model.safetensors" else optimizer_file_bytes(model)
    assert size is not None
    return size


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("off", [-1, 1])
def test_a_checkpoint_file_a_byte_off_what_its_tensors_take_is_caught(
    tmp_path: Path, name: str, off: int
) -> None:
    size = file_size(name)
    run = planted(tmp_path, CURRENT_RUN, file_bytes(name, size + off))
    assert_caught(run, f"{name} is {size + off} bytes, but the safetensors file of", f"is {size} bytes")


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_checkpoint_file_of_the_size_its_tensors_take_stands(tmp_path: Path, name: str) -> None:
    run = planted(tmp_path, CURRENT_RUN, file_bytes(name, file_size(name)))
    assert findings(run) == []


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"qkv_bias": True, "tie_embeddings": False},
        {"moe_experts": 3},
        {"diff_attn": True, "mod_every": 2},
        {"qk_norm": True, "head_dim": 12},
    ],
    ids=["dense", "biased-untied", "experts", "differential-depth-routed", "qwen3-heads"],
)
def test_files_a_model_and_its_optimizer_save_have_the_sizes_the_check_derives(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """The files of a real model (with LoRA adapters on q and v where it is dense) and of AdamW's
    state after one step (stack.train.loop.build_optimizer), written as a checkpoint writes them:
    their tensors are the counts the check derives, their sizes, byte for byte, those
    contracts.checkpoint_layout gives."""
    config = ModelConfig(
        vocab=50, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=24, ctx=16, **options
    )
    model, table = GPT(config, seed=0), config.model_dump()
    touched: list[str] | None = None
    if not options:
        touched = lora_touched(table, "q,v")
        assert touched is not None and len(apply_lora(model, "q,v", r=2, alpha=4.0)) == len(touched)
    adapters, rank = (None, 0) if touched is None else (len(touched), 2)
    lora = None if touched is None else LoraSection(r=2, alpha=4.0, targets="q,v")
    run = RunConfig(model=config, train=TrainSection(steps=1), lora=lora)
    optimizer = build_optimizer(model, run, torch.device("cpu"))  # its groups number the state
    window = torch.arange(17).unsqueeze(0) % config.vocab  # a whole context: a routed block picks 2
    _, loss = model(window[:, :-1], window[:, 1:])
    assert loss is not None
    loss.backward()
    optimizer.step()
    save_model(model, str(tmp_path / "model.safetensors"))
    save_file(optimizer_tensors(optimizer)[0], str(tmp_path / "optimizer.safetensors"))
    assert len(load_file(str(tmp_path / "model.safetensors"))) == model_file_tensors(table, adapters or 0)
    assert len(load_file(str(tmp_path / "optimizer.safetensors"))) == 3 * trained_tensors(table, adapters)
    assert (tmp_path / "model.safetensors").stat().st_size == model_file_bytes(table, touched or (), rank)
    assert (tmp_path / "optimizer.safetensors").stat().st_size == optimizer_file_bytes(table, touched, rank)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (measured("GATE-LORA-001", elements=4 * 96 * 257), "gates[GATE-LORA-001].measured.elements is 98688"),
        (
            measured("GATE-CKPT-001", weights_compared=11),
            "weights_compared is 11, but its artifacts derive 17",
        ),
        (
            measured("GATE-TRAIN-008", updated_parameters=11),
            "updated_parameters is 11, but its artifacts derive 4",
        ),
        (measured("GATE-DATA-001", window_targets=384), "window_targets is 384, but its artifacts derive 96"),
        (
            measured("GATE-TRAIN-008", start_tensors=12),
            "start_tensors is 12, but its artifacts derive 11",
        ),
    ],
    ids=["probe-elements", "weights-compared", "updated", "window", "start"],
)
def test_an_sft_runs_adapter_counts_and_window_restated_otherwise_are_caught(
    tuned: dict[str, Path], tmp_path: Path, change: Change, fragment: str
) -> None:
    """The sft run: adapters on q and v of one block (2 adapters: 11 tensors and 2 × 3 of theirs in
    its model file, 4 trained), a probe of 32 ids over 257 logits, windows of pack_len 96; it starts
    from its --init-from checkpoint's 11 tensors."""
    assert_tuned_caught(tuned, tuned_copy(tuned, "sft", tmp_path, change), fragment)


@pytest.mark.gate("GATE-INTEG-001")
def test_matrices_an_sft_run_says_it_left_without_adapters_are_held_to_its_targets(
    tuned: dict[str, Path], tmp_path: Path
) -> None:
    def fewer(data: dict[str, Any], _dir: Path) -> None:
        selection = data["metrics"]["lora_matrices"]
        selection["skipped"] = [s for s in selection["skipped"] if "ffn" not in s["matrix"]]

    run = tuned_copy(tuned, "sft", tmp_path, fewer)
    assert_tuned_caught(tuned, run, "metrics.lora_matrices.skipped is", "but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("record", "gate_id"),
    [(CURRENT_RUN, "GATE-DATA-004"), ("options-matrix-20261124T202623", "GATE-ARCH-013")],
)
def test_a_message_other_than_its_judge_says_is_caught(tmp_path: Path, record: str, gate_id: str) -> None:
    """A gate's message is its judge's problems (none: no message), for every kind of record: a WARN
    reworded to reassure (CURRENT_RUN's corpus adequacy), or a PASS given a reason (an options
    matrix)."""
    run = planted(tmp_path, record, lambda data, _dir: gate(data, gate_id).update(message="within budget"))
    assert_caught(run, f"{gate_id}: its message is 'within budget', but its judge says")


# -- group 5: what the log decides --------------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            measured("GATE-TRAIN-008", logged_grad_norm=0.5, reference_grad_norm=0.5),
            "gates[GATE-TRAIN-008].measured.logged_grad_norm is 0.5, but its artifacts derive",
        ),
        (  # the wider gradient tolerance claimed by a run whose flags say only deterministic kernels ran
            measured("GATE-TRAIN-008", deterministic_kernels=False),
            "gates[GATE-TRAIN-008].measured.deterministic_kernels is false, but its artifacts derive true",
        ),
        (  # the gradient check judging nothing: a run in one process says its gradient was not compared
            measured("GATE-TRAIN-008", gradient_compared=False),
            "gates[GATE-TRAIN-008].measured.gradient_compared is false, but its artifacts derive true",
        ),
        (
            measured("GATE-EVAL-001", set_batches=32, scored_batches=32, scorings=32, stated_scorings=32),
            "gates[GATE-EVAL-001].measured.set_batches is 32, but its artifacts derive 16",
        ),
        (
            measured("GATE-EVAL-001", stated_windows=128, consumed_windows=128),
            "gates[GATE-EVAL-001].measured.stated_windows is 128, but its artifacts derive 64",
        ),
        (
            measured("GATE-EVAL-002", compared_losses=64),
            "gates[GATE-EVAL-002].measured.compared_losses is 64, but its artifacts derive 16",
        ),
        (
            lambda data, _dir: gate(data, "GATE-EVAL-002").update(step=30),
            "gates[GATE-EVAL-002].step is 30, but its artifacts derive 40",
        ),
        (
            measured("GATE-DATA-001", epoch=3),
            "gates[GATE-DATA-001].measured.epoch is 3, but its artifacts derive 0",
        ),
        (
            measured("GATE-DATA-001", step_in_epoch=9),
            "gates[GATE-DATA-001].measured.step_in_epoch is 9, but its artifacts derive 39",
        ),
        (
            measured("GATE-DATA-002", plan_windows=7846000),
            "gates[GATE-DATA-002].measured.plan_windows is 7846000, but its artifacts derive",
        ),
    ],
    ids=[
        "logged-grad-norm",
        "deterministic-kernels",
        "gradient-compared",
        "set-batches",
        "stated-windows",
        "compared-losses",
        "eval-002-step",
        "epoch",
        "step-in-epoch",
        "plan-windows",
    ],
)
def test_gate_values_the_log_contradicts_are_caught(tmp_path: Path, change: Change, fragment: str) -> None:
    """CURRENT_RUN's last step (40) is an evaluation's, probed, its gradient compared (one process);
    its evaluations read 16 held-out batches of 4 distinct windows each; its reader's epoch is far
    longer than its 40 steps."""
    assert_caught(planted(tmp_path, CURRENT_RUN, change), fragment)


# -- group 6: log lines the config schedules, and the objectives' formulas -----------------------


def without_checkpoint(step: int) -> LogEdit:
    def edit(lines: list[dict[str, Any]], _config: dict[str, Any]) -> None:
        lines[:] = [ln for ln in lines if not (ln.get("event") == "checkpoint" and ln["step"] == step)]

    return edit


def phase_moved(lines: list[dict[str, Any]], _config: dict[str, Any]) -> None:
    for line in lines:
        if line.get("event") == "phase":
            line["step"] = 31


def wrapped_early(lines: list[dict[str, Any]], _config: dict[str, Any]) -> None:
    """A wrap one step after the policy's last shares (from where the epoch length holds) and the
    steps from there on put in epoch 1, as if an epoch ended there."""
    last_shares = max(ln["step"] for ln in lines if ln.get("event") == "shares")
    at = lines.index(step_line(lines, last_shares + 1))
    lines.insert(at, {"type": "event", "step": last_shares + 1, "event": "wrap", "epoch": 1})
    for line in lines:
        if line.get("type") == "step" and line["step"] > last_shares:
            line["epoch"] = 1


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            without_checkpoint(20),
            "metrics.jsonl has no checkpoint event at step(s) [20], where ckpt.every=10",
        ),
        (without_checkpoint(40), "metrics.jsonl has no checkpoint event at step(s) [40]"),
        (
            phase_moved,
            "its phase events are at (phase, step) [(1, 31)], but data.phases after steps [20] switch",
        ),
        (
            wrapped_early,
            ", 1)], but the record's {steps_per_epoch} steps per epoch wrap at []",
        ),
        (
            wrapped_early,
            "is in epoch 1, but the record's {steps_per_epoch} steps per epoch put it in epoch 0",
        ),
    ],
    ids=["checkpoint-of-a-multiple", "checkpoint-of-the-last-step", "phase", "wrap", "epoch"],
)
def test_log_lines_the_config_schedules_otherwise_are_caught(
    tmp_path: Path, edit: LogEdit, fragment: str
) -> None:
    """CURRENT_RUN: 40 steps, ckpt.every = 10, one phase after step 20, under a bandit policy whose
    last shares came at step 21 or later (the epoch length holds from there, and no epoch ended
    before); its epochs are GATE-DATA-001's steps_per_epoch."""
    record = json.loads((RECORDS / CURRENT_RUN / EVIDENCE_FILE).read_text(encoding="utf-8"))
    steps_per_epoch = gate(record, "GATE-DATA-001")["measured"]["steps_per_epoch"]
    assert_caught(
        planted(tmp_path, CURRENT_RUN, logged(edit)), fragment.format(steps_per_epoch=steps_per_epoch)
    )


def kd_term_moved(by: float) -> LogEdit:
    """Step 2's kl moved so that its terms make a loss `by` slacks off the one it logs."""

    def edit(lines: list[dict[str, Any]], config: dict[str, Any]) -> None:
        line, alpha, temperature = (
            step_line(lines, 2),
            config["distill"]["alpha"],
            config["distill"]["temperature"],
        )
        value, scale = kd_loss(line["kl"], line["nll"], alpha, temperature)
        slack = kd_roundings(config["train"]["grad_accum"], 1) * FLOAT32_U * scale
        line["kl"] += (line["loss"] + by * slack - value) / (alpha * temperature**2)

    return edit


def margin_moved(by: float) -> LogEdit:
    """Step 2's margin `by` slacks off chosen − rejected reward."""

    def edit(lines: list[dict[str, Any]], _config: dict[str, Any]) -> None:
        line = step_line(lines, 2)
        chosen, rejected = line["chosen_reward"], line["rejected_reward"]
        line["margin"] = chosen - rejected + by * margin_slack(chosen, rejected)

    return edit


def scaled(key: str, factor: float) -> LogEdit:
    """Step 3's `key` scaled by `factor`, its other values left."""
    return lambda lines, _config: step_line(lines, 3).update({key: step_line(lines, 3)[key] * factor})


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("kind", "edit", "fragments"),
    [
        ("distill", kd_term_moved(1.5), ("step 2 logs loss", "but its kl")),
        ("distill", scaled("loss", 0.75), ("step 3 logs loss", "but its kl")),
        ("dpo", margin_moved(1.5), ("step 2 logs margin", "but its rewards make chosen − rejected")),
        ("dpo", scaled("margin", 2.0), ("step 3 logs margin", "but its rewards make chosen − rejected")),
    ],
    ids=["kd-just-past", "kd-lowered", "margin-just-past", "margin-doubled"],
)
def test_a_step_line_its_objectives_terms_contradict_is_caught(
    tuned: dict[str, Path], tmp_path: Path, kind: str, edit: LogEdit, fragments: tuple[str, ...]
) -> None:
    """A distillation's loss is α·T²·kl + (1 − α)·nll of the terms its line logs, to float32
    roundings; a DPO margin is its chosen minus its rejected reward, to MARGIN_RTOL."""
    assert_tuned_caught(tuned, tuned_copy(tuned, kind, tmp_path, logged(edit)), "metrics.jsonl: ", *fragments)


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(("kind", "edit"), [("distill", kd_term_moved(0.5)), ("dpo", margin_moved(0.5))])
def test_a_step_line_within_its_objectives_rounding_stands(
    tuned: dict[str, Path], tmp_path: Path, kind: str, edit: LogEdit
) -> None:
    run = tuned_copy(tuned, kind, tmp_path, logged(edit))
    assert findings(run, tuned["base"]) == []
