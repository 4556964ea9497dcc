"""GATE-EXPORT-001: a Hugging Face export computes the stack's logits, and export → import is lossless.

Each falsifier plants one of the classic conversion bugs (Meta's interleaved-RoPE permutation,
gate/up swapped, a wrong norm eps, a tied head declared untied, q/k/v biases dropped) into the
exporter and shows the command turning red: exit 3, the weights renamed unverified, export.json
saying why. A model with q/k/v biases exports as a Qwen2, never as a Llama that would lose them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from contracts.errors import GateViolation
from contracts.spec import load_spec
from stack.cli import main
from stack.data.tokenizer import Tokenizer
from stack.export import exporters, hf, parity
from stack.export.exporters import ExportRequest
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.train.trained import load_trained
from tests.support.export_support import make_checkpoint

GATE = "GATE-EXPORT-001"

CONFIGS = {
    "gqa-tied-2layers": {"d_model": 48, "n_heads": 6, "n_kv_heads": 2, "ffn_hidden": 72, "n_layers": 2},
    "mha-untied-odd": {
        "d_model": 40,
        "n_heads": 5,
        "n_kv_heads": 5,
        "ffn_hidden": 37,
        "tie_embeddings": False,
        "norm_eps": 1e-6,
        "rope_theta": 500.0,
    },
    "mqa-large-logits": {"d_model": 64, "n_heads": 4, "n_kv_heads": 1, "ffn_hidden": 100, "init_std": 0.1},
    # Llama 3.1's RoPE at head_dim 8 (wavelengths 6.3, 63, 628, 6283 positions): one frequency
    # kept, one blended, two stretched.
    "gqa-llama3-rope": {
        "d_model": 48,
        "n_heads": 6,
        "n_kv_heads": 2,
        "ffn_hidden": 72,
        "n_layers": 2,
        "rope_type": "llama3",
        "rope_factor": 8.0,
        "rope_low_freq_factor": 0.125,
        "rope_high_freq_factor": 2.0,
        "rope_original_ctx": 16,
    },
    # Qwen3's attention: heads of their own width (16, where 48 / 6 is 8), each of q and k normed.
    "qwen3-head-dim": {
        "d_model": 48,
        "n_heads": 6,
        "n_kv_heads": 2,
        "ffn_hidden": 72,
        "n_layers": 2,
        "head_dim": 16,
        "qk_norm": True,
    },
}


def export_hf(checkpoint: Path, out: Path) -> exporters.ExportResult:
    return exporters.export(ExportRequest(checkpoint=checkpoint, fmt="hf", out=out))


@pytest.mark.holds(GATE)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_reproduces_the_stacks_logits(name: str, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path, **CONFIGS[name])
    result = export_hf(checkpoint, tmp_path / "hf")
    exporters.certify(result)
    check = result.record["parity"]["model.safetensors"]
    assert check["ok"] and check["max_abs_diff"] <= load_spec().threshold(GATE, "logits_atol")
    assert check["positions"] == 8 * 32
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    family = "Qwen3ForCausalLM" if CONFIGS[name].get("qk_norm") else "LlamaForCausalLM"
    assert config["architectures"] == [family]
    assert ("lm_head.weight" in load_file(tmp_path / "hf" / "model.safetensors")) != config[
        "tie_word_embeddings"
    ]


@pytest.mark.holds(GATE)
@pytest.mark.parametrize("name", ["gqa-tied-2layers", "mha-untied-odd", "gqa-llama3-rope", "qwen3-head-dim"])
def test_export_then_import_gives_identical_weights(name: str, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path, **CONFIGS[name])
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert weight_differences(checkpoint, tmp_path / "back") == []
    assert load_trained(tmp_path / "back").config.model == load_trained(checkpoint).config.model


def weight_differences(a: Path, b: Path) -> list[str]:
    """Tensors of two checkpoints that are not bitwise equal (or not shaped alike)."""
    left = load_trained(a).model.state_dict()
    right = load_trained(b).model.state_dict()
    return sorted(k for k in left if k not in right or not torch.equal(left[k], right[k]))


def test_round_trip_check_sees_a_single_changed_weight(tmp_path: Path) -> None:
    """The comparison the round-trip test relies on sees one weight changed in transit (no gate
    judges an import against its source: this shows the test above could fail)."""
    checkpoint = make_checkpoint(tmp_path)
    export_hf(checkpoint, tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] += 1e-3  # planted: one weight altered in transit
    save_file(tensors, weights, metadata={"format": "pt"})
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert weight_differences(checkpoint, tmp_path / "back") == ["layers.0.ffn.up.weight"]


def meta_rope_permutation(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF's conversion permutation for Meta checkpoints (interleaved pairs → halves): wrong for ours."""
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


