"""What a Hugging Face export's config.json must state of the model, field by field, and the dtypes
its weights file stores.

The export writes config.json itself (stack.export.hf.hf_config), and a field it writes wrongly
moves what a user gets while the stack's own read-back agrees with it: `"dtype": "bfloat16"` over
float32 weights makes transformers' plain `from_pretrained` load the model in bfloat16, while the
export's parity loads it in float32 by asking for float32 and never reads the field. So the
statute lives here, from the model's [model] table and the dtype its weights are stored in, apart
from the writer: GATE-EXPORT-001's check architecture holds every field of the written config.json,
as transformers loads it, to `expected_fields` (a field with no rule here is a difference too, so a
new field cannot pass unread); its check loaded holds the dtype a plain load gives to the dtypes
`stored_dtypes` reads in the weights file, which the checker reads again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contracts.model_shape import DEFAULTS, head_width

# safetensors' dtype names → torch's (without the `torch.` prefix).
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
# Bytes of one element of each dtype a safetensors file stores, by torch's name.
ELEMENT_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
# The names one config.json field goes by: transformers 5 reads `dtype`, earlier ones `torch_dtype`.
DTYPE_FIELDS = ("dtype", "torch_dtype")
# The fields GATE-EXPORT-001's check special holds to the model's own ids (special_expected), not
# this rule: a model made elsewhere keeps the bos, eos and pad its config.json named at import.
SPECIAL_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# model_type → the class transformers builds for it.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# A llama3 RoPE's [model] keys → their names in config.json's `rope_parameters`.
LLAMA3_ROPE_KEYS = {
    "rope_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_ctx": "original_max_position_embeddings",
}
HEADER_LENGTH_BYTES = 8


def stored_dtypes(header: Mapping[str, Any]) -> list[str]:
    """The dtypes, sorted and each once, of the tensors a safetensors file stores, read from its
    header (contracts.reading.safetensors_header)."""
    names = {entry.get("dtype") for key, entry in header.items() if key != "__metadata__"}
    return sorted(SAFETENSORS_DTYPES.get(str(name), str(name)) for name in names)


def expected_fields(model: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """Every field of a Llama's config.json (a Qwen2's, for a model with q/k/v biases; a Qwen3's, for
    one with q/k head norms) that computes what the model a [model] table describes computes, with
    weights stored in `dtype`."""
    table = {**DEFAULTS, **model}
    family = "qwen2" if table["qkv_bias"] else "qwen3" if table["qk_norm"] else "llama"
    fields: dict[str, Any] = {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": table["vocab"],
        "hidden_size": table["d_model"],
        "intermediate_size": table["ffn_hidden"],
        "num_hidden_layers": table["n_layers"],
        "num_attention_heads": table["n_heads"],
        "num_key_value_heads": table["n_kv_heads"],
        "head_dim": head_width(table),
        "hidden_act": "silu",
        "max_position_embeddings": table["ctx"],
        "rms_norm_eps": table["norm_eps"],
        **rope_fields(table),
        "tie_word_embeddings": bool(table["tie_embeddings"]),
        "attention_dropout": 0.0,
        "initializer_range": table["init_std"],
        "dtype": dtype,
        "use_cache": True,
    }
    return fields | family_fields(family, int(table["n_layers"]))


def family_fields(family: str, n_layers: int) -> dict[str, Any]:
    """The fields of one family's config.json beyond a Llama's common ones: a Qwen2's and a Qwen3's
    say every layer attends to the whole context (and a Qwen3's that o carries no bias); a Llama's
    that neither o nor the MLP does."""
    if family == "llama":
        return {"attention_bias": False, "mlp_bias": False}
    windows = {"use_sliding_window": False, "layer_types": ["full_attention"] * n_layers}
    return windows | ({"attention_bias": False} if family == "qwen3" else {})


def rope_fields(table: Mapping[str, Any]) -> dict[str, Any]:
    """config.json's RoPE fields for a [model] table whose options are filled in (DEFAULTS):
    `rope_parameters`, which transformers 5 reads, and `rope_theta`, where earlier versions read
    the base; a llama3 RoPE's parameters also as `rope_scaling`, where those versions read them."""
    theta = float(table["rope_theta"])
    if table["rope_type"] == "default":
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}, "rope_theta": theta}
    rope = {"rope_type": table["rope_type"], "rope_theta": theta}
    rope |= {name: table[key] for key, name in LLAMA3_ROPE_KEYS.items()}
    return {"rope_parameters": rope, "rope_scaling": rope, "rope_theta": theta}


def field_differences(loaded: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Field → {"model": what `expected_fields` says, "exported": what transformers loaded} for every
    field of the written config.json (`loaded`: each as loaded) that is not the rule's, every field
    the rule has that the file lacks, and every field the rule has none for; the special ids aside."""
    differing = {}
    for field, value in loaded.items():
        if field in SPECIAL_FIELDS:
            continue
        want = expected.get("dtype" if field in DTYPE_FIELDS else field, _NO_RULE)
        if value != want or isinstance(value, bool) != isinstance(want, bool):
            differing[f"config.json {field}"] = {
                "model": None if want is _NO_RULE else want,
                "exported": value,
            }
    named = {"dtype" if field in DTYPE_FIELDS else field for field in loaded}
    for field in expected.keys() - named:
        differing[f"config.json {field}"] = {"model": expected[field], "exported": None}
    return differing


_NO_RULE = object()


def dtypes_fit(file_bytes: int, elements: int, dtypes: Sequence[str]) -> bool | None:
    """Whether a safetensors file of `file_bytes` bytes can hold a model of `elements` parameters
    stored in `dtypes`: its tensors' data is elements × an element size between the least and the
    largest of those dtypes', and its header (8 bytes of length, then a JSON entry of some hundred
    bytes per tensor) is smaller than one byte per element, since every tensor of a model holds far
    more elements than its entry has bytes. So a float32 file is not a bfloat16 one (an
    export's stored dtypes restated). None where a dtype is not known, or nothing is stated."""
    sizes = [ELEMENT_BYTES.get(d) for d in dtypes]
    if not sizes or elements <= 0 or any(size is None for size in sizes):
        return None
    least, most = min(s for s in sizes if s is not None), max(s for s in sizes if s is not None)
    return elements * least + HEADER_LENGTH_BYTES <= file_bytes < elements * (most + 1)
