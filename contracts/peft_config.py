"""What an exported adapter's adapter_config.json must say, apart from the stack's writer
(stack.export.peft_format.peft_config), so a field the writer takes from elsewhere shows.

peft builds the adapter it trains or serves from this file: rank, alpha, dropout, rsLoRA scaling,
the modules it wraps, bias handling and the weight layout. The adapter's logits are compared in
evaluation mode (GATE-LORA-007's parity), where dropout does nothing, so a dropout written as 0.0
for an adapter trained at 0.1 loads and answers identically while anyone who trains it further in
peft does so without dropout. GATE-LORA-007's check config holds every field peft reads to the
run's recorded [lora] section (`expected_fields`), and the modules the file's target_modules select
by peft's own matching rule (`targeted`) to the modules the adapter file holds tensors for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# The fields of a LoRA adapter the stack writes whatever the run: peft's reading of the stack's adapters
# (a plain causal LM, no bias trained, weights stored (out, in), no DoRA, nothing else saved).
FIXED_FIELDS: dict[str, Any] = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "bias": "none",
    "fan_in_fan_out": False,
    "use_dora": False,
    "modules_to_save": None,
}
# adapter_config.json's field → the [lora] setting it states.
LORA_FIELDS = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "use_rslora": "rslora"}
# Every field compared: those above, then target_modules (held through the modules it selects).
FIELDS = (*LORA_FIELDS, *FIXED_FIELDS)
# peft's keys of adapter tensors: the prefix of its wrapper, then the module, then the part.
ADAPTER_PREFIX, ADAPTER_SUFFIXES = "base_model.model.", (".lora_A.weight", ".lora_B.weight")
# A Hugging Face checkpoint's keys: the module, then its weight (biases and buffers are no module peft wraps).
BASE_SUFFIXES = (".weight",)


def expected_fields(lora: Mapping[str, Any]) -> dict[str, Any]:
    """The fields adapter_config.json must hold for an adapter trained under the `[lora]` section
    `lora` (r, alpha, dropout, rslora, as the run recorded them)."""
    return {field: lora.get(setting) for field, setting in LORA_FIELDS.items()} | FIXED_FIELDS


def written_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The compared fields of an adapter_config.json as written (None where it lacks one)."""
    return {field: config.get(field) for field in FIELDS}


def targeted(target_modules: Any, modules: Iterable[str]) -> list[str]:
    """The modules peft wraps for `target_modules`, by its rule: a string is a regular expression a
    module's full name must match whole; a list names modules by their full name or its last dotted
    parts (`q_proj` selects `model.layers.0.self_attn.q_proj`). Sorted; [] for anything else."""
    if isinstance(target_modules, str):
        return sorted(m for m in modules if re.fullmatch(target_modules, m))
    if not isinstance(target_modules, list):
        return []
    names = [t for t in target_modules if isinstance(t, str)]
    return sorted(m for m in modules if any(m == t or m.endswith(f".{t}") for t in names))


def field_problems(written: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Each field whose written value is not the expected one (a bool is not a number here)."""
    return [
        f"{field} is {written.get(field)!r} where the run's [lora] section gives {want!r}"
        for field, want in expected.items()
        if written.get(field) != want
        or (type(written.get(field)) is not type(want) and not _both_numbers(written.get(field), want))
    ]


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def modules_of(keys: Iterable[str], prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    """The modules tensor `keys` name: each key that starts with `prefix` and ends with one of
    `suffixes`, less both; sorted, each once."""
    found = set()
    for key in keys:
        end = next((x for x in suffixes if key.endswith(x)), None)
        if end is not None and key.startswith(prefix):
            found.add(key.removeprefix(prefix).removesuffix(end))
    return sorted(found)


def header_keys(header: Mapping[str, Any]) -> list[str]:
    """The tensor keys a safetensors file stores, from its header
    (contracts.reading.safetensors_header): how the checker reads a file's keys without loading it."""
    return [key for key in header if key != "__metadata__"]
