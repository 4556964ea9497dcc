"""The stack's GPT as a Hugging Face Llama, Qwen2 or Qwen3: tensor names, config.json, and the way back.

The models compute the same function, so the conversion is a renaming:

- RoPE. `stack.model.layers.apply_rope` rotates the two *halves* of each head,
  (x1 cos - x2 sin, x1 sin + x2 cos), with inverse frequencies theta^(-i / (head_dim/2)); HF's
  Llama and Qwen2 do exactly this through `rotate_half` with 1 / theta^(2i / head_dim). The rows
  of q and k therefore pass through unchanged. The permutation in HF's conversion script for
  Meta's checkpoints (which rotate *interleaved* pairs) must NOT be applied: it is what the
  falsifier of GATE-EXPORT-001 plants. Llama 3.1's rescaled frequencies (`rope_type` llama3 in
  `rope_parameters`) are the stack's `rope_type = "llama3"` with its four parameters; transformers'
  other rope types (linear, dynamic, yarn, longrope) are refused.
- GQA. q has n_heads * head_dim rows, k and v n_kv_heads * head_dim, head-major in both; a head's
  width is `head_dim`, which need not be hidden_size / num_attention_heads (Qwen3-0.6B: 1024 wide,
  16 heads of 128).
- Tied embeddings. The stack stores one matrix; HF omits `lm_head.weight` and sets
  `tie_word_embeddings`. An untied model exports both.
- RMSNorm. Both compute x * rsqrt(mean(x²) + eps) * weight in fp32; eps goes to `rms_norm_eps`.
- Families. A Qwen2 is a Llama whose q, k and v projections carry biases (o and the MLP none):
  the stack's `qkv_bias`. A Qwen3 is a Llama whose q and k heads are RMS-normed before RoPE
  (`q_norm`, `k_norm`, one gain of head_dim each): the stack's `qk_norm`. A model with biases
  exports as Qwen2, one with the head norms as Qwen3, one with neither as Llama, so no bias or
  norm is ever dropped on the way out.

What the stack's model cannot compute exactly is refused when a config.json is read
(`model_config_from_hf`), one line naming every reason, rather than imported approximately.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput
from contracts.hf_export import ARCHITECTURES, LLAMA3_ROPE_KEYS, family_fields, rope_fields
from contracts.model_shape import DEFAULTS
from stack.export.hf_tokenizer import model_ids
from stack.model import names
from stack.model.config import ModelConfig

if TYPE_CHECKING:
    import torch

    from stack.data.tokenizer import Tokenizer
    from stack.model.gpt import GPT

# Within block i: stack name → HF name (both prefixed by the layer), from the one table of names.
BLOCK_NAMES = {f"{m.module}.weight": f"{m.hf}.weight" for m in names.BLOCK} | {
    f"{ours}.weight": f"{theirs}.weight" for ours, theirs in names.BLOCK_NORMS.items()
}
TOP_NAMES = {f"{m.module}.weight": f"{m.hf}.weight" for m in names.MODEL} | {
    f"{ours}.weight": f"{theirs}.weight" for ours, theirs in names.MODEL_NORMS.items()
}
# The q/k/v biases of a `qkv_bias` model (Qwen2), named like the weights.
BIAS_NAMES = {f"{m.module}.bias": f"{m.hf}.bias" for m in (names.block_matrix(site) for site in names.BIASED)}
# The per-head q and k norms of a `qk_norm` model (Qwen3).
HEAD_NORM_NAMES = {f"{ours}.weight": f"{theirs}.weight" for ours, theirs in names.HEAD_NORMS.items()}
# Older transformers saved RoPE's inverse frequencies as a buffer; they are recomputed, not weights.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# What import-hf reads: the families the stack writes (contracts.hf_export.ARCHITECTURES), and a
# Mistral, which is a Llama with a sliding window (the same weights, names and arithmetic when the
# window covers the whole context; read as a Llama).
READ_TYPES = (*ARCHITECTURES, "mistral")
# `swish` is transformers' other name for SiLU (both map to nn.SiLU).
SILU_NAMES = ("silu", "swish")


# What `stack export` offers for a model no Hugging Face family holds; `stack lora export` and
# `stack lora import`, which have no --format, pass their own ways (stack.export.peft_exchange).
EXPORT_WAY = "use --format onnx"


def family(config: ModelConfig, way: str = EXPORT_WAY) -> str:
    """The HF model_type that computes what `GPT(config)` computes: qwen2 with q/k/v biases, qwen3
    with q/k head norms, else llama.

    An architecture option neither family has (experts) is refused here, before anything is
    written, rather than exported as a model that computes something else; `way` is what the
    calling command offers instead.
    """
    if config.moe:
        raise BadInput(
            f"a model with moe_experts={config.moe_experts} cannot be exported as a Hugging Face Llama "
            f"or Qwen2 (they have no experts); {way}"
        )
    if config.diff_attn or config.mod:
        option = "diff_attn=true" if config.diff_attn else f"mod_every={config.mod_every}"
        raise BadInput(
            f"a model with {option} cannot be exported as a Hugging Face Llama or Qwen2 (they have "
            f"no differential attention or depth routing); {way}"
        )
    if config.qkv_bias and config.qk_norm:
        raise BadInput(
            "a model with both qkv_bias and qk_norm cannot be exported as a Hugging Face model (Qwen2 "
            f"has the biases, Qwen3 the norms, none both); {way}"
        )
    return "qwen2" if config.qkv_bias else "qwen3" if config.qk_norm else "llama"


def name_table(config: ModelConfig) -> dict[str, str]:
    """Every stack tensor name → its HF name, for a model of this shape (lm_head only when untied)."""
    table = {k: v for k, v in TOP_NAMES.items() if k != "lm_head.weight" or not config.tie_embeddings}
    block = BLOCK_NAMES | (BIAS_NAMES if config.qkv_bias else {})
    block |= HEAD_NORM_NAMES if config.qk_norm else {}
    for i in range(config.n_layers):
        table |= {f"layers.{i}.{ours}": f"{names.HF_LAYERS}.{i}.{theirs}" for ours, theirs in block.items()}
    return table


def to_hf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under HF names, as separate contiguous tensors (safetensors-ready)."""
    state = model.state_dict()
    return {
        hf: state[ours].detach().cpu().contiguous().clone() for ours, hf in name_table(model.config).items()
    }


