"""What a model's configuration decides about its size: the parameter count, and what LoRA adds.

One home for the count: `stack.model.gpt.param_count_formula` (what presets and the docs quote,
and what every model's `num_params()` is tested against) is this function, and a training
record's `metrics.parameters` is derived from its config.toml by it
(contracts/derive/training.py). The configuration is read as the `[model]` table of a config
file: a key left out holds the default `stack.model.config.ModelConfig` gives it (an architecture
option is left out of a saved configuration while it is off).

A LoRA run trains rank-r adapters beside the matrices its `lora.targets` name: each adds
r·(in + out) parameters, A (r × in) and B (out × r). For the dense block matrices (the trace
sites `q` … `ffn_out`, or their Hugging Face names `q_proj` … `down_proj`) the matrices a list of
targets touches, and their shapes, follow from the configuration alone; globs, model-level
matrices and the options' own matrices are the stack's to resolve, and are not derived here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# ModelConfig's defaults for the keys a saved [model] table may leave out.
DEFAULTS: dict[str, Any] = {
    "tie_embeddings": True,
    "qkv_bias": False,
    "moe_experts": 0,
    "moe_shared_expert": False,
    "diff_attn": False,
    "mod_every": 0,
    "mod_capacity": 0.125,
}
# The model settings a run started from a checkpoint may change: the attention path (the paths are
# numerically equivalent, GATE-MODEL-001) and what only the training loss and the training routing
# read. Every other model key is the checkpoint's architecture: a --set or --config that changes
# one is refused (stack.train.run), never dropped, and a started run's record is held to it.
TRAINING_MODEL_KEYS = ("attention", "moe_balance_coef", "moe_z_coef", "mod_capacity")
# The dense block matrices, in the order a block registers them (attention, then feed-forward),
# by trace site, with their Hugging Face short names (stack.model.names.BLOCK).
BLOCK_MATRICES = ("q", "k", "v", "attn_out", "ffn_gate", "ffn_up", "ffn_out")
HF_NAMES = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "attn_out",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_out",
}
# A checkpoint's model.safetensors holds every parameter as float32 after a header of 8 bytes (its
# length) and JSON naming each tensor's dtype, shape and offsets (and, in `__metadata__`, the tied
# tensors). The header is bounded, not derived: HEADER_FIXED_BYTES for the JSON's frame, its
# metadata and its padding, plus HEADER_BYTES_PER_TENSOR for each tensor's entry (a name, a dtype, a
# shape, two offsets: about 90 bytes in the checkpoints of the ledger, whose headers are 1 to 6 KB).
# So a parameter count the file's size cannot hold, or one well below what it holds, is a
# contradiction, while any real header fits.
FLOAT32_BYTES = 4
HEADER_FIXED_BYTES = 1024
HEADER_BYTES_PER_TENSOR = 256


def _get(model: Mapping[str, Any], key: str) -> Any:
    return model.get(key, DEFAULTS.get(key))


def architecture_changes(source: Mapping[str, Any], started: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key → (the model's value, the started run's) for each key of the [model] table of a run
    started from a model's weights (`started`) whose value is not that model's (`source`), but the
    TRAINING_MODEL_KEYS a start may set: of the keys both tables hold, and those either leaves out
    with a default (DEFAULTS)."""
    keys = (source.keys() & started.keys()) | ((source.keys() | started.keys()) & DEFAULTS.keys())
    values = {key: (_get(source, key), _get(started, key)) for key in sorted(keys - set(TRAINING_MODEL_KEYS))}
    return {key: (was, now) for key, (was, now) in values.items() if was != now}


def param_count(model: Mapping[str, Any]) -> int:
    """The number of parameters of the model a `[model]` table describes (a tied lm_head counts once)."""
    d, n_heads, n_kv = int(model["d_model"]), int(model["n_heads"]), int(model["n_kv_heads"])
    head_dim = d // n_heads
    kv_width = n_kv * head_dim
    qkv_bias, experts = bool(_get(model, "qkv_bias")), int(_get(model, "moe_experts"))
    attn = d * d + 2 * d * kv_width + d * d  # q, k, v, o
    if qkv_bias:
        attn += d + 2 * kv_width  # one bias per output of q, k and v
    ffn = 3 * d * int(model["ffn_hidden"])  # gate, up, down
    if experts:  # E routed experts, the router, and the shared expert when there is one
        ffn = ffn * (experts + int(bool(_get(model, "moe_shared_expert")))) + d * experts
    if _get(model, "diff_attn"):  # q2 and k2 as q and k, the four λ vectors and head_norm
        attn += d * d + d * kv_width + (d + kv_width if qkv_bias else 0) + 5 * head_dim
    block = attn + ffn + 2 * d  # plus attn_norm and ffn_norm
    vocab, layers = int(model["vocab"]), int(model["n_layers"])
    head = 0 if _get(model, "tie_embeddings") else vocab * d
    mod_every = int(_get(model, "mod_every"))
    depth_routers = sum(d for i in range(layers) if mod_every > 0 and i % mod_every == mod_every - 1)
    return vocab * d + layers * block + depth_routers + d + head


