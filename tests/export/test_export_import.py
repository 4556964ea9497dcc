"""`stack import-hf` and the exported tokenizer: models made elsewhere come in, and text encodes alike."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.spec import load_spec
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer, Tokenizer, train_bpe
from stack.export import deps, exporters, hf, hf_tokenizer, runtimes
from stack.export.exporters import ExportRequest
from stack.export.sample import BUILTIN_TEXT
from stack.model.config import ModelConfig
from stack.train.trained import load_trained
from tests.support.export_support import make_checkpoint

GATE = "GATE-EXPORT-001"
TEXTS = ["héllo wörld\n\tdef f(x):  return x ** 2  # ☃ 🙂", "", " leading space", "a\r\nb\x00c"]


def llama_made_by_transformers(root: Path) -> Path:
    """A randomly initialised LlamaForCausalLM saved by transformers itself, plus our byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=257,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    directory = root / "made-elsewhere"
    LlamaForCausalLM(config).save_pretrained(directory)
    hf_tokenizer.write_tokenizer_files(directory, ByteTokenizer(), 32)
    return directory


@pytest.mark.holds(GATE)
def test_a_llama_made_by_transformers_imports_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = llama_made_by_transformers(tmp_path)
    out = tmp_path / "imported"
    assert main(["import-hf", str(source), "--out", str(out)]) == 0
    assert "logits within" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["model"]["n_kv_heads"] == 2
    assert main(["sample", str(out), "--prompt", "def ", "--tokens", "8"]) == 0
    trained = load_trained(out)
    windows = torch.arange(64).view(2, 32) % 257
    ours = runtimes.stack_logits(trained.model, windows)
    theirs = runtimes.hf_logits(source, windows)
    assert (ours - theirs).abs().max() <= load_spec().threshold(GATE, "logits_atol")
    record = json.loads((out / "import.json").read_text())
    assert record["parity"]["ok"] and record["checkpoint"] == "checkpoints/step-0000000"


@pytest.mark.gate(GATE)
def test_a_planted_import_bug_writes_nothing_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = llama_made_by_transformers(tmp_path)
    real = hf.from_hf_tensors

    def swapped(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
        state = real(tensors, config)
        state["layers.1.ffn.gate.weight"], state["layers.1.ffn.up.weight"] = (
            state["layers.1.ffn.up.weight"],
            state["layers.1.ffn.gate.weight"],
        )
        return state

    monkeypatch.setattr(hf, "from_hf_tensors", swapped)
    assert main(["import-hf", str(source), "--out", str(tmp_path / "imported")]) == 3
    assert "gate fired: GATE-EXPORT-001" in capsys.readouterr().err
    assert not (tmp_path / "imported").exists()


def exported(root: Path, tokenizer: Tokenizer | None = None, **model: Any) -> Path:
    """An HF export of a fresh tiny checkpoint, at root/hf."""
    checkpoint = make_checkpoint(root, tokenizer, **model)
    out = root / "hf"
    exporters.export(ExportRequest(checkpoint=checkpoint, fmt="hf", out=out))
    return out


def test_exported_tokenizers_encode_like_the_stack(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    bpe = train_bpe([BUILTIN_TEXT] * 4, vocab_size=300)
    for tokenizer in (ByteTokenizer(), bpe):
        out = exported(tmp_path / tokenizer.name, tokenizer)
        theirs = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        assert theirs.eos_token_id == tokenizer.eot_id
        for text in [*TEXTS, BUILTIN_TEXT]:
            ids = tokenizer.encode(text)
            assert theirs(text, add_special_tokens=False)["input_ids"] == ids
            assert theirs.decode(ids) == text
        assert hf_tokenizer.read_tokenizer(out).sha256 == tokenizer.sha256


def test_bpe_model_round_trips_with_its_tokenizer(tmp_path: Path) -> None:
    bpe = train_bpe([BUILTIN_TEXT] * 4, vocab_size=300)
    out = exported(tmp_path, bpe, n_kv_heads=1)
    assert main(["import-hf", str(out), "--out", str(tmp_path / "back")]) == 0
    assert load_trained(tmp_path / "back").tokenizer.sha256 == bpe.sha256


def test_without_the_stack_record_an_export_imports_with_its_tokenizer_json(tmp_path: Path) -> None:
    """The stack's record wins when present; without it the directory is a model like any other."""
    source = exported(tmp_path)
    (source / hf_tokenizer.STATE_FILE).unlink()
    assert main(["import-hf", str(source), "--out", str(tmp_path / "back")]) == 0
    tokenizer = load_trained(tmp_path / "back").tokenizer
    assert tokenizer.name == "hf" and tokenizer.eot_id == ByteTokenizer().eot_id
    assert tokenizer.sha256 == hashlib.sha256((source / "tokenizer.json").read_bytes()).hexdigest()
    assert tokenizer.encode(TEXTS[0]) == ByteTokenizer().encode(TEXTS[0])


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        ("no-tokenizer-at-all", "has no tokenizer: neither tokenizer.json"),
        ("pickled-weights", "pickled .bin weights"),
        ("rope-scaling", "rope_type='linear'"),
        ("other-architecture", "model_type 'gpt2'"),
        # The architecture is read first: a GPT-2 directory without its weights and tokenizer is
        # refused for what it is, not sent to fetch files that could never be imported.
        ("other-architecture-alone", "model_type 'gpt2'"),
        ("bias", "attention_bias or mlp_bias"),
        ("not-a-model-dir", "needs a Hugging Face model directory"),
    ],
)
def test_import_refuses_what_it_cannot_read(
    breakage: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = exported(tmp_path)
    if breakage == "no-tokenizer-at-all":
        for name in (hf_tokenizer.STATE_FILE, "tokenizer.json"):
            (source / name).unlink()
    elif breakage == "pickled-weights":
        (source / "model.safetensors").rename(source / "pytorch_model.bin")
    elif breakage == "rope-scaling":
        edit_config(source, rope_scaling={"rope_type": "linear", "factor": 2.0})
    elif breakage == "other-architecture":
        edit_config(source, model_type="gpt2")
    elif breakage == "other-architecture-alone":
        edit_config(source, model_type="gpt2")
        for path in source.iterdir():
            if path.name != "config.json":
                path.unlink()
    elif breakage == "bias":
        edit_config(source, attention_bias=True)
    else:
        source = tmp_path / "run"
    assert main(["import-hf", str(source), "--out", str(tmp_path / "back")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_import_never_replaces_a_directory_it_did_not_write(tmp_path: Path) -> None:
    source = exported(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["import-hf", str(source), "--out", str(mine)]) == 2
    assert main(["import-hf", str(source), "--out", str(mine), "--force"]) == 2
    assert (mine / "notes.txt").read_text() == "keep me"
    back = tmp_path / "back"
    assert main(["import-hf", str(source), "--out", str(back)]) == 0
    assert main(["import-hf", str(source), "--out", str(back)]) == 2
    assert main(["import-hf", str(source), "--out", str(back), "--force"]) == 0


def test_missing_extra_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = make_checkpoint(tmp_path)
    monkeypatch.setitem(deps.NEEDS, "onnx", ("onnx", "no_such_module_for_this_test"))
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "pip install 'gatestack[export]'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