def from_hf_tensors(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF weights → a state dict for `GPT(config)` in fp32 (bf16/fp16 upcast exactly); missing or
    unknown tensors are refused."""
    import torch

    table = name_table(config)
    present = {k: v for k, v in tensors.items() if not k.endswith(IGNORED_SUFFIXES)}
    extra = set(present) - set(table.values())
    if config.tie_embeddings and "lm_head.weight" in extra:
        # Some writers store a tied head anyway; accept it only if it really is the embedding.
        if not torch.equal(present["lm_head.weight"], present.get(TOP_NAMES["embed.weight"], torch.empty(0))):
            raise BadInput("tie_word_embeddings is true but lm_head.weight differs from embed_tokens")
        extra.discard("lm_head.weight")
    missing = sorted(set(table.values()) - set(present))
    if missing or extra:
        raise BadInput(
            f"the weights do not fit a {family(config)} of this config.json: missing "
            f"{missing[:3] or 'none'}, unexpected {sorted(extra)[:3] or 'none'}; is the config.json from "
            "the same checkpoint?"
        )
    state = {ours: present[hf].to(torch.float32) for ours, hf in table.items()}
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    return state


def hf_config(config: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json of a `LlamaForCausalLM` (a `Qwen2ForCausalLM` with q/k/v biases, a
    `Qwen3ForCausalLM` with q/k head norms) that computes what `GPT(config)` computes."""
    model_type = family(config)
    written: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_width,
        "hidden_act": "silu",
        "max_position_embeddings": config.ctx,
        "rms_norm_eps": config.norm_eps,
        **rope_fields({**DEFAULTS, **config.model_dump()}),
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": config.init_std,
        **model_ids(tokenizer),  # the model's own bos, eos and pad (stack.export.hf_tokenizer)
        "dtype": "float32",
        "use_cache": True,
    }
    return written | family_fields(model_type, config.n_layers)


