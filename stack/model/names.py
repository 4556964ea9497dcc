"""The model's matrices under their three names: trace site, module path, Hugging Face module.

One table, read by everything that names a matrix: surgery and LoRA targets
(stack.model.targets, so `lora.targets` and `stack laser --targets` take either vocabulary),
the Hugging Face export and import (stack.export.hf), and the peft adapter format
(stack.export.peft). A matrix of a block is named

    trace site   `q`, `k`, `v`, `attn_out`, `ffn_gate`, `ffn_up`, `ffn_out`   (docs/trace.md)
    module       `attn.q` … `attn.o`, `ffn.gate`, `ffn.up`, `ffn.down`         (the state-dict keys)
    Hugging Face `self_attn.q_proj` … `self_attn.o_proj`, `mlp.gate_proj`, `mlp.up_proj`,
                 `mlp.down_proj`                                              (Llama and Qwen2)

within layer i (`layers.i.` here, `model.layers.i.` there); the model-level `embed` and `logits`
are `embed` / `model.embed_tokens` and `lm_head` / `lm_head`. The Hugging Face short names
(`q_proj`, `o_proj`, `down_proj`, …) are what peft's `target_modules` and most fine-tuning
recipes use, so they are accepted wherever a site name is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.errors import BadInput

HF_LAYERS = "model.layers"


@dataclass(frozen=True)
class Matrix:
    """One matrix: its trace site, its module (in a block, or in the model) and its HF module."""

    site: str
    module: str
    hf: str

    @property
    def hf_short(self) -> str:
        """The last part of the HF module name: `q_proj`, `down_proj`, `lm_head`, `embed_tokens`."""
        return self.hf.rsplit(".", 1)[-1]


BLOCK = (
    Matrix("q", "attn.q", "self_attn.q_proj"),
    Matrix("k", "attn.k", "self_attn.k_proj"),
    Matrix("v", "attn.v", "self_attn.v_proj"),
    Matrix("attn_out", "attn.o", "self_attn.o_proj"),
    Matrix("ffn_gate", "ffn.gate", "mlp.gate_proj"),
    Matrix("ffn_up", "ffn.up", "mlp.up_proj"),
    Matrix("ffn_out", "ffn.down", "mlp.down_proj"),
)
MODEL = (Matrix("embed", "embed", "model.embed_tokens"), Matrix("logits", "lm_head", "lm_head"))
# The block's and the model's norms: no trace-site name of their own, only the two module names.
BLOCK_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
MODEL_NORMS = {"final_norm": "model.norm"}
# The per-head norms of q and k in a `qk_norm` model (a Qwen3), by module, and their HF modules.
HEAD_NORMS = {"attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm"}
# The projections that carry a bias in a `qkv_bias` model (a Qwen2).
BIASED = ("q", "k", "v")


def block_matrix(site: str) -> Matrix:
    """The block matrix of a short site name (`q`, `ffn_out`)."""
    return next(m for m in BLOCK if m.site == site)


def hf_module(path: str) -> str | None:
    """The HF module of a stack module path (`layers.3.attn.o` → `model.layers.3.self_attn.o_proj`),
    or None for a module the table does not hold."""
    for matrix in MODEL:
        if path == matrix.module:
            return matrix.hf
    head, _, rest = path.partition(".")
    layer, _, inner = rest.partition(".")
    if head != "layers" or not layer.isdigit():
        return None
    for matrix in BLOCK:
        if inner == matrix.module:
            return f"{HF_LAYERS}.{layer}.{matrix.hf}"
    return None


def stack_module(hf_path: str) -> str | None:
    """The stack module path of an HF module (the reverse of `hf_module`), or None."""
    for matrix in MODEL:
        if hf_path == matrix.hf:
            return matrix.module
    if not hf_path.startswith(f"{HF_LAYERS}."):
        return None
    layer, _, inner = hf_path.removeprefix(f"{HF_LAYERS}.").partition(".")
    for matrix in BLOCK:
        if layer.isdigit() and inner == matrix.hf:
            return f"layers.{layer}.{matrix.module}"
    return None


def site_of(path: str) -> str | None:
    """The trace site of a stack module path (`layers.3.attn.o` → `layers.3.attn_out`,
    `lm_head` → `logits`), or None for a module the table does not hold."""
    for matrix in MODEL:
        if path == matrix.module:
            return matrix.site
    head, _, rest = path.partition(".")
    layer, _, inner = rest.partition(".")
    for matrix in BLOCK:
        if head == "layers" and layer.isdigit() and inner == matrix.module:
            return f"layers.{layer}.{matrix.site}"
    return None


def parse_layers(text: str, n_layers: int) -> range:
    """`--layers a-b` (inclusive) or `--layers a` as a range of layer indices within the model."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None:
        raise BadInput(f"--layers {text!r} is not a layer or a range; write e.g. --layers 2 or --layers 0-3")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first > last:
        raise BadInput(f"--layers {text!r} is reversed: give LOW-HIGH, e.g. --layers {last}-{first}")
    if last >= n_layers:
        raise BadInput(f"--layers {text!r} is outside the model's layers 0-{n_layers - 1}")
    return range(first, last + 1)
