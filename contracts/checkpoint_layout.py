"""The files a training checkpoint writes, byte for byte in size, from the model's configuration.

A checkpoint's model.safetensors is `safetensors.torch.save_model` of the model, its
optimizer.safetensors `save_file` of AdamW's state (stack.train.checkpoint). A safetensors file is
an 8-byte little-endian header length, the header (compact JSON: a `__metadata__` table where one
is given, then each tensor's dtype, shape and data offsets, the tensors ordered by their dtype's
alignment, largest first, then by name), padded with spaces to a multiple of 8, and the tensors'
bytes in that order. So its size follows from the names, dtypes and shapes of its tensors alone,
and those follow from the configuration:

* the model file holds every parameter (contracts.model_shape.parameter_shapes; a tied head once,
  its name kept in the metadata as the embedding's), each depth-routed block's threshold (a float32
  scalar, `route_threshold`), and beside each matrix a LoRA adapter is on its A (r × in), its B
  (out × r) and the sha256 of the base it was put on (32 bytes, `lora_base_sha256`);
* the optimizer file holds, for each tensor AdamW steps, numbered as its state numbers them (the
  order of stack.train.loop.build_optimizer's groups: the model's matrices, then its other
  parameters, each in the order the model registers them; or a LoRA run's adapters, A then B of
  each in module order), its two moments (`exp_avg`, `exp_avg_sq`, float32 of its shape) and its
  step (a float32 scalar).

The checker holds a record's checkpoint files to these sizes (contracts/derive/training.py): a
checkpoint of another model, other adapters or another optimizer state has other tensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.hf_export import HEADER_LENGTH_BYTES
from contracts.model_shape import DEFAULTS, parameter_shapes, routed_blocks
from contracts.selection import matrix_name

# A tensor as a safetensors header lists it: its dtype and its shape.
Tensor = tuple[str, tuple[int, ...]]
# The bytes of an element of each dtype a checkpoint holds (also the dtype's alignment).
DTYPE_BYTES = {"F32": 4, "U8": 1}
# The header's JSON is padded with spaces to a multiple of this many bytes.
HEADER_ALIGNMENT = 8
# A LoRA adapter's own tensors in a model file (stack.model.lora.LoRALinear): its base's sha256.
ADAPTER_HASH = ("lora_base_sha256", ("U8", (32,)))
ROUTE_THRESHOLD = "route_threshold"  # a depth-routed block's buffer (stack.model.depth_router)
# AdamW's state of one stepped tensor, in the order it keeps it: its moments, then its step.
OPTIMIZER_SLOTS = ("exp_avg", "exp_avg_sq", "step")


def safetensors_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> int:
    """The size of the safetensors file of `tensors` (name → dtype and shape) and `metadata`."""
    order = sorted(tensors.items(), key=lambda item: (-DTYPE_BYTES[item[1][0]], item[0]))
    entries = (
        [] if metadata is None else [f'"__metadata__":{json.dumps(dict(metadata), separators=(",", ":"))}']
    )
    offset = 0
    for name, (dtype, shape) in order:
        end = offset + DTYPE_BYTES[dtype] * math.prod(shape)
        layout = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
        entries.append(f"{json.dumps(name)}:{json.dumps(layout, separators=(',', ':'))}")
        offset = end
    header = len("{" + ",".join(entries) + "}")
    return HEADER_LENGTH_BYTES + header + (-header) % HEADER_ALIGNMENT + offset


def _adapted(model: Mapping[str, Any], touched: Sequence[str]) -> dict[str, tuple[int, ...]] | None:
    """The weights (by state-dict name, with their out × in shape) an adapter is on, in module order;
    None where a matrix of `touched` is no weight of the model's here (the stack resolves it)."""
    on = set(touched)
    found = {
        key: shape
        for key, shape in parameter_shapes(model).items()
        if key.endswith(".weight") and len(shape) == 2 and matrix_name(key) in on
    }
    return found if len(found) == len(on) else None


def adapted_modules(model: Mapping[str, Any], touched: Sequence[str]) -> list[str] | None:
    """The modules (`layers.0.attn.q`, ...) LoRA adapters on the matrices `touched`
    (contracts.model_parameters.lora_touched's names) sit on, in module order: what a merge of them merges;
    None where those are not decided here."""
    adapted = _adapted(model, touched)
    return None if adapted is None else [weight.removesuffix(".weight") for weight in adapted]


def _adapter_tensors(weight: str, shape: tuple[int, ...], r: int) -> dict[str, Tensor]:
    """A LoRA adapter's tensors beside the weight `weight` (out × in) it is on."""
    module, (out, fan_in) = weight.removesuffix(".weight"), shape
    name, tensor = ADAPTER_HASH
    return {
        f"{module}.lora_A": ("F32", (r, fan_in)),
        f"{module}.lora_B": ("F32", (out, r)),
        f"{module}.{name}": tensor,
    }


def model_file_bytes(model: Mapping[str, Any], touched: Sequence[str] = (), r: int = 0) -> int | None:
    """The size of a checkpoint's model.safetensors of the model a `[model]` table describes, with
    rank-`r` LoRA adapters on the matrices `touched` (contracts.model_parameters.lora_touched's names);
    None where those are not decided here (`_adapted`)."""
    adapted = _adapted(model, touched)
    if adapted is None:
        return None
    tensors: dict[str, Tensor] = {key: ("F32", shape) for key, shape in parameter_shapes(model).items()}
    for weight, shape in adapted.items():
        tensors |= _adapter_tensors(weight, shape, r)
    tensors |= {f"layers.{i}.{ROUTE_THRESHOLD}": ("F32", ()) for i in routed_blocks(model)}
    tied = model.get("tie_embeddings", DEFAULTS["tie_embeddings"])
    return safetensors_bytes(tensors, {"lm_head.weight": "embed.weight"} if tied else None)


def stepped_shapes(
    model: Mapping[str, Any], touched: Sequence[str] | None = None, r: int = 0
) -> list[tuple[int, ...]] | None:
    """The shapes of the tensors a run's AdamW steps, in the order its state numbers them (module
    docstring): every parameter, matrices first, or (with `touched`) each adapter's A and B."""
    if touched is not None:
        adapted = _adapted(model, touched)
        if adapted is None:
            return None
        return [shape for out, fan_in in adapted.values() for shape in ((r, fan_in), (out, r))]
    shapes = list(parameter_shapes(model).values())
    return [s for s in shapes if len(s) >= 2] + [s for s in shapes if len(s) < 2]


def optimizer_file_bytes(
    model: Mapping[str, Any], touched: Sequence[str] | None = None, r: int = 0
) -> int | None:
    """The size of a checkpoint's optimizer.safetensors: AdamW's moments and step of each tensor it
    steps (`stepped_shapes`), named `<index>.<slot>` as stack.train.checkpoint.optimizer_tensors
    names them; None where the adapters are not decided here."""
    shapes = stepped_shapes(model, touched, r)
    if shapes is None:
        return None
    tensors: dict[str, Tensor] = {}
    for index, shape in enumerate(shapes):
        tensors |= {f"{index}.{slot}": ("F32", shape if slot != "step" else ()) for slot in OPTIMIZER_SLOTS}
    return safetensors_bytes(tensors)