WeightTamper = Callable[[dict[str, torch.Tensor], ModelConfig], None]
ConfigTamper = Callable[[dict[str, Any], ModelConfig], None]


def plant_weights(monkeypatch: pytest.MonkeyPatch, tamper: WeightTamper) -> None:
    """Make the exporter's converter apply `tamper` to the HF tensors it produces."""
    real = hf.to_hf_tensors

    def planted(model: GPT) -> dict[str, torch.Tensor]:
        tensors = real(model)
        tamper(tensors, model.config)
        return tensors

    monkeypatch.setattr(hf, "to_hf_tensors", planted)


def permute_rope(tensors: dict[str, torch.Tensor], config: ModelConfig) -> None:
    for name in list(tensors):
        if name.endswith("q_proj.weight"):
            tensors[name] = meta_rope_permutation(tensors[name], config.n_heads)
        if name.endswith("k_proj.weight"):
            tensors[name] = meta_rope_permutation(tensors[name], config.n_kv_heads)


def swap_gate_up(tensors: dict[str, torch.Tensor], _config: ModelConfig) -> None:
    gate, up = "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"
    tensors[gate], tensors[up] = tensors[up], tensors[gate]


@pytest.mark.gate(GATE)
@pytest.mark.parametrize(
    "tamper", [permute_rope, swap_gate_up], ids=["meta-rope-permutation", "gate-up-swap"]
)
def test_planted_weight_bug_fails_the_export(
    tamper: WeightTamper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = make_checkpoint(tmp_path, **CONFIGS["gqa-tied-2layers"])
    plant_weights(monkeypatch, tamper)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()  # transformers will not load it by accident
    assert (out / "model.unverified.safetensors").is_file()
    record = json.loads((out / "export.json").read_text())
    assert record["status"] == "failed" and not record["parity"]["model.safetensors"]["ok"]


def eps_times_ten(config: dict[str, Any], model: ModelConfig) -> None:
    config["rms_norm_eps"] = model.norm_eps * 10


def flip_tie(config: dict[str, Any], model: ModelConfig) -> None:
    config["tie_word_embeddings"] = not model.tie_embeddings


def plain_rope(config: dict[str, Any], model: ModelConfig) -> None:
    """Planted: a llama3 model's config.json written with the plain RoPE of its θ."""
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": model.rope_theta}
    del config["rope_scaling"]


def as_llama(config: dict[str, Any], _model: ModelConfig) -> None:
    """Planted: a qk_norm model's config.json written as a Llama's, which has no head norms."""
    config |= {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "mlp_bias": False}


def plant_config(monkeypatch: pytest.MonkeyPatch, tamper: ConfigTamper) -> None:
    """The export's config.json made as ever, then `tamper`ed: the bug planted in what it writes."""
    real = hf.hf_config

    def planted(config: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
        written = real(config, tokenizer)
        tamper(written, config)
        return written

    monkeypatch.setattr(hf, "hf_config", planted)


@pytest.mark.gate(GATE)
@pytest.mark.parametrize(
    ("tamper", "config"),
    [(eps_times_ten, None), (flip_tie, None), (plain_rope, "gqa-llama3-rope"), (as_llama, "qwen3-head-dim")],
    ids=["norm-eps-x10", "tied-head-declared-untied", "llama3-rope-written-plain", "qwen3-written-as-llama"],
)
def test_planted_config_bug_fails_the_check(
    tamper: ConfigTamper, config: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = make_checkpoint(tmp_path, **CONFIGS.get(config or "", {}))
    plant_config(monkeypatch, tamper)
    result = export_hf(checkpoint, tmp_path / "hf")
    with pytest.raises(GateViolation) as fired:
        exporters.certify(result)
    assert fired.value.gate_id == GATE
    assert fired.value.measured["max_abs_diff"] > load_spec().threshold(GATE, "logits_atol")


# -- GATE-EXPORT-001 rev 2: the special ids an export names are its tokenizer's end of text ------


def eos_off_by_one(config: dict[str, Any], _model: ModelConfig) -> None:
    """Planted: eos_token_id one below the end-of-text id (the last byte's)."""
    config["eos_token_id"] -= 1


def bos_off_by_one(config: dict[str, Any], _model: ModelConfig) -> None:
    config["bos_token_id"] -= 1


def eos_listed_with_another(config: dict[str, Any], _model: ModelConfig) -> None:
    """A list of stop ids, as Llama 3 writes, holding the end of text and one more."""
    config["eos_token_id"] = [config["eos_token_id"], config["eos_token_id"] - 1]


@pytest.mark.holds(GATE)
def test_an_export_names_its_tokenizers_end_of_text_wherever_transformers_reads_it(tmp_path: Path) -> None:
    result = export_hf(make_checkpoint(tmp_path), tmp_path / "hf")
    exporters.certify(result)
    eot = load_trained(make_checkpoint(tmp_path / "again")).tokenizer.eot_id
    assert result.record["eot_id"] == eot
    found = result.record["special_ids"]
    pads = {where for where in found if "pad_token_id" in where}
    assert {found[where] for where in set(found) - pads} == {eot} and len(found) == 7
    assert {found[where] for where in pads} == {None}  # the stack's own models name no pad


@pytest.mark.gate(GATE)
@pytest.mark.parametrize(
    "tamper", [eos_off_by_one, bos_off_by_one, eos_listed_with_another], ids=["eos-1", "bos-1", "eos-list"]
)
def test_an_export_naming_other_special_ids_exits_3_unverified(
    tamper: ConfigTamper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.json's ids are planted off the tokenizer's end of text: the logits still match, but a
    model generated from would not stop (or start) where it learned to."""
    checkpoint = make_checkpoint(tmp_path)
    plant_config(monkeypatch, tamper)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    assert (out / "model.unverified.safetensors").is_file() and not (out / "model.safetensors").exists()
    record = json.loads((out / "export.json").read_text())
    assert record["parity"]["model.safetensors"]["max_abs_diff"] <= load_spec().threshold(GATE, "logits_atol")
    named = {str(v) for where, v in record["special_ids"].items() if "pad_token_id" not in where}
    assert record["status"] == "failed" and len(named) == 2


@pytest.mark.gate(GATE)
def test_an_export_whose_tokenizer_ends_texts_with_another_token_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """tokenizer_config.json names a plain byte as its eos_token: transformers' tokenizer ends texts
    with an id the config and the model never did."""
    from stack.export import hf_tokenizer

    monkeypatch.setattr(hf_tokenizer, "EOT_TOKEN", "a")
    out = tmp_path / "hf"
    assert main(["export", str(make_checkpoint(tmp_path)), "--format", "hf", "--out", str(out)]) == 3
    assert "tokenizer eos_token_id is" in capsys.readouterr().err


# -- GATE-EXPORT-001 rev 3: the configuration read back from an export is the model's ----------------


def context_one_short(config: dict[str, Any], model: ModelConfig) -> None:
    """Planted: max_position_embeddings one below the model's context."""
    config["max_position_embeddings"] = model.ctx - 1


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("tamper", [context_one_short], ids=["ctx-1"])
def test_an_export_that_reads_back_as_another_configuration_exits_3(
    tamper: ConfigTamper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config.json one position short of the model's context: parity on the sample still holds,
    but a model loaded back from it is not the one exported."""
    plant_config(monkeypatch, tamper)
    out = tmp_path / "hf"
    assert main(["export", str(make_checkpoint(tmp_path)), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    record = json.loads((out / "export.json").read_text())
    assert record["parity"]["model.safetensors"]["max_abs_diff"] <= load_spec().threshold(GATE, "logits_atol")
    assert set(record["architecture_differing"]) == {"ctx", "config.json max_position_embeddings"}


@pytest.mark.holds(GATE)
def test_an_export_reads_back_as_the_model_s_configuration(tmp_path: Path) -> None:
    result = export_hf(make_checkpoint(tmp_path), tmp_path / "hf")
    exporters.certify(result)
    assert result.record["architecture_differing"] == {} and result.record["architecture_keys"] >= 10


def test_parity_outcome_reads_its_threshold_from_the_spec() -> None:
    atol = float(load_spec().threshold(GATE, "logits_atol"))
    reference = torch.zeros(1, 4, 3)
    assert parity.hf_outcome(parity.compare_logits("m", reference, reference + atol / 2)).ok
    assert not parity.hf_outcome(parity.compare_logits("m", reference, reference + atol * 2)).ok
    assert not parity.hf_outcome(parity.compare_logits("m", reference, torch.zeros(1, 4, 4))).ok


def biased_checkpoint(root: Path) -> Path:
    """A checkpoint with qkv_bias fitted to the sample text, so its biases are far from their zero init."""
    checkpoint = make_checkpoint(root, qkv_bias=True, fitted=True, **CONFIGS["gqa-tied-2layers"])
    assert all(bool(layer.attn.q.bias.abs().max() > 1e-3) for layer in load_trained(checkpoint).model.layers)
    return checkpoint


@pytest.mark.holds(GATE)
def test_a_model_with_qkv_biases_exports_as_qwen2_and_imports_back_identical(tmp_path: Path) -> None:
    checkpoint = biased_checkpoint(tmp_path)
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert "model.layers.1.self_attn.v_proj.bias" in load_file(tmp_path / "hf" / "model.safetensors")
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert weight_differences(checkpoint, tmp_path / "back") == []
    assert load_trained(tmp_path / "back").config.model.qkv_bias


def drop_biases(tensors: dict[str, torch.Tensor], _config: ModelConfig) -> None:
    for name in [n for n in tensors if n.endswith("_proj.bias")]:
        del tensors[name]


@pytest.mark.gate(GATE)
def test_an_export_that_drops_the_qkv_biases_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """transformers fills missing biases with zeros and runs: only the logits show the loss."""
    checkpoint = biased_checkpoint(tmp_path)
    plant_weights(monkeypatch, drop_biases)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    assert (out / "model.unverified.safetensors").is_file() and not (out / "model.safetensors").exists()


# -- GATE-EXPORT-001 rev 4: judged as a user loads it, every config.json field the model's -----------


def declared_bfloat16(config: dict[str, Any], _model: ModelConfig) -> None:
    """Planted: config.json declares bfloat16 for float32 weights."""
    config["dtype"] = "bfloat16"


def cache_off(config: dict[str, Any], _model: ModelConfig) -> None:
    """A field parity cannot see: generation without its key-value cache."""
    config["use_cache"] = False


def unruled_field(config: dict[str, Any], _model: ModelConfig) -> None:
    """A field the contracts' rule has none for (transformers reads it; what it does is unchecked)."""
    config["pretraining_tp"] = 1


@pytest.mark.gate(GATE)
def test_an_export_that_declares_another_dtype_than_its_weights_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain from_pretrained loads it in bfloat16: the loaded dtype is not the stored float32, and
    config.json's dtype is not the model's; exit 3 naming the gate, the weights renamed unverified."""
    plant_config(monkeypatch, declared_bfloat16)
    out = tmp_path / "hf"
    assert main(["export", str(make_checkpoint(tmp_path)), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    record = json.loads((out / "export.json").read_text())
    assert (record["loaded_dtypes"], record["stored_dtypes"]) == (["bfloat16"], ["float32"])
    assert record["architecture_differing"]["config.json dtype"] == {
        "model": "float32",
        "exported": "bfloat16",
    }
    assert (out / "model.unverified.safetensors").is_file()


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("tamper", [cache_off, unruled_field], ids=["use-cache-off", "unruled-field"])
def test_an_export_with_a_config_field_other_than_the_model_s_exits_3(
    tamper: ConfigTamper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fields parity cannot see, held to contracts.hf_export's rule: one written otherwise, or one
    the rule does not know, is named (its logits still match)."""
    plant_config(monkeypatch, tamper)
    out = tmp_path / "hf"
    assert main(["export", str(make_checkpoint(tmp_path)), "--format", "hf", "--out", str(out)]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    record = json.loads((out / "export.json").read_text())
    assert record["parity"]["model.safetensors"]["max_abs_diff"] <= load_spec().threshold(GATE, "logits_atol")
    assert len(record["architecture_differing"]) == 1


@pytest.mark.holds(GATE)
@pytest.mark.parametrize("biased", [False, True], ids=["llama", "qwen2"])
def test_an_export_loads_by_default_in_its_weights_dtype_with_every_field_the_model_s(
    tmp_path: Path, biased: bool
) -> None:
    checkpoint = biased_checkpoint(tmp_path) if biased else make_checkpoint(tmp_path)
    result = export_hf(checkpoint, tmp_path / "hf")
    exporters.certify(result)
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert result.record["loaded_dtypes"] == result.record["stored_dtypes"] == ["float32"]
    assert result.record["architecture_differing"] == {}
    assert result.record["architecture_keys"] >= len(written)


@pytest.mark.gate("GATE-INTEG-001")
def test_an_export_record_whose_config_declares_another_dtype_is_caught(tmp_path: Path) -> None:
    """The checker reads the stored dtypes from the weights file again and holds config.json's dtype to
    them: a config.json edited to bfloat16 after the fact (re-hashed as a forger would) is named."""
    from tests.support.ledger_support import assert_caught, edited

    out = tmp_path / "hf"
    assert main(["export", str(make_checkpoint(tmp_path)), "--format", "hf", "--out", str(out)]) == 0

    def bfloat16(_data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "dtype": "bfloat16"}))

    assert_caught(
        edited(out, bfloat16), "config.json: declares dtype 'bfloat16', but model.safetensors stores"
    )
