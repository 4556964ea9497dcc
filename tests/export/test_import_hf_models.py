"""Checkpoints made elsewhere: Llama-, Qwen2- and Qwen3-style directories, written by transformers itself
with their own tokenizers (tests/support/hf_fixtures.py), import, match transformers' logits
(GATE-EXPORT-001), and are then traced, bisected, scored and fine-tuned like any run. Data made by
another tokenizer is refused in GATE-DATA-007's name.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from contracts.evidence import EVIDENCE_FILE, read_evidence
from contracts.judges import judge
from contracts.spec import load_spec
from stack.artifacts import weight_files
from stack.cli import main
from stack.data.hf_specials import HfSettings
from stack.data.prepare import prepare_corpus
from stack.export import hf, hf_tokenizer, runtimes
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train.loop import build_optimizer
from stack.train.trained import load_trained
from tests.support.hf_fixtures import (
    VOCAB_PADDING,
    llama2_tokenizer,
    llama3_chat_tokenizer,
    llama_model,
    qwen2_model,
    qwen3_model,
)
from tests.support.train_support import evidence, smoke_args, train, unjudged, verdicts, write_corpus
from tools.integrity.record_checks import check_record_truth

EXPORT_GATE = "GATE-EXPORT-001"
TOKENIZER_GATE = "GATE-DATA-007"
PROMPT = "The gate holds when the run does"
# name → (how the directory is made, family, dtype of its weights, tied, sharded)
VARIANTS: dict[str, tuple[Callable[[Path], Path], str, str, bool, bool]] = {
    "llama3-untied-fp32": (lambda d: llama_model(d), "llama", "float32", False, False),
    "llama2-tied-fp16-sharded": (
        lambda d: llama_model(d, llama2_tokenizer, tie=True, dtype="float16", max_shard_size="100KB"),
        "llama",
        "float16",
        True,
        True,
    ),
    "qwen2-tied-bf16-sharded": (
        lambda d: qwen2_model(d, dtype="bfloat16", max_shard_size="100KB"),
        "qwen2",
        "bfloat16",
        True,
        True,
    ),
    "qwen2-untied-fp32": (lambda d: qwen2_model(d, tie=False), "qwen2", "float32", False, False),
    "qwen3-tied-bf16-head-dim-16": (
        lambda d: qwen3_model(d, dtype="bfloat16"),
        "qwen3",
        "bfloat16",
        True,
        False,
    ),
    "llama31-rope-llama3": (
        lambda d: llama_model(d, rope_parameters=LLAMA3_ROPE),
        "llama",
        "float32",
        False,
        False,
    ),
}
# Llama 3.1's RoPE at the fixtures' head_dim 12 and θ 500,000 (wavelengths 6.3, 56, 498 … positions):
# one frequency kept, one blended and four stretched, so each case of the rescaling moves the logits.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 0.5,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 48,
}
# The checkpoints the later tests use, one per family.
USED = {
    "llama": "llama3-untied-fp32",
    "qwen2": "qwen2-tied-bf16-sharded",
    "qwen3": "qwen3-tied-bf16-head-dim-16",
}
DROP = object()  # edit_config: remove the key


def import_dir(source: Path, out: Path) -> int:
    return main(["import-hf", str(source), "--out", str(out)])


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant's Hugging Face directory, made once."""
    root = tmp_path_factory.mktemp("hf")
    return {name: make(root / name) for name, (make, *_) in VARIANTS.items()}


