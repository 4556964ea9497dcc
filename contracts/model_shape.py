"""What a model's configuration decides about its size: its tensors, the parameter count, what LoRA adds.

One home for the shapes: `parameter_shapes` names every parameter of the model a `[model]` table
describes with its shape, and the count is their sum; `stack.model.gpt.param_count_formula`
(what presets and the docs quote, and what every model's `num_params()` is tested against) is
`param_count`, and the tests hold every option's `named_parameters()` to `parameter_shapes`. A
training record's `metrics.parameters`, the tensors its checks counted (GATE-CKPT-001's weights,
GATE-TRAIN-008's stepped parameters), the sizes of its checkpoint's files
(contracts.checkpoint_layout) and the tensors of its fresh initialisation (GATE-MODEL-003) are
derived from its config.toml by them (contracts/derive/). The configuration is read as the
`[model]` table of a config file: a key left out holds the default `stack.model.config.ModelConfig`
gives it (an architecture option is left out of a saved configuration while it is off).

A LoRA run trains rank-r adapters beside the matrices its `lora.targets` name: each adds
r·(in + out) parameters, A (r × in) and B (out × r). For the dense block matrices (the trace
sites `q` … `ffn_out`, or their Hugging Face names `q_proj` … `down_proj`) the matrices a list of
targets touches, and their shapes, follow from the configuration alone; globs, model-level
matrices and the options' own matrices are the stack's to resolve, and are not derived here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# ModelConfig's defaults for the keys a saved [model] table may leave out.
DEFAULTS: dict[str, Any] = {
    "tie_embeddings": True,
    "qkv_bias": False,
    "head_dim": None,
    "qk_norm": False,
    "moe_experts": 0,
    "moe_shared_expert": False,
    "diff_attn": False,
    "mod_every": 0,
    "mod_capacity": 0.125,
    "rope_type": "default",
    "rope_factor": 8.0,
    "rope_low_freq_factor": 1.0,
    "rope_high_freq_factor": 4.0,
    "rope_original_ctx": 8192,
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
# A LoRA adapter's tensors in a model file: A and B, which train, and the sha256 of the base it was
# attached to (stack.model.lora; their bytes: contracts.checkpoint_layout).
ADAPTER_TRAINED = 2
ADAPTER_TENSORS = 3
# The architecture options that add modules of their own (experts, differential attention, depth
# routing), by the name GATE-MODEL-003 listed each under before rev 5 (when stack/model/reference.py
# did not write their blocks out), with the [model] key that turns it on; no LoRA target list here
# names their matrices.
OPTIONS = {"moe": "moe_experts", "diff_attn": "diff_attn", "mod": "mod_every"}
# GATE-LORA-001 compares an adapted model's logits with its base's on a probe of this many ids (the
# context, where it is shorter), every logit of each (stack.model.lora_checks).
LORA_PROBE_TOKENS = 32


def _get(model: Mapping[str, Any], key: str) -> Any:
    return model.get(key, DEFAULTS.get(key))


def head_width(model: Mapping[str, Any]) -> int:
    """The width of one attention head: `head_dim` where the table sets it, else d_model / n_heads
    (what stack.model.config.ModelConfig.head_width reads)."""
    own = _get(model, "head_dim")
    return int(own) if own is not None else int(model["d_model"]) // int(model["n_heads"])


def routed_blocks(model: Mapping[str, Any]) -> list[int]:
    """The mixture-of-depths blocks: every mod_every-th (1, 3, 5, … for mod_every 2)."""
    every = int(_get(model, "mod_every"))
    return [i for i in range(int(model["n_layers"])) if every > 0 and i % every == every - 1]


def parameter_shapes(model: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model a `[model]` table describes, by its state-dict name, with its
    shape, in the order the model registers them (a tied head once, as `embed.weight`)."""
    d, n_heads, n_kv = int(model["d_model"]), int(model["n_heads"]), int(model["n_kv_heads"])
    head_dim, hidden, vocab = head_width(model), int(model["ffn_hidden"]), int(model["vocab"])
    q_width, kv_width = n_heads * head_dim, n_kv * head_dim
    bias, diff = bool(_get(model, "qkv_bias")), bool(_get(model, "diff_attn"))
    experts = int(_get(model, "moe_experts"))
    routed = set(routed_blocks(model))
    # (name, output rows, input columns): o maps the heads back onto the residual stream.
    projections = [("q", q_width, d), ("k", kv_width, d), ("v", kv_width, d), ("o", d, q_width)]
    if diff:  # the second branch's q2 and k2, shaped as q and k
        projections += [("q2", q_width, d), ("k2", kv_width, d)]
    feed_forwards = ["ffn."]
    if experts:  # E routed experts and the shared one, beside the router
        feed_forwards = [f"moe.expert{e}." for e in range(experts)]
        feed_forwards += ["moe.shared."] if _get(model, "moe_shared_expert") else []
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (vocab, d)}
    for i in range(int(model["n_layers"])):
        block = f"layers.{i}."
        shapes[f"{block}attn_norm.weight"] = (d,)
        if diff:  # the attention's own λ vectors come before its projections
            shapes |= {f"{block}attn.lambda_{name}": (head_dim,) for name in ("q1", "k1", "q2", "k2")}
        for name, rows, columns in projections:
            shapes[f"{block}attn.{name}.weight"] = (rows, columns)
            if bias and name != "o":  # o never carries one
                shapes[f"{block}attn.{name}.bias"] = (rows,)
        if _get(model, "qk_norm"):  # one gain per head width, shared by the heads
            shapes |= {f"{block}attn.{name}.weight": (head_dim,) for name in ("q_norm", "k_norm")}
        if diff:
            shapes[f"{block}attn.head_norm.weight"] = (head_dim,)
        shapes[f"{block}ffn_norm.weight"] = (d,)
        if experts:
            shapes[f"{block}moe.router.weight"] = (experts, d)
        for ffn in feed_forwards:
            shapes |= {f"{block}{ffn}{n}.weight": (hidden, d) for n in ("gate", "up")}
            shapes[f"{block}{ffn}down.weight"] = (d, hidden)
        if i in routed:
            shapes[f"{block}router.weight"] = (1, d)
    shapes["final_norm.weight"] = (d,)
    if not _get(model, "tie_embeddings"):
        shapes["lm_head.weight"] = (vocab, d)
    return shapes


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
    return sum(math.prod(shape) for shape in parameter_shapes(model).values())


