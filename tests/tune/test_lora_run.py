"""LoRA through the real commands: `stack train --init-from … --set lora.r=…`, its resume, its
adapter directory, `stack lora merge` of a run and of an adapter directory, and the merged model's
Hugging Face export (GATE-EXPORT-001).

One base run and one LoRA run are trained per module (a few seconds each on the smoke preset).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.model.gpt import GPT
from stack.model.lora import LoRALinear, adapter_sha256, base_sha256, has_lora
from stack.train import checkpoint as ckpt
from stack.train import lora_setup
from stack.train.trained import load_trained
from tests.support.ledger_support import findings
from tests.support.trace_support import save_run
from tests.support.train_support import (
    compiled_once,
    evidence,
    one_line_cli,
    prepared,
    smoke_args,
    train,
    unjudged,
    verdicts,
)
from tools.integrity.record_checks import check_record_truth

STEPS = ["train.steps=4", "eval.every=4", "ckpt.every=2", "ckpt.keep_last=4", "monitor.sample_every=4"]
LORA = ["lora.r=4", "lora.alpha=8", "lora.targets='q,v,ffn_*'", "lora.dropout=0.1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DATA_DIR, a base run, and a LoRA fine-tune of it."""
    root = tmp_path_factory.mktemp("lora")
    data = prepared(root)
    base, tuned = root / "base", root / "tuned"
    assert train(smoke_args(data, base, *STEPS)) == 0
    assert train([*smoke_args(data, tuned, *STEPS, *LORA), "--init-from", str(base)]) == 0
    return {"data": data, "base": base, "tuned": tuned}


@pytest.mark.holds("GATE-LORA-001", "GATE-LORA-004")
def test_a_lora_run_judges_its_gates_and_writes_its_adapter(runs: dict[str, Path]) -> None:
    tuned = runs["tuned"]
    assert unjudged(tuned, "finetune") == {}
    got = verdicts(tuned)
    assert got["GATE-LORA-001"] == got["GATE-LORA-004"] == "PASS"
    manifest = json.loads((tuned / "adapter" / "adapter.json").read_text())
    assert manifest["r"] == 4 and manifest["targets"] == "q,v,ffn_*"
    assert len(manifest["modules"]) == 5  # q, v, gate, up, down of the smoke preset's one block


def test_only_the_adapters_trained(runs: dict[str, Path]) -> None:
    base = load_file(str(ckpt.list_checkpoints(runs["base"])[-1] / "model.safetensors"))
    tuned = load_file(str(ckpt.list_checkpoints(runs["tuned"])[-1] / "model.safetensors"))
    assert all(tuned[key].equal(tensor) for key, tensor in base.items())
    assert sorted(set(tuned) - set(base)) and all("lora_" in key for key in set(tuned) - set(base))
    assert has_lora(load_trained(runs["tuned"]).model)  # sample, eval and trace read it as trained


