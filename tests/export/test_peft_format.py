"""LoRA adapters in peft's format, both ways, under GATE-LORA-007; and the Hugging Face names
`lora.targets` takes (stack.model.names).

`stack lora export` writes a run's adapter as adapter_config.json + adapter_model.safetensors
with the HF export of its base beside it, and peft itself loads the pair; `stack lora import`
reads an adapter peft wrote onto a stack base. Falsifiers plant an export that names the
projections wrongly, one that loses rsLoRA's scale, and one whose keys peft cannot place (it
only warns); the judge is tried just beyond and just inside logits_atol.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.export import peft_format
from stack.model import lora, names
from stack.model.adapters import read_manifest
from stack.train.config import LoraSection, RunConfig, TrainSection
from stack.train.trained import load_trained
from tests.support.export_support import TARGETS, save_lora_run, trained_adapters
from tests.support.ledger_support import assert_caught, edited, findings
from tests.support.optional import requires
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import one_line_cli

pytestmark = requires("peft")

GATE = "GATE-LORA-007"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peft")
    save_lora_run(root / "run", LoraSection(r=4, alpha=8.0, targets=TARGETS, rslora=True))
    return root / "run"


def _verdict(directory: Path) -> str:
    return {g.id: g.verdict.value for g in read_evidence(directory / "metadata.json").gates}[GATE]


# -- export: peft loads it and computes what the stack does -----------------------------------


@pytest.mark.holds(GATE)
def test_an_exported_adapter_is_what_peft_loads_onto_the_exported_base(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["lora", "export", str(run), "--out", str(out)]) == 0
    config = json.loads((out / peft_format.CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["use_rslora"] is True
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["target_modules"] == ["down_proj", "o_proj", "q_proj", "v_proj"]
    keys = set(load_file(str(out / peft_format.WEIGHTS)))
    assert "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight" in keys
    assert len(keys) == 2 * 4 * 3  # A and B of four projections in each of three blocks
    record = json.loads((out / "lora_export.json").read_text())
    assert record["parity"]["not_loaded"] == [] and record["status"] == "verified"
    assert record["parity"]["max_abs_diff"] <= load_spec().threshold(GATE, "logits_atol")
    assert _verdict(out) == "PASS"
    assert (out / "base" / "model.safetensors").is_file()  # the exported base, beside the adapter


def test_an_export_onto_a_base_given_by_hand_must_be_that_base(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    save_run(other, tiny_model(7))  # another model of the same shape
    assert main(["export", str(other), "--format", "hf", "--out", str(tmp_path / "other-hf")]) == 0
    code, err = one_line_cli(
        capsys,
        "lora",
        "export",
        str(run),
        "--out",
        str(tmp_path / "out"),
        "--base",
        str(tmp_path / "other-hf"),
    )
    assert code == 2 and "does not hold this run's base weights" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.gate(GATE)
def test_an_export_that_swaps_two_projections_names_fires(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """q_proj and o_proj have the same shape here, so peft loads the swapped adapters without a word."""
    key = peft_format.peft_key

    def swapped(path: str, part: str) -> str:
        name = key(path, part)
        return name.replace("q_proj", "TMP").replace("o_proj", "q_proj").replace("TMP", "o_proj")

    monkeypatch.setattr(peft_format, "peft_key", swapped)
    out = tmp_path / "out"
    code, err = one_line_cli(capsys, "lora", "export", str(run), "--out", str(out))
    assert code == 3 and GATE in err
    assert (out / "adapter_model.unverified.safetensors").is_file() and not (
        out / peft_format.WEIGHTS
    ).exists()
    assert _verdict(out) == "FAIL"


@pytest.mark.gate(GATE)
def test_an_export_that_loses_the_rslora_scale_fires(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = peft_format.peft_config
    monkeypatch.setattr(
        peft_format, "peft_config", lambda model, base: {**config(model, base), "use_rslora": False}
    )
    code, err = one_line_cli(capsys, "lora", "export", str(run), "--out", str(tmp_path / "out"))
    assert code == 3 and GATE in err and "differ" in err


@pytest.mark.gate(GATE)
def test_an_export_whose_keys_peft_cannot_place_fires(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """peft warns about keys that match no module and loads the base alone; the gate names them."""
    key = peft_format.peft_key
    monkeypatch.setattr(
        peft_format, "peft_key", lambda path, part: key(path, part).replace(".model.model.", ".model.")
    )
    out = tmp_path / "out"
    code, err = one_line_cli(capsys, "lora", "export", str(run), "--out", str(out))
    assert code == 3 and "peft loaded no tensor for" in err
    measured = json.loads((out / "lora_export.json").read_text())["parity"]
    assert len(measured["not_loaded"]) == 24


# -- GATE-LORA-007 check config: adapter_config.json against the run's recorded [lora] section ----------


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose adapters trained at dropout 0.1 (its checkpoint's [lora] section says so)."""
    root = tmp_path_factory.mktemp("peft-dropout")
    save_lora_run(root / "run", LoraSection(r=4, alpha=8.0, dropout=0.1, targets="q,v"))
    return root / "run"