def active_params(model: Mapping[str, Any]) -> float:
    """Parameters one training token passes through, on average (benchmarks/train_throughput.py's
    `active_params`, by which it shapes each option to as many as the dense model): every parameter
    outside the blocks; in a block, of a mixture only its top-k of the routed experts (and the shared
    one), and of a depth-routed block only its capacity's share of the tokens."""
    sizes = {name: math.prod(shape) for name, shape in parameter_shapes(model).items()}
    experts, top_k = int(_get(model, "moe_experts")), int(model.get("moe_top_k", 2))
    routed = set(routed_blocks(model))
    total = float(sum(n for name, n in sizes.items() if not name.startswith("layers.")))
    for i in range(int(model["n_layers"])):
        block = float(sum(n for name, n in sizes.items() if name.startswith(f"layers.{i}.")))
        if experts:
            experts_held = sum(n for name, n in sizes.items() if name.startswith(f"layers.{i}.moe.expert"))
            block -= experts_held * (1 - top_k / experts)
        total += block * (float(_get(model, "mod_capacity")) if i in routed else 1.0)
    return total


def model_file_tensors(model: Mapping[str, Any], adapters: int = 0) -> int:
    """Tensors of a checkpoint's model.safetensors: every parameter (a tied head once), each
    depth-routed block's threshold, and each of `adapters` LoRA adapters' A, B and base hash."""
    return len(parameter_shapes(model)) + len(routed_blocks(model)) + ADAPTER_TENSORS * adapters


def state_dict_tensors(model: Mapping[str, Any]) -> int:
    """Entries of the state dict of a model built from the table: the tensors of its
    model.safetensors (`model_file_tensors`), a tied head under both of its keys (embed.weight and
    lm_head.weight name one tensor, which a file stores once)."""
    return model_file_tensors(model) + (1 if _get(model, "tie_embeddings") else 0)


def trained_tensors(model: Mapping[str, Any], adapters: int | None = None) -> int:
    """Tensors a run's optimizer steps: every parameter of the model, or a LoRA run's adapters'
    A and B (`adapters` of them; its base is frozen)."""
    return len(parameter_shapes(model)) if adapters is None else ADAPTER_TRAINED * adapters


def options_on(model: Mapping[str, Any]) -> list[str]:
    """The architecture options of OPTIONS the model has, in that order."""
    return [name for name, key in OPTIONS.items() if _get(model, key)]


def dense(model: Mapping[str, Any]) -> bool:
    """Whether the model has no architecture option that adds modules of its own."""
    return not options_on(model)


def block_shapes(model: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each dense block matrix, by trace site."""
    d, hidden = int(model["d_model"]), int(model["ffn_hidden"])
    q_width = int(model["n_heads"]) * head_width(model)
    kv_width = int(model["n_kv_heads"]) * head_width(model)
    return {
        "q": (d, q_width),
        "k": (d, kv_width),
        "v": (d, kv_width),
        "attn_out": (q_width, d),
        "ffn_gate": (d, hidden),
        "ffn_up": (d, hidden),
        "ffn_out": (hidden, d),
    }


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


def lora_probe_tokens(model: Mapping[str, Any]) -> int:
    """The ids of GATE-LORA-001's probe: LORA_PROBE_TOKENS, or the context where it is shorter."""
    return min(int(model["ctx"]), LORA_PROBE_TOKENS)


def lora_probe_elements(model: Mapping[str, Any]) -> int:
    """The logits GATE-LORA-001 compares element for element: every id of the vocabulary at each of
    the probe's positions."""
    return lora_probe_tokens(model) * int(model["vocab"])


def not_matched(option: str, patterns: list[str]) -> str:
    """Why a selection of matrices (stack.model.targets) passed over one that no pattern names."""
    return f"not matched by {option} {','.join(patterns)!r}"


def tied_to(label: str) -> str:
    """Why a selection lists a matrix apart from the one it chose or passed over: it is that tensor."""
    return f"tied: the same tensor as {label}"


def matrix_share(model: Mapping[str, Any], touched: list[str]) -> float | None:
    """The share of a dense model's matrix parameters the `touched` block matrices hold (the
    vectors, norms and biases, are no matrices); None for a model with options."""
    if not dense(model):
        return None
    shapes = block_shapes(model)
    total = sum(math.prod(shape) for shape in parameter_shapes(model).values() if len(shape) == 2)
    sizes = []
    for name in touched:
        parts = name.split(".")
        if len(parts) != 3 or parts[2] not in shapes:
            return None
        sizes.append(shapes[parts[2]][0] * shapes[parts[2]][1])
    return sum(sizes) / total if total else 0.0
