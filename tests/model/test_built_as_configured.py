"""The model is built as its config says, through the real commands: planted, a model built otherwise
than its config and a mixture that ignores its configured top_k.

GATE-MODEL-003's check structure holds every parameter the model registers (name, shape, whether it
trains) at step 0 to contracts.model_parameters.implied_parameters of the run's resolved config;
each of four such mutants trained with exit 0 and every in-run gate green before it. One (a
mixture ignoring its top_k) crashed with a traceback inside GATE-ARCH-003's one-expert probe;
GATE-ARCH-003 rev 3 judges the configured mixture against its definition at the configured top_k
first, so the run stops on the gate (exit 3) before that probe runs.
Each bug is planted here, in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord
from contracts.gates import measure
from contracts.model_parameters import implied_parameters
from contracts.spec import load_spec
from stack.cli import main
from stack.model import moe as moe_module
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.lora import apply_lora
from stack.model.structure import held_parameters
from stack.train import lora_setup
from tests.support.paths import DATA
from tests.support.train_support import prepared, smoke_args, train, verdicts
from tools.integrity.record_checks import check_record_truth

STEPS = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
TWO_BLOCKS = ["model.n_layers=2", "model.ctx=64"]
LORA_ALL = ["lora.r=4", "lora.alpha=8", "lora.targets='q,k,v,attn_out'", "lora.dropout=0.1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DATA_DIR, a two-block base run, and chat data in its tokenizer for `stack sft`."""
    root = tmp_path_factory.mktemp("arch")
    data, base, chat = prepared(root), root / "base", root / "chat"
    assert train(smoke_args(data, base, *TWO_BLOCKS, *STEPS)) == 0
    prepare = ["prepare", str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "64"]
    assert main([*prepare, "--val-fraction", "0.5", "--tokenizer", str(base), "--out", str(chat)]) == 0
    return {"data": data, "base": base, "chat": chat}


def _halted(code: int, err: str, gate: str, *said: str) -> None:
    """Exit 3 with a message naming `gate` and every phrase of `said`."""
    assert code == 3, err
    assert gate in err, err
    for phrase in said:
        assert phrase in err, err


# -- the planted bugs: each a model built otherwise than its config -------------------------------


