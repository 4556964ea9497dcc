"""LoRA through the real commands: `stack train --init-from … --set lora.r=…`, its resume, its
adapter directory, `stack lora merge` of a run and of an adapter directory, and the merged model's
Hugging Face export (GATE-EXPORT-001).

One base run and one LoRA run are trained per module (a few seconds each on the smoke preset).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from record_checks import check_record_truth
from safetensors.torch import load_file
from trace_support import save_run
from train_support import evidence, prepared, smoke_args, train, unjudged, verdicts

from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.model.gpt import GPT
from stack.model.lora import has_lora
from stack.train import checkpoint as ckpt
from stack.train.trained import load_trained

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


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, err


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


@pytest.mark.holds("GATE-LORA-002", "GATE-LORA-003", "GATE-LORA-005", "GATE-LORA-006")
def test_merge_of_a_run_and_of_its_adapter_agree_and_export(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from_run, from_adapter = tmp_path / "merged", tmp_path / "merged-adapter"
    assert _cli(capsys, "lora", "merge", str(runs["tuned"]), "--out", str(from_run))[0] == 0
    adapter = str(runs["tuned"] / "adapter")
    argv = ["lora", "merge", adapter, "--base", str(runs["base"]), "--out", str(from_adapter)]
    assert _cli(capsys, *argv)[0] == 0
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
    assert _cli(capsys, "export", str(from_run), "--format", "hf", "--out", str(hf))[0] == 0
    assert {g.id: g.verdict.value for g in read_evidence(hf / "metadata.json").gates}[
        "GATE-EXPORT-001"
    ] == "PASS"


@pytest.mark.gate("GATE-LORA-005")
def test_merging_an_adapter_onto_another_base_fires(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"  # the base's shape, other weights
    save_run(other, GPT(load_trained(runs["base"]).config.model, seed=7))
    adapter = str(runs["tuned"] / "adapter")
    code, err = _cli(capsys, "lora", "merge", adapter, "--base", str(other), "--out", str(tmp_path / "m"))
    assert code == 3 and "GATE-LORA-005" in err


def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m")
    assert _cli(capsys, "lora", "merge", str(runs["base"]), "--out", out)[0] == 2  # no [lora]
    assert _cli(capsys, "lora", "merge", str(runs["tuned"] / "adapter"), "--out", out)[0] == 2  # no --base
    argv = ["lora", "merge", str(runs["tuned"]), "--base", str(runs["base"]), "--out", out]
    assert _cli(capsys, *argv)[0] == 2  # --base for a run
    assert _cli(capsys, "lora", "inspect", str(runs["base"]))[0] == 2
    hf = ["export", str(runs["tuned"]), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert _cli(capsys, *hf)[0] == 2  # unmerged adapters: merge first
    assert main(["lora", "inspect", str(runs["tuned"])]) == 0
    assert "layers.0.attn.q: ‖B‖_F" in capsys.readouterr().out
    bad = ["train", "--data", str(runs["data"]), "--out", str(tmp_path / "t"), "--preset", "smoke"]
    assert _cli(capsys, *bad, "--set", "lora.r=0")[0] == 2
    assert _cli(capsys, *bad, "--set", "lora.targets='embed'")[0] == 2