@pytest.fixture(scope="module")
def imported(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family → OUT of `stack import-hf` of that family's checkpoint in USED."""
    root = tmp_path_factory.mktemp("imported")
    for family, name in USED.items():
        assert import_dir(sources[name], root / family) == 0
    return {family: root / family for family in USED}


@pytest.fixture(scope="module")
def data_dirs(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DATA_DIRs of one corpus, prepared with `--tokenizer hf:DIR` of each family's own tokenizer,
    of a copy of Llama's with two ids swapped (same size, other meaning), and of a Llama-2-style one
    with more ids than the Llama's embedding has rows."""
    root = tmp_path_factory.mktemp("data")
    corpus = write_corpus(root / "in")
    tokenizers = {
        **{family: sources[name] for family, name in USED.items()},
        "swapped": swapped_tokenizer(sources[USED["llama"]], root / "tokenizers" / "swapped"),
        "bigger": llama2_tokenizer(root / "tokenizers" / "bigger"),
    }
    for name, directory in tokenizers.items():
        prepare_corpus([corpus], root / "data" / name, tokenizer=f"hf:{directory}", val_fraction=0.25, seed=0)
    return {name: root / "data" / name for name in tokenizers}


def swapped_tokenizer(model_dir: Path, directory: Path) -> Path:
    """The model's tokenizer files with the ids of two ordinary tokens exchanged: same vocabulary size."""
    directory.mkdir(parents=True)
    record = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = record["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.__getitem__)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (directory / "tokenizer.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.copy(model_dir / "tokenizer_config.json", directory)
    return directory


def tokenizer_sha(directory: Path) -> str:
    return hashlib.sha256((directory / "tokenizer.json").read_bytes()).hexdigest()


# -- import and parity ------------------------------------------------------------------------


@pytest.mark.holds(EXPORT_GATE)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_checkpoint_imports_with_its_own_tokenizer_and_computes_transformers_logits(
    variant: str, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, family, dtype, tied, sharded = VARIANTS[variant]
    source, out = sources[variant], tmp_path / "out"
    assert import_dir(source, out) == 0
    assert f"{family}, weights {dtype} → float32" in capsys.readouterr().out
    record = json.loads((out / "import.json").read_text())
    trained = load_trained(out)
    config = trained.config.model
    assert record["family"] == family and record["weights"]["source_dtypes"] == [dtype]
    assert (len(record["weights"]["files"]) > 1) == sharded
    assert config.qkv_bias == (family == "qwen2") and config.tie_embeddings == tied
    assert config.qk_norm == (family == "qwen3") and (config.head_dim is not None) == (family == "qwen3")
    assert trained.tokenizer.name == "hf" and trained.tokenizer.sha256 == tokenizer_sha(source)
    assert config.vocab == trained.tokenizer.vocab_size + VOCAB_PADDING == record["model_vocab"]
    # Every weight is the stored one, upcast: bf16 and fp16 widen to fp32 exactly.
    stored: dict[str, torch.Tensor] = {}
    for file in weight_files(source):
        stored |= load_file(str(file))
    state = trained.model.state_dict()
    assert all(
        torch.equal(state[ours], stored[theirs].float()) for ours, theirs in hf.name_table(config).items()
    )
    # Logits on ids anywhere in the padded vocabulary, against transformers' own reading of DIR.
    windows = torch.randint(config.vocab, (3, config.ctx), generator=torch.Generator().manual_seed(1))
    difference = (runtimes.stack_logits(trained.model, windows) - runtimes.hf_logits(source, windows)).abs()
    assert float(difference.max()) <= load_spec().threshold(EXPORT_GATE, "logits_atol")


# family → (a tensor a careless converter leaves at its initial value, that value)
DROPPED = {"qwen2": ("layers.1.attn.k.bias", 0.0), "qwen3": ("layers.1.attn.q_norm.weight", 1.0)}


@pytest.mark.gate(EXPORT_GATE)
@pytest.mark.parametrize("family", sorted(DROPPED))
def test_a_converter_that_drops_one_tensor_of_its_family_is_refused_and_writes_nothing(
    family: str,
    sources: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Qwen2's k bias left at zero, a Qwen3's q norm gain at one: only the logits show it."""
    real = hf.from_hf_tensors
    name, fresh = DROPPED[family]

    def dropped(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
        state = real(tensors, config)
        state[name] = torch.full_like(state[name], fresh)  # planted
        return state

    monkeypatch.setattr(hf, "from_hf_tensors", dropped)
    assert import_dir(sources[USED[family]], tmp_path / "out") == 3
    assert f"gate fired: {EXPORT_GATE}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_llama31_checkpoint_imports_with_its_rescaled_rope(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """Llama 3.1 and 3.2 state `rope_type` llama3: its four parameters become the model's, and an
    export of the import states them again where transformers reads them."""
    assert import_dir(sources["llama31-rope-llama3"], tmp_path / "run") == 0
    config = load_trained(tmp_path / "run").config.model
    read = (config.rope_type, config.rope_factor, config.rope_low_freq_factor, config.rope_high_freq_factor)
    assert read == ("llama3", 8.0, 0.5, 4.0) and config.rope_original_ctx == 48
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["rope_parameters"] == written["rope_scaling"] == LLAMA3_ROPE


@pytest.mark.gate(EXPORT_GATE)
def test_an_import_that_drops_the_llama3_rope_is_refused_and_writes_nothing(
    sources: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reader that takes the base θ and leaves the rescaling out (the plain RoPE of the same θ):
    only the logits show it."""
    real = hf.model_config_from_hf

    def plain_rope(config: Any) -> dict[str, Any]:
        read = real(config)
        return {
            key: value for key, value in read.items() if key == "rope_theta" or not key.startswith("rope_")
        }

    monkeypatch.setattr(hf, "model_config_from_hf", plain_rope)
    assert import_dir(sources["llama31-rope-llama3"], tmp_path / "out") == 3
    assert f"gate fired: {EXPORT_GATE}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def edited_copy(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of `source` whose config.json has `changes` applied (DROP removes a key)."""
    shutil.copytree(source, target)
    path = target / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        config.pop(key, None) if value is DROP else config.__setitem__(key, value)
    path.write_text(json.dumps(config))
    return target


REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "rope-scaling-linear": (
        "llama",
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        "rope_type='linear' from rope_scaling",
    ),
    "rope-scaling-yarn": (
        "llama",
        {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}},
        "rope_type='yarn' from rope_scaling",
    ),
    "partial-rotary": ("llama", {"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    "qwen3-attention-bias": ("qwen3", {"attention_bias": True}, "attention_bias or mlp_bias (a qwen3's"),
    "gelu": ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    "llama-attention-bias": ("llama", {"attention_bias": True}, "attention_bias or mlp_bias"),
    "llama-mlp-bias": ("llama", {"mlp_bias": True}, "attention_bias or mlp_bias"),
    "qwen2-sliding-window": (
        "qwen2",
        {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1, "layer_types": DROP},
        "use_sliding_window (layer_types has 2 'sliding_attention' layers",
    ),
    "unknown-model-type": ("llama", {"model_type": "gpt2"}, "model_type 'gpt2'; import-hf reads llama"),
    "mistral-with-a-window": (
        "llama",
        {"model_type": "mistral", "sliding_window": 16},
        "sliding_window=16 below max_position_embeddings=",
    ),
    "vocab-below-the-tokenizer": (
        "llama",
        {"vocab_size": 300},
        "its tokenizer has 375 ids but config.json's vocab_size is 300",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_config_the_stack_cannot_compute_exactly_is_refused_in_one_line(
    case: str, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    family, changes, needle = REFUSED[case]
    source = edited_copy(sources[USED[family]], tmp_path / "src", **changes)
    assert import_dir(source, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("window", [None, "context"])
def test_a_mistral_whose_window_covers_its_context_imports_as_a_llama(
    window: str | None, sources: dict[str, Path], tmp_path: Path
) -> None:
    """A Mistral whose sliding_window is null, or spans its whole context, computes as a Llama: it
    imports, its logits held to transformers' own MistralForCausalLM by the parity check."""
    source = sources[USED["llama"]]
    context = json.loads((source / "config.json").read_text())["max_position_embeddings"]
    covering = None if window is None else context
    mistral = edited_copy(source, tmp_path / "mistral", model_type="mistral", sliding_window=covering)
    assert import_dir(mistral, tmp_path / "out") == 0


@pytest.mark.parametrize(
    ("removed", "needle"),
    [
        (("tokenizer.json", "tokenizer_config.json"), "has no tokenizer: neither tokenizer.json"),
        # Nothing names the end of a document: the line says which file to add it to.
        (
            ("tokenizer_config.json", "generation_config.json"),
            "names no end-of-sequence token (no eos_token in tokenizer_config.json or "
            "special_tokens_map.json, no eos_token_id in generation_config.json or config.json)",
        ),
    ],
)
def test_a_directory_without_its_tokenizer_is_refused_in_one_line(
    removed: tuple[str, ...],
    needle: str,
    sources: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = edited_copy(sources[USED["llama"]], tmp_path / "src", eos_token_id=DROP)
    for name in removed:
        (source / name).unlink()
    assert import_dir(source, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert "tokenizer.json" in removed or "copy tokenizer_config.json from the model's repository" in err


def eos_moved(directory: Path, layout: str) -> None:
    """The Llama's eos_token (and bos_token) moved out of tokenizer_config.json: into
    special_tokens_map.json, the older layout transformers still reads, or nowhere but
    generation_config.json's and config.json's eos_token_id."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    moved = {key: config.pop(key) for key in ("bos_token", "eos_token")}
    path.write_text(json.dumps(config))
    if layout == "special_tokens_map":
        (directory / "special_tokens_map.json").write_text(json.dumps(moved))


@pytest.mark.holds(EXPORT_GATE)
@pytest.mark.parametrize("layout", ["special_tokens_map", "config_ids"])
def test_an_eos_named_where_transformers_reads_it_imports_and_exports_back_unchanged(
    layout: str, sources: dict[str, Path], tmp_path: Path
) -> None:
    """The eos_token only in special_tokens_map.json is not refused: read as transformers
    reads it, the import ends documents with it, and the export reads back as the source did."""
    from transformers import AutoTokenizer

    source = edited_copy(sources[USED["llama"]], tmp_path / "src")
    eos_moved(source, layout)
    assert import_dir(source, tmp_path / "out") == 0
    tokenizer = load_trained(tmp_path / "out").tokenizer
    assert (
        tokenizer.eot_token == "<|end_of_text|>"
        and tokenizer.eot_id == json.loads((source / "config.json").read_text())["eos_token_id"]
    )
    assert main(["export", str(tmp_path / "out"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    before, after = (AutoTokenizer.from_pretrained(str(d)) for d in (source, tmp_path / "hf"))
    assert (after.bos_token, after.eos_token) == (before.bos_token, before.eos_token)
    assert (before.eos_token is None) == (layout == "config_ids")


@pytest.mark.parametrize(
    ("family", "changes"),
    [
        ("llama", {"hidden_act": "swish", "rope_scaling": None}),  # swish is silu; null scaling is none
        # A sliding window switched on for no layer (max_window_layers = all of them) is full attention.
        (
            "qwen2",
            {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 3, "layer_types": DROP},
        ),
    ],
    ids=["swish-and-null-rope-scaling", "qwen2-window-on-no-layer"],
)
def test_spellings_of_what_the_stack_computes_are_accepted(
    family: str, changes: dict[str, Any], sources: dict[str, Path], tmp_path: Path
) -> None:
    source = edited_copy(sources[USED[family]], tmp_path / "src", **changes)
    assert import_dir(source, tmp_path / "out") == 0


@pytest.mark.holds(EXPORT_GATE)
@pytest.mark.parametrize("family", sorted(USED))
def test_an_imported_model_exports_back_as_its_family_with_its_tokenizer_unchanged(
    family: str, imported: dict[str, Path], sources: dict[str, Path], tmp_path: Path
) -> None:
    assert main(["export", str(imported[family]), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (
        config["model_type"] == family
        and config["vocab_size"] == load_trained(imported[family]).config.model.vocab
    )
    assert tokenizer_sha(tmp_path / "hf") == tokenizer_sha(sources[USED[family]])
    assert import_dir(tmp_path / "hf", tmp_path / "back") == 0
    before, after = (
        load_trained(imported[family]).model.state_dict(),
        load_trained(tmp_path / "back").model.state_dict(),
    )
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# -- use: trace, bisect, eval -----------------------------------------------------------------


def planted_copy(source: Path, target: Path, plant: Callable[[GPT], None]) -> Path:
    """A checkpoint of `source`'s model with `plant` applied to its weights."""
    trained = load_trained(source)
    with torch.no_grad():
        plant(trained.model)
    optimizer = build_optimizer(trained.model, trained.config, torch.device("cpu"))
    state = trained.checkpoint.state
    return ckpt.save_checkpoint(target, trained.checkpoint.step, trained.model, optimizer, state)


def scale_ffn_up_rows(model: GPT) -> None:
    model.layers[1].ffn.up.weight[8:16] *= 1.5


def shift_k_bias(model: GPT) -> None:
    model.layers[1].attn.k.bias[:6] += 0.5


def scale_q_norm_gain(model: GPT) -> None:
    model.layers[1].attn.q_norm.weight[:4] *= 1.5


# family → (what is planted in layer 1, the site the bisection must name)
PLANTS = {
    "llama": (scale_ffn_up_rows, "layers.1.ffn_up"),
    "qwen2": (shift_k_bias, "layers.1.k"),
    "qwen3": (scale_q_norm_gain, "layers.1.q_norm"),
}


@pytest.mark.parametrize("family", sorted(USED))
def test_an_imported_model_traces_and_bisection_names_the_planted_site(
    family: str, imported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = imported[family]
    assert main(["trace", str(out), "--prompt", PROMPT]) == 0
    shown = capsys.readouterr().out
    assert "verdict: clean" in shown and "ffn_swiglu" in shown
    record = evidence(sorted((out / "traces").glob("*"))[-1])
    assert {g["id"]: g["verdict"] for g in record["gates"]}["GATE-TRACE-002"] == "PASS"
    plant, site = PLANTS[family]
    broken = planted_copy(out, tmp_path / "broken", plant)
    assert main(["trace", str(out), "--prompt", PROMPT, "--against", str(broken)]) == 3
    assert f"FIRST DIVERGENCE: {site} " in capsys.readouterr().out
    assert main(["trace", str(out), "--prompt", PROMPT, "--dtype-b", "bf16"]) == 0  # rounding is no bug
    assert "verdict: agree" in capsys.readouterr().out


@pytest.mark.parametrize("family", sorted(USED))
def test_an_imported_model_scores_bits_per_byte_over_the_original_bytes(
    family: str, imported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "The gate holds: héllo wörld ☃ — def main():\n    return 42\r\n" * 12
    file = tmp_path / "text.txt"
    file.write_bytes(text.encode("utf-8"))
    assert main(["eval", str(imported[family]), "--text", str(file)]) == 0
    result = json.loads(capsys.readouterr().out)
    tokenizer = load_trained(imported[family]).tokenizer
    assert result["bytes"] == len(text.encode("utf-8")) and result["tokens"] == len(tokenizer.encode(text))
    nats = result["loss"] * result["predicted_tokens"]
    assert math.isclose(result["bits_per_byte"], nats / math.log(2) / result["bytes"], rel_tol=1e-9)


# -- use: fine-tune, on its own tokenizer's data only (GATE-DATA-007) -------------------------


@pytest.mark.holds(TOKENIZER_GATE)
@pytest.mark.parametrize("family", sorted(USED))
def test_an_imported_model_fine_tunes_on_data_prepared_with_its_own_tokenizer(
    family: str,
    imported: dict[str, Path],
    data_dirs: dict[str, Path],
    sources: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    assert train([*smoke_args(data_dirs[family], run), "--init-from", str(imported[family])]) == 0
    assert evidence(run)["run"]["kind"] == "finetune"
    assert unjudged(run, "finetune") == {} and verdicts(run)[TOKENIZER_GATE] == "PASS"
    tuned = load_trained(run)
    assert tuned.tokenizer.sha256 == tokenizer_sha(sources[USED[family]])
    assert (
        tuned.config.model == load_trained(imported[family]).config.model
    )  # the imported shape, padding kept
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "The gate", "--tokens", "6", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("The gate")


@pytest.mark.gate(TOKENIZER_GATE)
@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("swapped", "the data's tokenizer (hf "),  # same size: only the sha256 tells
        ("bigger", "the data's tokenizer has 400 ids, the model's embedding 388 rows"),
    ],
)
def test_fine_tuning_on_data_of_another_tokenizer_is_refused_and_leaves_nothing(
    data: str,
    needle: str,
    imported: dict[str, Path],
    data_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    assert train([*smoke_args(data_dirs[data], run), "--init-from", str(imported["llama"])]) == 3
    err = capsys.readouterr().err
    assert f"gate fired: {TOKENIZER_GATE}" in err and needle in err, err
    assert not run.exists()


@pytest.mark.gate(TOKENIZER_GATE)
def test_the_judge_compares_identities_not_sizes() -> None:
    same = {
        "data_tokenizer": "hf",
        "data_tokenizer_identity": "a" * 64,
        "data_probe_sha256": "c" * 64,
        "data_vocab_size": 375,
        "model_tokenizer": "hf",
        "model_tokenizer_identity": "a" * 64,
        "model_probe_sha256": "c" * 64,
        "model_vocab": 388,
    }
    assert judge(TOKENIZER_GATE, same) == []
    assert judge(TOKENIZER_GATE, {**same, "model_tokenizer_identity": "b" * 64}) != []
    assert judge(TOKENIZER_GATE, {**same, "model_probe_sha256": "d" * 64}) != []
    assert judge(TOKENIZER_GATE, {**same, "data_vocab_size": 389}) != []
    assert "malformed" in judge(TOKENIZER_GATE, {**same, "data_tokenizer_identity": None})[0]


# -- GATE-EXPORT-001 rev 4: the model's special tokens survive import → export ----------------

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What does the gate hold?"},
    {"role": "assistant", "content": "What the run did."},
    {"role": "user", "content": "And then?"},
]


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Llama with a bos, Llama 3's chat markers and chat template, and its import."""
    root = tmp_path_factory.mktemp("chat-llama")
    source = llama_model(root / "src", llama3_chat_tokenizer)
    assert import_dir(source, root / "imported") == 0
    return source, root / "imported"


def as_transformers_reads(directory: Path) -> dict[str, Any]:
    """What a user's transformers reads from a directory: special tokens and ids, template, ids."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer, config = (
        AutoTokenizer.from_pretrained(str(directory)),
        AutoConfig.from_pretrained(str(directory)),
    )
    chat = tokenizer.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True, return_dict=False)
    return {
        "specials": dict(tokenizer.special_tokens_map),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, config.bos_token_id, config.eos_token_id],
        "template": tokenizer.chat_template,
        "encode": tokenizer.encode("The gate holds."),
        "chat": list(chat),
        "text": tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True),
    }


@pytest.mark.holds(EXPORT_GATE)
def test_an_untouched_import_exports_back_as_transformers_read_the_model(
    chat_llama: tuple[Path, Path], tmp_path: Path
) -> None:
    """Import → export of a Llama kept its weights but dropped its bos_token, named
    the end of text its bos_token_id, and its own template rendered without <|begin_of_text|>."""
    source, imported = chat_llama
    assert main(["export", str(imported), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    before, after = as_transformers_reads(source), as_transformers_reads(tmp_path / "hf")
    assert after == before
    assert before["specials"]["bos_token"] == "<|begin_of_text|>" and before["text"].startswith(
        "<|begin_of_text|>"
    )
    record = json.loads((tmp_path / "hf" / "export.json").read_text())
    assert record["tokenizer_differing"] == {} and record["tokenizer_keys"] == 12
    assert record["special_expected"]["config.json bos_token_id"] == before["ids"][2] != before["ids"][3]


def only_eos_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted writer: tokenizer_config.json holds the eos_token alone (and the template)."""
    write = hf_tokenizer.write_tokenizer_files

    def planted(out: Path, tokenizer: Any, max_length: int, chat_template: str | None = None) -> None:
        write(out, tokenizer, max_length, chat_template)
        config = json.loads((out / "tokenizer_config.json").read_text())
        kept = {
            key: config[key]
            for key in ("eos_token", "chat_template", "added_tokens_decoder")
            if key in config
        }
        (out / "tokenizer_config.json").write_text(json.dumps(kept))

    monkeypatch.setattr(hf_tokenizer, "write_tokenizer_files", planted)


def template_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that leaves the model's chat template out of the export."""
    write = hf_tokenizer.write_tokenizer_files
    monkeypatch.setattr(
        hf_tokenizer,
        "write_tokenizer_files",
        lambda out, tok, length, _template=None: write(out, tok, length),
    )


def end_of_text_as_bos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted config.json: bos_token_id is the tokenizer's end of text, as for the stack's own models."""
    monkeypatch.setattr(hf, "model_ids", lambda tok: {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id})


@pytest.mark.gate(EXPORT_GATE)
@pytest.mark.parametrize(
    ("plant", "needle"),
    [
        (only_eos_written, "the tokenizer transformers reads back is not the model's own: bos_token,"),
        (
            template_dropped,
            "the tokenizer transformers reads back is not the model's own: chat, chat_template",
        ),
        (end_of_text_as_bos, "other special ids than the model's own (config.json bos_token_id is "),
    ],
    ids=["bos-dropped", "template-dropped", "bos-id-is-eos"],
)
def test_an_export_that_loses_the_model_s_special_tokens_exits_3_unverified(
    plant: Callable[[pytest.MonkeyPatch], None],
    needle: str,
    chat_llama: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logits match and the architecture reads back, but the export's users get other prompts."""
    plant(monkeypatch)
    out = tmp_path / "hf"
    assert main(["export", str(chat_llama[1]), "--format", "hf", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"gate fired: {EXPORT_GATE}" in err and needle in err, err
    assert (out / "model.unverified.safetensors").is_file() and not (out / "model.safetensors").exists()


@pytest.mark.gate(EXPORT_GATE)
def test_an_import_that_keeps_less_than_the_model_names_is_refused_and_writes_nothing(
    chat_llama: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An importer that kept tokenizer_config.json but not special_tokens_map.json, which names the
    bos and eos of this (older-layout) model: what it would carry is not what transformers reads."""
    source = edited_copy(chat_llama[0], tmp_path / "src")
    eos_moved(source, "special_tokens_map")
    read = HfSettings.read

    def planted(directory: Path) -> HfSettings:
        found = read(directory)
        return HfSettings(
            {k: v for k, v in found.files.items() if k != "special_tokens_map.json"}, found.model_ids
        )

    monkeypatch.setattr(HfSettings, "read", staticmethod(planted))
    assert import_dir(source, tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert f"gate fired: {EXPORT_GATE}" in err and "bos_token" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("command", "key"), [("export", "tokenizer_keys"), ("import", "special_expected")])
def test_tokens_read_back_are_held_to_the_result_file(
    command: str, key: str, chat_llama: tuple[Path, Path], tmp_path: Path
) -> None:
    """GATE-EXPORT-001's special and tokenizer values restated in the record, the result file left
    as written: the checker derives them from export.json (import.json) and names the field."""
    out = tmp_path / "out"
    if command == "export":
        assert main(["export", str(chat_llama[1]), "--format", "hf", "--out", str(out)]) == 0
    else:
        assert import_dir(chat_llama[0], out) == 0
    assert check_record_truth(read_evidence(out / EVIDENCE_FILE), out, load_spec()).violations == []
    data = json.loads((out / EVIDENCE_FILE).read_text())
    measured = next(g for g in data["gates"] if g["id"] == EXPORT_GATE)["measured"]
    measured[key] = 3 if key == "tokenizer_keys" else {**measured[key], "config.json bos_token_id": 0}
    (out / EVIDENCE_FILE).write_text(json.dumps(data))
    found = check_record_truth(read_evidence(out / EVIDENCE_FILE), out, load_spec()).violations
    assert any(f"GATE-EXPORT-001].measured.{key}" in str(v) for v in found), found