@pytest.mark.holds(GATE)
def test_an_exported_config_says_what_the_runs_lora_section_does(dropout_run: Path, tmp_path: Path) -> None:
    """Every field peft reads is the run's: dropout 0.1 written as 0.1, and target_modules select, by
    peft's rule, exactly the modules the adapter file holds tensors for."""
    out = tmp_path / "out"
    assert main(["lora", "export", str(dropout_run), "--out", str(out)]) == 0
    assert json.loads((out / peft_format.CONFIG).read_text())["lora_dropout"] == 0.1
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == GATE]
    assert isinstance(result.measured, dict) and result.verdict.value == "PASS"
    assert result.measured["config_written"] == result.measured["config_recorded"]
    assert result.measured["modules_targeted"] == result.measured["modules_adapted"]
    assert len(result.measured["modules_adapted"]) == 2 * 3  # q and v of three blocks


@pytest.mark.gate(GATE)
def test_an_export_that_writes_dropout_zero_for_an_adapter_trained_at_0_1_fires(
    dropout_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: adapter_config.json says lora_dropout 0.0 for an adapter trained at 0.1. Parity
    runs in evaluation mode, where dropout does nothing; the check config reads the file back."""
    config = peft_format.peft_config
    monkeypatch.setattr(
        peft_format, "peft_config", lambda model, base: {**config(model, base), "lora_dropout": 0.0}
    )
    out = tmp_path / "out"
    code, err = one_line_cli(capsys, "lora", "export", str(dropout_run), "--out", str(out))
    assert code == 3 and GATE in err
    assert "lora_dropout is 0.0 where the run's [lora] section gives 0.1" in str(
        read_evidence(out / "metadata.json").gates
    )
    assert not (out / peft_format.WEIGHTS).exists()  # named unverified


@pytest.mark.gate(GATE)
@pytest.mark.parametrize(
    ("field", "value"),
    [("lora_alpha", 4.0), ("bias", "all"), ("fan_in_fan_out", True), ("target_modules", ["q_proj"])],
)
def test_an_export_whose_config_says_another_setting_than_the_run_fires(
    dropout_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: object,
) -> None:
    """Any other field peft reads, written other than the run's, fires the same check (target_modules
    through the modules it selects on the exported base)."""
    config = peft_format.peft_config
    monkeypatch.setattr(peft_format, "peft_config", lambda model, base: {**config(model, base), field: value})
    code, err = one_line_cli(capsys, "lora", "export", str(dropout_run), "--out", str(tmp_path / "out"))
    assert code == 3 and GATE in err


def _dropout_zero(data: dict[str, object], run_dir: Path) -> None:
    """adapter_config.json's lora_dropout made 0.0 after the export (the record left as it was)."""
    path = run_dir / peft_format.CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), "lora_dropout": 0.0}, indent=1) + "\n")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_adapter_config_edited_after_the_export_is_caught(dropout_run: Path, tmp_path: Path) -> None:
    """The checker reads adapter_config.json back (contracts.peft_config.written_fields), and the
    modules its target_modules select on the exported base and those the adapter file holds: the
    record's config_written no longer is the file's."""
    out = tmp_path / "out"
    assert main(["lora", "export", str(dropout_run), "--out", str(out)]) == 0
    assert findings(out) == []
    assert_caught(edited(out, _dropout_zero), "GATE-LORA-007", "config_written")