def tensor_bound(model: Mapping[str, Any]) -> int:
    """At least as many tensors as the model has (every option's counted as if on)."""
    experts = int(_get(model, "moe_experts"))
    # norms, attention and its biases, differential attention's own, a depth router, the experts
    # (and their router), and two LoRA tensors for each of the seven block matrices
    per_block = 2 + 4 + 3 + 9 + 1 + 3 * (experts + 1) + 1 + 14
    return 4 + int(model["n_layers"]) * per_block


def checkpoint_bytes_hold(model_bytes: int, parameters: int, model: Mapping[str, Any]) -> bool:
    """Whether a float32 model.safetensors of `model_bytes` bytes can hold exactly `parameters`."""
    header = model_bytes - 8 - FLOAT32_BYTES * parameters
    return 0 <= header <= HEADER_FIXED_BYTES + HEADER_BYTES_PER_TENSOR * tensor_bound(model)


def dense(model: Mapping[str, Any]) -> bool:
    """Whether the model has no architecture option that adds matrices of its own."""
    return not (_get(model, "moe_experts") or _get(model, "diff_attn") or _get(model, "mod_every"))


def block_shapes(model: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each dense block matrix, by trace site."""
    d, hidden = int(model["d_model"]), int(model["ffn_hidden"])
    kv_width = int(model["n_kv_heads"]) * (d // int(model["n_heads"]))
    return {
        "q": (d, d),
        "k": (d, kv_width),
        "v": (d, kv_width),
        "attn_out": (d, d),
        "ffn_gate": (d, hidden),
        "ffn_up": (d, hidden),
        "ffn_out": (hidden, d),
    }


def lora_touched(model: Mapping[str, Any], targets: Any) -> list[str] | None:
    """The matrices `lora.targets` touches, in module order, when it is a comma-separated list of
    dense block matrices (by site or Hugging Face name) on a dense model; None otherwise."""
    if not isinstance(targets, str) or not dense(model):
        return None
    kinds = set()
    for name in (part.strip() for part in targets.split(",")):
        kind = HF_NAMES.get(name, name)
        if kind not in BLOCK_MATRICES:
            return None
        kinds.add(kind)
    return [
        f"layers.{i}.{kind}"
        for i in range(int(model["n_layers"]))
        for kind in BLOCK_MATRICES
        if kind in kinds
    ]


def lora_parameters(model: Mapping[str, Any], touched: list[str], r: int) -> int | None:
    """What rank-r adapters on `touched` add: r·(in + out) each; None when one is not a dense block matrix."""
    shapes, total = block_shapes(model), 0
    for name in touched:
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "layers" or parts[2] not in shapes:
            return None
        fan_in, fan_out = shapes[parts[2]]
        total += r * (fan_in + fan_out)
    return total


def matrix_share(model: Mapping[str, Any], touched: list[str]) -> float | None:
    """The share of a dense model's matrix parameters the `touched` block matrices hold (the
    vectors, norms and biases, are no matrices); None for a model with options."""
    if not dense(model):
        return None
    shapes = block_shapes(model)
    d, layers = int(model["d_model"]), int(model["n_layers"])
    kv_width = shapes["k"][1]
    vectors = (2 * layers + 1) * d + (layers * (d + 2 * kv_width) if _get(model, "qkv_bias") else 0)
    total = param_count(model) - vectors
    sizes = []
    for name in touched:
        parts = name.split(".")
        if len(parts) != 3 or parts[2] not in shapes:
            return None
        sizes.append(shapes[parts[2]][0] * shapes[parts[2]][1])
    return sum(sizes) / total if total else 0.0