def _without_shared_expert(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: `self.shared = None` whatever moe_shared_expert says."""
    built = moe_module.MoE.__init__

    def init(self: moe_module.MoE, config: ModelConfig) -> None:
        built(self, config)
        self.shared = None

    monkeypatch.setattr(moe_module.MoE, "__init__", init)


def _always_tied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: `if config.tie_embeddings:` → `if True:`, the head the embedding's tensor."""
    built = GPT.__init__

    def init(self: GPT, config: ModelConfig, *, seed: int | None = None) -> None:
        built(self, config, seed=seed)
        self.lm_head.weight = self.embed.weight

    monkeypatch.setattr(GPT, "__init__", init)


def _first_block_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: `index % mod_every == mod_every - 1` → `== 0`."""
    monkeypatch.setattr(
        ModelConfig, "mod_block", lambda self, index: self.mod_every > 0 and index % self.mod_every == 0
    )


def _adapters_on_q_v(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the adapters applied on "q,v" whatever lora.targets names."""
    monkeypatch.setattr(
        lora_setup, "apply_lora", lambda model, _targets, *a, **k: apply_lora(model, "q,v", *a, **k)
    )


def _top_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: `self.top_k = config.moe_top_k` → `2`."""
    built = moe_module.MoE.__init__

    def init(self: moe_module.MoE, config: ModelConfig) -> None:
        built(self, config)
        self.top_k = 2

    monkeypatch.setattr(moe_module.MoE, "__init__", init)


TRAIN_PLANTS = {
    "shared expert dropped": (
        _without_shared_expert,
        ["model.moe_experts=4", "model.moe_shared_expert=true", "model.moe_balance_coef=0.1"],
        "layers.0.moe.shared.gate.weight",
    ),
    "untied model built tied": (
        _always_tied,
        [*TWO_BLOCKS, "model.tie_embeddings=false"],
        "lm_head.weight",
    ),
    "wrong block routed": (
        _first_block_routed,
        [*TWO_BLOCKS, "model.mod_every=2", "model.mod_capacity=0.25"],
        "layers.0.router.weight",
    ),
}


@pytest.mark.gate("GATE-MODEL-003")
@pytest.mark.parametrize("plant", list(TRAIN_PLANTS))
def test_a_model_built_otherwise_than_its_config_stops_train_at_step_0(
    plant: str,
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    planted, sets, named = TRAIN_PLANTS[plant]
    planted(monkeypatch)
    run = tmp_path / "run"
    code = train(smoke_args(runs["data"], run, *sets, *STEPS))
    _halted(code, capsys.readouterr().err, "GATE-MODEL-003", named, "not built as its config names")
    assert not (run / "metrics.jsonl").exists()  # refused at set-up: no step was taken


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize("plant", list(TRAIN_PLANTS))
def test_the_same_runs_unplanted_pass_and_state_their_structure(
    plant: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(runs["data"], run, *TRAIN_PLANTS[plant][1], *STEPS)) == 0
    assert verdicts(run)["GATE-MODEL-003"] == "PASS"
    measured = _measured(run, "GATE-MODEL-003")
    assert measured["parameters_held"] == measured["parameters_named"]


def _lora_argv(command: str, runs: dict[str, Path], out: Path) -> list[str]:
    """`stack train --init-from BASE` or `stack sft` with adapters on q, k, v and attn_out."""
    if command == "train":
        return [*smoke_args(runs["data"], out, *STEPS, *LORA_ALL), "--init-from", str(runs["base"])]
    quick = ["train.device='cpu'", "train.batch_size=1", *STEPS, *LORA_ALL]
    sets = [arg for item in quick for arg in ("--set", item)]
    return ["sft", "--data", str(runs["chat"]), "--init-from", str(runs["base"]), "--out", str(out), *sets]


@pytest.mark.gate("GATE-MODEL-003")
@pytest.mark.parametrize("command", ["train", "sft"])
def test_adapters_on_fewer_matrices_than_lora_targets_stop_the_run_at_step_0(
    command: str,
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: adapters on q and v of q,k,v,attn_out; the selection the run records still says four."""
    _adapters_on_q_v(monkeypatch)
    code = main(_lora_argv(command, runs, tmp_path / "run"))
    _halted(
        code, capsys.readouterr().err, "GATE-MODEL-003", "layers.0.attn.k.lora_A", "layers.0.attn.o.lora_B"
    )


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize("command", ["train", "sft"])
def test_adapters_on_every_target_pass(command: str, runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(_lora_argv(command, runs, run)) == 0
    measured = _measured(run, "GATE-MODEL-003")
    trained = sorted(name for name, p in measured["parameters_named"].items() if p["trainable"])
    kinds = ("q", "k", "v", "o")
    assert trained == sorted(f"layers.{i}.attn.{k}.lora_{m}" for i in range(2) for k in kinds for m in "AB")
    assert measured["parameters_held"] == measured["parameters_named"]


@pytest.mark.gate("GATE-ARCH-003")
def test_a_mixture_routing_top_2_for_top_3_stops_on_the_gate_before_the_one_expert_probe(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the module's top_k 2 for moe_top_k 3. It crashed inside the one-expert probe (topk of 2
    from one expert); the configured mixture, written out at top 3, is judged first and fires."""
    _top_2(monkeypatch)
    run = tmp_path / "run"
    code = train(smoke_args(runs["data"], run, "model.moe_experts=4", "model.moe_top_k=3", *STEPS))
    err = capsys.readouterr().err
    _halted(code, err, "GATE-ARCH-003", "the mixture of 4 experts, top 3 differs")
    assert "Traceback" not in err


@pytest.mark.holds("GATE-ARCH-003")
def test_a_top_3_mixture_unplanted_trains(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = ["model.moe_experts=4", "model.moe_top_k=3", "model.moe_balance_coef=0.1", *STEPS]
    assert train(smoke_args(runs["data"], run, *sets)) == 0
    assert verdicts(run)["GATE-ARCH-003"] == "PASS"


# -- the judge, the statute and the checker ----------------------------------------------------


@pytest.mark.gate("GATE-MODEL-003")
def test_a_base_parameter_left_trainable_or_reshaped_fires() -> None:
    config = ModelConfig(vocab=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_hidden=48, ctx=32)
    model = GPT(config)
    apply_lora(model, "q,v", 4, 8.0)
    named = implied_parameters(config.model_dump(), {"targets": "q,v", "r": 4})
    held = held_parameters(model)
    assert measure("GATE-MODEL-003", {"parameters_held": held, "parameters_named": named}).ok
    model.layers[0].attn.k.weight.requires_grad_(True)  # a base matrix the optimizer would step
    outcome = measure(
        "GATE-MODEL-003", {"parameters_held": held_parameters(model), "parameters_named": named}
    )
    assert not outcome.ok and "layers.0.attn.k.weight True (config: False)" in outcome.message
    held["layers.0.attn.q.lora_A"] = {"shape": [8, 32], "trainable": True}  # rank 8 for the stated 4
    outcome = measure("GATE-MODEL-003", {"parameters_held": held, "parameters_named": named})
    assert (
        not outcome.ok
        and "differ in shape: layers.0.attn.q.lora_A [8, 32] (config: [4, 32])" in outcome.message
    )


OPTIONS = st.fixed_dictionaries(
    {
        "moe": st.sampled_from(
            [
                {},
                {"moe_experts": 3, "moe_top_k": 2},
                {"moe_experts": 2, "moe_top_k": 1, "moe_shared_expert": True},
            ]
        ),
        "tie": st.sampled_from([{}, {"tie_embeddings": False}]),
        "diff": st.sampled_from([{}, {"diff_attn": True}]),
        "mod": st.sampled_from(
            [{}, {"mod_every": 2, "mod_capacity": 0.5}, {"mod_every": 1, "mod_capacity": 0.25}]
        ),
        "bias": st.sampled_from([{}, {"qkv_bias": True}]),
        # Qwen3's attention: heads 12 wide where 32 / 4 is 8, q and k normed per head
        "qwen3": st.sampled_from([{}, {"qk_norm": True, "head_dim": 12}]),
        "kv": st.sampled_from([1, 2, 4]),
        "layers": st.integers(2, 3),
    }
)
TARGETS = [
    None,
    "q,v",
    "q,k,v,attn_out",
    "ffn_*",
    "*",
    "q_proj,o_proj,down_proj",
    "router,moe.router",
    "moe.expert*",
    "q2,k2",
    "layers.1.q",
    "logits",
]


@settings(max_examples=60)
@given(options=OPTIONS, targets=st.sampled_from(TARGETS))
def test_the_stack_builds_exactly_what_the_statute_implies_for_every_option(
    options: dict[str, Any], targets: str | None
) -> None:
    """Every option and LoRA target list: `named_parameters()` of the model the stack builds (and
    adapts) is `implied_parameters` of its config, names, shapes and trainable flags."""
    table = {
        "vocab": 64,
        "d_model": 32,
        "n_heads": 4,
        "ffn_hidden": 48,
        "ctx": 32,
        "n_kv_heads": options["kv"],
    }
    table |= (
        {"n_layers": options["layers"]} | options["moe"] | options["tie"] | options["diff"] | options["mod"]
    )
    table |= options["bias"]
    assume(not (options["diff"] and options["qwen3"]))  # refused together (no head norms per branch)
    config = ModelConfig(**table | options["qwen3"])
    model, lora = GPT(config), None
    if targets is not None:
        try:
            apply_lora(model, targets, 4, 8.0)
        except BadInput:  # a target this model has no matrix for (q2 without diff_attn): refused
            return
        lora = {"targets": targets, "r": 4}
    assert held_parameters(model) == implied_parameters(config.model_dump(), lora)


def test_the_checker_derives_the_stated_structure_from_config_toml(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A record whose parameters_named were edited to agree with a model that lacks its head is
    flagged by the checker, which writes the list out again from config.toml."""
    run = tmp_path / "run"
    assert train(smoke_args(runs["data"], run, *TWO_BLOCKS, "model.tie_embeddings=false", *STEPS)) == 0
    record = EvidenceRecord.model_validate_json((run / "metadata.json").read_text())
    assert not check_record_truth(record, run, load_spec()).violations
    data = json.loads(record.model_dump_json())
    gate = next(g for g in data["gates"] if g["id"] == "GATE-MODEL-003")
    for key in ("parameters_named", "parameters_held"):
        del gate["measured"][key]["lm_head.weight"]
    findings = check_record_truth(EvidenceRecord.model_validate(data), run, load_spec())
    assert any(
        v.startswith("gates[GATE-MODEL-003].measured.parameters_named is") for v in findings.violations
    ), findings.violations


def _measured(run: Path, gate_id: str) -> dict[str, Any]:
    record = json.loads((run / "metadata.json").read_text())
    return next(g["measured"] for g in record["gates"] if g["id"] == gate_id)