def _problems(hf: Any) -> list[str]:
    """Everything in a Llama, Qwen2, Qwen3 or Mistral config that the stack's model would compute
    differently."""
    problems = []
    if hf.hidden_act not in SILU_NAMES:
        problems.append(f"hidden_act={hf.hidden_act!r} (the feed-forward is SwiGLU: silu)")
    biased = getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False)
    if hf.model_type in ("llama", "qwen3") and biased:
        problems.append(
            f"attention_bias or mlp_bias (a {hf.model_type}'s would bias o or the MLP too; only q/k/v can)"
        )
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") not in ("default", "llama3"):
        problems.append(f"rope_type={rope['rope_type']!r} from rope_scaling (plain RoPE or llama3's only)")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        problems.append(f"partial_rotary_factor={rope['partial_rotary_factor']} (RoPE rotates whole heads)")
    window = _window_problem(hf)
    if window is not None:
        problems.append(window)
    windowed = [kind for kind in getattr(hf, "layer_types", None) or [] if kind != "full_attention"]
    if windowed:
        problems.append(
            f"use_sliding_window (layer_types has {len(windowed)} {windowed[0]!r} layers; "
            "every layer must attend to the whole context)"
        )
    return problems


def config_json(config: ModelConfig, tokenizer: Tokenizer) -> str:
    """config.json as an export writes it (`hf_config`, a field a line): export.json keeps its
    sha256, which the checker derives again from a committed checkpoint
    (tools/integrity/models/committed_models.py)."""
    return json.dumps(hf_config(config, tokenizer), indent=1) + "\n"


def _window_problem(hf: Any) -> str | None:
    """A Mistral's sliding window shorter than its context: its layers attend to the last
    `sliding_window` positions only, which the stack's do not (a Qwen2's windowed layers are named
    by its layer_types)."""
    window = getattr(hf, "sliding_window", None)
    if hf.model_type == "mistral" and window is not None and window < hf.max_position_embeddings:
        return (
            f"sliding_window={window} below max_position_embeddings={hf.max_position_embeddings} "
            "(every layer must attend to the whole context)"
        )
    return None


def model_config_from_hf(hf: Any) -> dict[str, Any]:
    """The stack's [model] section for a transformers `LlamaConfig`, `Qwen2Config`, `Qwen3Config` or
    `MistralConfig`.

    Refuses, in one line naming every reason, a config whose model the stack would compute
    differently: the parity check would catch most of these too, but only after reading every
    weight, and with a number instead of the reason.
    """
    if hf.model_type not in READ_TYPES:
        raise BadInput(
            f"config.json has model_type {hf.model_type!r}; import-hf reads {', '.join(READ_TYPES)} "
            "checkpoints only; the stack's model is a Llama-style decoder: import one of those, or train one"
        )
    problems = _problems(hf)
    if problems:
        raise BadInput(
            f"this {hf.model_type} config.json has {'; '.join(problems)}, which the stack's model does "
            "not compute exactly: import a checkpoint without them"
        )
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    scaling: dict[str, Any] = {}
    if rope.get("rope_type") == "llama3":  # Llama 3.1 and 3.2 (stack/model/rope_scaling.py)
        scaling = {"rope_type": "llama3", **{key: rope[name] for key, name in LLAMA3_ROPE_KEYS.items()}}
    # A head width of its own is written only where it is one, so a Llama's section hashes as ever.
    width = getattr(hf, "head_dim", None)
    own_width = {"head_dim": width} if width not in (None, hf.hidden_size // hf.num_attention_heads) else {}
    return {
        "vocab": hf.vocab_size,
        "d_model": hf.hidden_size,
        "n_layers": hf.num_hidden_layers,
        "n_heads": hf.num_attention_heads,
        "n_kv_heads": hf.num_key_value_heads or hf.num_attention_heads,
        "ffn_hidden": hf.intermediate_size,
        "ctx": hf.max_position_embeddings,
        "rope_theta": float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))),
        "norm_eps": hf.rms_norm_eps,
        "tie_embeddings": bool(hf.tie_word_embeddings),
        "init_std": hf.initializer_range,
        "qkv_bias": hf.model_type == "qwen2",
        **({"qk_norm": True} if hf.model_type == "qwen3" else {}),
        **own_width,
        **scaling,
    }