def test_a_lora_resume_is_bit_exact(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["tuned"], run)
    for path in ckpt.list_checkpoints(run):
        if int(path.name.split("-")[1]) > 2:
            shutil.rmtree(path)
    assert train(["train", "--resume", str(run), "--set", "lora.r=8"]) == 2  # the adapters' shape is fixed
    assert train(["train", "--resume", str(run)]) == 0
    straight = load_file(str(ckpt.list_checkpoints(runs["tuned"])[-1] / "model.safetensors"))
    resumed = load_file(str(ckpt.list_checkpoints(run)[-1] / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not straight[k].equal(resumed[k])] == []
    assert evidence(run)["metrics"]["resumes"][0]["from_step"] == 2
    assert verdicts(run)["GATE-LORA-004"] == "PASS"


def test_a_compiled_lora_run_compiles_its_forward_once(runs: dict[str, Path], tmp_path: Path) -> None:
    """Each adapter counts the rows it was fed (GATE-LORA-004's `unfed`) in a tensor its forward adds
    to: counted in a Python int, the count would be a constant torch.compile guards on, and a
    compiled LoRA run would compile its forward again at every step (until dynamo's limit, then
    run it eager).
    A recompilation anywhere in the run is an error here."""
    run = tmp_path / "run"
    with compiled_once():
        assert _tune(runs, run, *LORA, "train.compile=true") == 0
    assert verdicts(run)["GATE-LORA-004"] == "PASS"


@pytest.mark.holds("GATE-LORA-002", "GATE-LORA-003", "GATE-LORA-005", "GATE-LORA-006")
def test_merge_of_a_run_and_of_its_adapter_agree_and_export(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from_run, from_adapter = tmp_path / "merged", tmp_path / "merged-adapter"
    assert one_line_cli(capsys, "lora", "merge", str(runs["tuned"]), "--out", str(from_run))[0] == 0
    adapter = str(runs["tuned"] / "adapter")
    argv = ["lora", "merge", adapter, "--base", str(runs["base"]), "--out", str(from_adapter)]
    assert one_line_cli(capsys, *argv)[0] == 0
    record = read_evidence(from_adapter / "metadata.json")
    assert check_record_truth(record, from_adapter, load_spec()).violations == []
    assert {g.id: g.verdict.value for g in record.gates} == {
        "GATE-CKPT-002": "PASS",
        "GATE-LORA-002": "PASS",
        "GATE-LORA-003": "PASS",
        "GATE-LORA-005": "PASS",
        "GATE-LORA-006": "PASS",
    }
    a, b = (
        load_file(str(ckpt.list_checkpoints(p)[0] / "model.safetensors")) for p in (from_run, from_adapter)
    )
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not has_lora(load_trained(from_run).model)
    hf = tmp_path / "hf"
    assert one_line_cli(capsys, "export", str(from_run), "--format", "hf", "--out", str(hf))[0] == 0
    assert {g.id: g.verdict.value for g in read_evidence(hf / "metadata.json").gates}[
        "GATE-EXPORT-001"
    ] == "PASS"


# Models and `lora.targets` whose adapted matrices the checker decides from the config alone: globs
# on the dense model, a mixture's experts by glob, and every matrix of an untied model ('*' passes
# over the embedding and adapts the head).
MOE = ("model.moe_experts=4", "model.moe_top_k=2", "model.moe_balance_coef=0.1")
SELECTED = {
    "dense-globs": ((), "q,v,ffn_*"),
    "mixture-experts": (MOE, "q,v,*up"),
    "untied-everything": (("model.tie_embeddings=false",), "*"),
}


@pytest.mark.parametrize("case", list(SELECTED))
def test_a_merge_is_held_to_the_modules_its_runs_targets_select(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """What `lora.targets` adapts is decided by the selection rule the checker holds
    (contracts.model_parameters.lora_touched), for a model with options too: a base, its LoRA run
    and their merge check clean together, and a merge that claims one module more is caught."""
    model, targets = SELECTED[case]
    base, tuned, merged = tmp_path / "base", tmp_path / "tuned", tmp_path / "merged"
    assert train(smoke_args(runs["data"], base, *STEPS, *model)) == 0
    lora = ["lora.r=4", f"lora.targets='{targets}'"]
    assert train([*smoke_args(runs["data"], tuned, *STEPS, *model, *lora), "--init-from", str(base)]) == 0
    assert one_line_cli(capsys, "lora", "merge", str(tuned), "--out", str(merged))[0] == 0
    assert findings(base, tuned, merged) == []
    record = json.loads((merged / "metadata.json").read_text(encoding="utf-8"))
    modules = record["metrics"]["modules"]
    record["metrics"]["modules"] = [*modules, "layers.0.attn.invented"]
    (merged / "metadata.json").write_text(json.dumps(record), encoding="utf-8")
    said = f"metrics.modules is {[*modules, 'layers.0.attn.invented']}, but the adapters it merged at"
    assert any(said in line and f"sit on {modules}" in line for line in findings(base, tuned, merged))


@pytest.mark.gate("GATE-LORA-005")
def test_merging_an_adapter_onto_another_base_fires(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"  # the base's shape, other weights
    save_run(other, GPT(load_trained(runs["base"]).config.model, seed=7))
    adapter = str(runs["tuned"] / "adapter")
    merge = ["lora", "merge", adapter, "--base", str(other), "--out", str(tmp_path / "m")]
    code, err = one_line_cli(capsys, *merge)
    assert code == 3 and "GATE-LORA-005" in err


def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m")
    assert one_line_cli(capsys, "lora", "merge", str(runs["base"]), "--out", out)[0] == 2  # no [lora]
    adapter = str(runs["tuned"] / "adapter")
    assert one_line_cli(capsys, "lora", "merge", adapter, "--out", out)[0] == 2  # no --base
    argv = ["lora", "merge", str(runs["tuned"]), "--base", str(runs["base"]), "--out", out]
    assert one_line_cli(capsys, *argv)[0] == 2  # --base for a run
    assert one_line_cli(capsys, "lora", "inspect", str(runs["base"]))[0] == 2
    hf = ["export", str(runs["tuned"]), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert one_line_cli(capsys, *hf)[0] == 2  # unmerged adapters: merge first
    assert main(["lora", "inspect", str(runs["tuned"])]) == 0
    assert "layers.0.attn.q: ‖B‖_F" in capsys.readouterr().out
    bad = ["train", "--data", str(runs["data"]), "--out", str(tmp_path / "t"), "--preset", "smoke"]
    bad += ["--init-from", str(runs["base"])]
    assert one_line_cli(capsys, *bad, "--set", "lora.r=0")[0] == 2
    code, err = one_line_cli(capsys, *bad, "--set", "lora.targets='embed'")
    assert code == 2 and "embed" in err


def test_lora_without_a_trained_start_is_refused_naming_the_start_option(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lora.* key on a fresh `stack train` froze a randomly initialised base and
    trained only the adapters (loss 5.52 -> 5.48 in ten smoke steps, 4.74 without the key), exit 0;
    so did a [lora] section in a reused config file, and a resume of a run started without one.
    `stack distill` names its own option, --student."""
    fresh = ["train", "--data", str(runs["data"]), "--out", str(tmp_path / "t"), "--preset", "smoke"]
    said = "[lora] (a lora.* key) trains adapters on a frozen base, and this run starts from a randomly "
    code, err = one_line_cli(capsys, *fresh, "--set", "lora.alpha=32")
    assert code == 2 and said in err and "pass --init-from RUN_DIR" in err
    config = tmp_path / "lora.toml"
    config.write_text("[lora]\nr = 4\n")
    code, err = one_line_cli(capsys, *fresh, "--config", str(config))
    assert code == 2 and said in err and not (tmp_path / "t").exists()
    run = tmp_path / "base"
    shutil.copytree(runs["base"], run)
    code, err = one_line_cli(capsys, "train", "--resume", str(run), "--set", "lora.r=4")
    assert code == 2 and said in err
    distill = ["distill", str(runs["base"]), "--data", str(runs["data"]), "--out", str(tmp_path / "d")]
    code, err = one_line_cli(capsys, *distill, "--preset", "smoke", "--set", "lora.r=4")
    assert code == 2 and "pass --student RUN|CKPT" in err and "--init-from" not in err


# -- a run started from a LoRA run: the SFT-then-DPO chain -----------------------------------


def test_a_run_from_a_lora_run_merges_its_adapter_in_memory_and_says_so(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "full"
    assert train([*smoke_args(runs["data"], run, *STEPS), "--init-from", str(runs["tuned"])]) == 0
    assert "is merged into its base in memory" in capsys.readouterr().err
    started = evidence(run)["metrics"]["init_from"]["adapter"]
    assert started["lora"] == "merged"
    assert started["adapter_sha256"] == adapter_sha256(load_trained(runs["tuned"]).model)
    assert verdicts(run)["GATE-LORA-002"] == verdicts(run)["GATE-LORA-006"] == "PASS"
    assert not has_lora(load_trained(run).model)


def test_a_distillation_student_may_be_a_lora_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["distill", str(runs["base"]), "--student", str(runs["tuned"]), "--data", str(runs["data"])]
    assert main([*argv, "--out", str(tmp_path / "kd"), "--steps", "2", "--device", "cpu"]) == 0
    assert "is merged into its base in memory" in capsys.readouterr().err


def test_where_neither_merge_nor_continue_applies_the_refusal_names_stack_lora_merge(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = [*smoke_args(runs["data"], tmp_path / "r8", *STEPS, "lora.r=8", "lora.continue_adapter=true")]
    code, err = one_line_cli(capsys, *other, "--init-from", str(runs["tuned"]))
    assert code == 2 and "lora.r (4 -> 8)" in err and "stack lora merge" in err
    plain = [*smoke_args(runs["data"], tmp_path / "p", *STEPS, *LORA, "lora.continue_adapter=true")]
    code, err = one_line_cli(capsys, *plain, "--init-from", str(runs["base"]))
    assert code == 2 and "has none" in err
    alone = [*smoke_args(runs["data"], tmp_path / "a", *STEPS), "--init-from", str(runs["tuned"] / "adapter")]
    code, err = one_line_cli(capsys, *alone)
    assert code == 2 and "stack lora merge" in err and "Unexpected key" not in err
    assert not (tmp_path / "r8").exists() and not (tmp_path / "a").exists()


def test_a_continued_adapter_starts_where_its_run_ended(runs: dict[str, Path], tmp_path: Path) -> None:
    same = ["lora.r=4", "lora.alpha=8", "lora.targets='q_proj,v_proj,gate_proj,up_proj,down_proj'"]
    run = tmp_path / "on"
    argv = [*smoke_args(runs["data"], run, *STEPS, *same, "lora.continue_adapter=true"), "--init-from"]
    assert train([*argv, str(runs["tuned"])]) == 0
    started = evidence(run)["metrics"]["init_from"]["adapter"]
    tuned = load_trained(runs["tuned"]).model
    assert started == {
        "lora": "continued",
        "adapter_sha256": adapter_sha256(tuned),
        "base_sha256": base_sha256(tuned),
    }
    assert base_sha256(load_trained(run).model) == base_sha256(tuned)  # the base is still the first one


# -- the adapters' weight decay ----------------------------------------------------------------


def _adapter_decays(run: Path) -> set[float]:
    """The weight decay of every optimizer group that holds parameters: in a LoRA run, only the
    adapters' A and B train."""
    state = json.loads((ckpt.list_checkpoints(run)[-1] / "state.json").read_text())
    groups = state["optimizer"]["param_groups"]
    return {g["weight_decay"] for g in groups if g["params"]}


def test_lora_adapters_are_not_weight_decayed_by_default(runs: dict[str, Path]) -> None:
    assert _adapter_decays(runs["tuned"]) == {0.0}  # the transformers Trainer's default
    assert verdicts(runs["tuned"])["GATE-TRAIN-002"] == "PASS"


@pytest.mark.gate("GATE-TRAIN-002")
def test_adapters_decayed_otherwise_than_lora_weight_decay_fire(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stack.train import loop

    decayed = tmp_path / "decayed"
    argv = [*smoke_args(runs["data"], decayed, *STEPS, *LORA, "lora.weight_decay=0.1"), "--init-from"]
    assert train([*argv, str(runs["base"])]) == 0  # asked for, and given: holds
    assert _adapter_decays(decayed) == {0.1}
    capsys.readouterr()
    build = loop.build_optimizer

    def old_groups(model: torch.nn.Module, config: object, device: torch.device) -> torch.optim.AdamW:
        optimizer = build(model, config, device)  # type: ignore[arg-type]
        optimizer.param_groups[-1]["weight_decay"] = 0.1  # the planted bug: adapters take train's decay
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", old_groups)
    code, err = one_line_cli(
        capsys, *smoke_args(runs["data"], tmp_path / "run", *STEPS, *LORA), "--init-from", str(runs["base"])
    )
    assert code == 3 and "GATE-TRAIN-002" in err and "lora.weight_decay 0" in err


# -- GATE-TRAIN-007 check dropout: what each adapter's A read shows the configured dropout --------


def _adapter_with(dropped: Callable[[LoRALinear, torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
    """LoRALinear.adapter with A reading `dropped(self, x)` in place of its dropout's output."""

    def adapter(self: LoRALinear, x: torch.Tensor) -> torch.Tensor | None:
        if self.merged:
            return None
        if torch.is_grad_enabled():
            self.fed.add_(x.numel() // self.in_features)
        return self.scale * F.linear(F.linear(dropped(self, x), self.lora_A), self.lora_B)

    return adapter


def _tune(runs: dict[str, Path], out: Path, *lora: str) -> int:
    return train([*smoke_args(runs["data"], out, *STEPS, *lora), "--init-from", str(runs["base"])])


@pytest.mark.holds("GATE-TRAIN-007")
def test_a_lora_run_s_adapters_read_their_input_under_the_configured_dropout(runs: dict[str, Path]) -> None:
    """The tuned run (lora.dropout 0.1): A read about a tenth of its nonzero input as 0 and the rest
    scaled by 1 / 0.9; the record's rate is the config's, which the checker holds it to."""
    result = next(g for g in evidence(runs["tuned"])["gates"] if g["id"] == "GATE-TRAIN-007")
    measured = result["measured"]
    assert result["verdict"] == "PASS" and measured["dropout_p"] == 0.1 and measured["dropout_unread"] == 0
    assert measured["dropout_adapters"] == 5 and measured["dropout_scale_error"] <= 1.0
    assert abs(measured["dropout_zeroed"] / measured["dropout_elements"] - 0.1) < 0.02
    record = read_evidence(runs["tuned"] / "metadata.json")
    next(g for g in record.gates if g.id == "GATE-TRAIN-007").measured["dropout_p"] = 0.0  # type: ignore[index]
    violations = check_record_truth(record, runs["tuned"], load_spec()).violations
    assert any("dropout_p is 0.0, but its artifacts derive 0.1" in v for v in violations), violations


def _never_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: A handed the adapter's input as it came, the dropout never drawn."""
    monkeypatch.setattr(LoRALinear, "adapter", _adapter_with(lambda _self, x: x))


def _unscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout's mask drawn by hand in training, its survivors left at x instead of x / (1 − p)."""

    def masked(self: LoRALinear, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand_like(x) >= self.lora_dropout.p) if self.training else x

    monkeypatch.setattr(LoRALinear, "adapter", _adapter_with(masked))


def _drawn_at_a_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapters built with dropout 0.1 whatever lora.dropout says."""
    real = lora_setup.apply_lora
    monkeypatch.setattr(
        lora_setup, "apply_lora", lambda *args, **kwargs: real(*args[:4], 0.1, *args[5:], **kwargs)
    )


@pytest.mark.gate("GATE-TRAIN-007")
@pytest.mark.parametrize(
    ("plant", "lora", "says"),
    [
        pytest.param(_never_drawn, "lora.dropout=0.1", "is not drawn on what A reads", id="never-drawn"),
        pytest.param(_unscaled, "lora.dropout=0.1", "not rescaled", id="survivors-unscaled"),
        pytest.param(
            _drawn_at_a_tenth,
            "lora.dropout=0.0",
            "a dropout drawn where none is configured",
            id="drawn-at-p-0",
        ),
    ],
)
def test_an_adapter_whose_a_reads_other_than_its_dropout_halts(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    plant: Callable[[pytest.MonkeyPatch], None],
    lora: str,
    says: str,
) -> None:
    """Each trains: GATE-MODEL-003 runs its training-mode forms with every dropout at p = 0, the mode
    check asks only for training mode, and the inference comparison replays the same dropout; what
    A read at the first probe, against what the adapter was handed, halts the run, exit 3 naming
    the gate."""
    plant(monkeypatch)
    assert _tune(runs, tmp_path / "run", *LORA[:3], lora) == 3
    err = capsys.readouterr().err
    assert "GATE-TRAIN-007" in err and says in err, err


@pytest.mark.holds("GATE-TRAIN-007")
def test_an_adapter_without_dropout_reads_exactly_its_input(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _tune(runs, run, *LORA[:3], "lora.dropout=0.0") == 0
    measured = next(g for g in evidence(run)["gates"] if g["id"] == "GATE-TRAIN-007")["measured"]
    assert measured["dropout_zeroed"] == 0 and measured["dropout_scale_error"] == 0


@pytest.mark.gate("GATE-TRAIN-007")
def test_a_dropout_count_or_scale_just_beyond_its_bound_fires_and_just_inside_holds() -> None:
    """The binomial bound on the count A read as 0 (dropout_sigmas standard deviations of n·p) and
    the survivors' distance from x / (1 − p) (dropout_scale_ulps), each at 0.99 and 1.01 of it."""
    sigmas = load_spec().threshold("GATE-TRAIN-007", "dropout_sigmas")
    ulps = load_spec().threshold("GATE-TRAIN-007", "dropout_scale_ulps")
    n, p = 100_000, 0.1
    bound = sigmas * math.sqrt(n * p * (1 - p))

    def read(zeroed: float, error: float) -> dict[str, Any]:
        counts = {"dropout_adapters": 2, "dropout_unread": 0, "dropout_elements": n}
        return {"dropout_p": p, **counts, "dropout_zeroed": round(zeroed), "dropout_scale_error": error}

    assert measure("GATE-TRAIN-007", read(n * p + 0.99 * bound, 0.99 * ulps)).ok
    assert measure("GATE-TRAIN-007", read(n * p - 0.99 * bound, 0.0)).ok
    assert not measure("GATE-TRAIN-007", read(n * p + 1.01 * bound, 0.0)).ok
    assert not measure("GATE-TRAIN-007", read(n * p - 1.01 * bound, 0.0)).ok
    assert not measure("GATE-TRAIN-007", read(n * p, 1.01 * ulps)).ok