@pytest.mark.gate(GATE)
def test_a_difference_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    atol = float(load_spec().threshold(GATE, "logits_atol"))
    base = {"finite": True, "positions": 64, "adapters": 4, "not_loaded": []}
    assert measure(GATE, {**base, "max_abs_diff": atol * 0.99}).ok
    assert not measure(GATE, {**base, "max_abs_diff": atol * 1.01}).ok
    assert not measure(GATE, {**base, "max_abs_diff": 0.0, "not_loaded": ["x.lora_A.weight"]}).ok
    assert not measure(GATE, {**base, "max_abs_diff": 0.0, "adapters": 0}).ok


# -- import: an adapter peft wrote, onto a stack base ------------------------------------------


def _peft_written(base_run: Path, tmp_path: Path, **config: object) -> Path:
    """An adapter written by peft itself (random B) on the HF export of `base_run`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hf = tmp_path / "base-hf"
    assert main(["export", str(base_run), "--format", "hf", "--out", str(hf)]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    settings_ = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "down_proj"],
        "init_lora_weights": False,
    }
    peft_model = get_peft_model(model, LoraConfig(**{**settings_, **config}))
    peft_model.save_pretrained(str(tmp_path / "peft"))
    return tmp_path / "peft"


@pytest.mark.holds(GATE, "GATE-LORA-005")
def test_an_adapter_peft_wrote_imports_and_computes_what_peft_does(tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_run(base, tiny_model(3))
    written = _peft_written(base, tmp_path, use_rslora=True)
    out = tmp_path / "adapter"
    assert main(["lora", "import", str(written), "--base", str(base), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["targets"] == "q,ffn_out" and manifest["rslora"] is True and manifest["r"] == 4
    # peft's own tensors, unchanged, under the stack's module names
    theirs = load_file(str(written / peft_format.WEIGHTS))
    ours = load_file(str(out / "adapter.safetensors"))
    key = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
    assert torch.equal(theirs[key], ours["layers.1.ffn.down.lora_B"])
    assert main(["lora", "merge", str(out), "--base", str(base), "--out", str(tmp_path / "merged")]) == 0


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "bias"),
        ({"modules_to_save": ["lm_head"]}, "saved whole"),
    ],
)
def test_a_peft_adapter_the_stack_cannot_compute_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, object], named: str
) -> None:
    base = tmp_path / "base"
    save_run(base, tiny_model(3))
    written = _peft_written(base, tmp_path)
    stored = json.loads((written / peft_format.CONFIG).read_text())
    (written / peft_format.CONFIG).write_text(json.dumps({**stored, **config}))
    capsys.readouterr()  # transformers' own progress lines while peft wrote the adapter
    code, err = one_line_cli(
        capsys, "lora", "import", str(written), "--base", str(base), "--out", str(tmp_path / "a")
    )
    assert code == 2 and named in err
    assert not (tmp_path / "a").exists()


def test_an_export_imports_back_to_the_same_adapter(run: Path, tmp_path: Path) -> None:
    exported, base, back = tmp_path / "exported", tmp_path / "base", tmp_path / "back"
    assert main(["lora", "export", str(run), "--out", str(exported)]) == 0
    model = load_trained(run).model
    with lora.without_adapters(model):
        save_run(base, model)
    assert main(["lora", "import", str(exported), "--base", str(base), "--out", str(back)]) == 0
    ours = load_file(str(back / "adapter.safetensors"))
    assert ours.keys() == lora.adapter_state(model).keys()
    assert all(torch.equal(ours[k], v) for k, v in lora.adapter_state(model).items())


def test_an_adapter_directory_given_as_a_model_names_the_command_that_makes_one(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "exported"
    assert main(["lora", "export", str(run), "--out", str(exported)]) == 0
    code, err = one_line_cli(capsys, "sample", str(exported), "--tokens", "2")
    assert code == 2 and "stack lora import" in err


# -- Hugging Face names as LoRA targets -------------------------------------------------------


@settings(max_examples=20)
@given(matrix=st.sampled_from(names.BLOCK), layer=st.integers(0, 2))
def test_a_hugging_face_name_targets_the_same_projection_as_its_site(
    matrix: names.Matrix, layer: int
) -> None:
    model = tiny_model()
    assert lora.target_modules(model, matrix.hf_short) == lora.target_modules(model, matrix.site)
    assert lora.target_modules(model, f"layers.{layer}.{matrix.hf_short}") == [
        f"layers.{layer}.{matrix.module}"
    ]
    path = f"layers.{layer}.{matrix.module}"
    hf = names.hf_module(path)
    assert hf == f"model.layers.{layer}.{matrix.hf}" and names.stack_module(hf) == path


def test_o_proj_and_down_proj_are_the_attention_and_feed_forward_outputs() -> None:
    wrapped = lora.apply_lora(tiny_model(), "q_proj,o_proj,down_proj", 2, 4.0)
    assert sorted(wrapped) == sorted(
        f"layers.{i}.{m}" for i in range(3) for m in ("attn.q", "attn.o", "ffn.down")
    )


def test_lm_head_on_a_tied_model_is_refused_under_its_hugging_face_name_too() -> None:
    from contracts.errors import BadInput

    with pytest.raises(BadInput, match="tied embeddings"):
        lora.apply_lora(tiny_model(), "lm_head", 2, 4.0)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"moe_experts": 2, "moe_top_k": 1}, "moe_experts=2"),
        ({"diff_attn": True}, "diff_attn=true"),
        ({"mod_every": 1, "mod_capacity": 0.5}, "mod_every=1"),
    ],
)
def test_an_adapter_of_an_option_hf_lacks_is_refused_with_a_way_this_command_offers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: dict[str, object], named: str
) -> None:
    """`stack lora export` has no --format: it sends the user to merge, then to export the merge as
    ONNX (it said "use --format onnx"); the options matrix runs that way (lora-merge, then
    lora-merge-onnx) on every option."""
    run = tmp_path / "run"
    section = LoraSection(r=2, targets="q,v")
    model = tiny_model(**option)
    lora.apply_lora(model, section.targets, section.r, section.alpha)
    trained_adapters(model)
    save_run(run, model, config=RunConfig(model=model.config, train=TrainSection(steps=1), lora=section))
    code, err = one_line_cli(capsys, "lora", "export", str(run), "--out", str(tmp_path / "peft"))
    assert code == 2 and named in err and "use --format onnx" not in err
    assert f"stack lora merge {run} --out MERGED" in err and "stack export MERGED --format onnx" in err
    assert not (tmp_path / "peft").exists()


def test_a_peft_adapter_onto_a_base_hf_cannot_hold_is_refused_naming_the_base(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported, base = tmp_path / "exported", tmp_path / "base"
    assert main(["lora", "export", str(run), "--out", str(exported)]) == 0
    save_run(base, tiny_model(moe_experts=2, moe_top_k=1))
    capsys.readouterr()
    code, err = one_line_cli(
        capsys, "lora", "import", str(exported), "--base", str(base), "--out", str(tmp_path / "a")
    )
    assert code == 2 and "give a --base without the option" in err and "--format onnx" not in err
