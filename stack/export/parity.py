"""Parity of an export with the stack: the measurements, the verdicts, and the gate bindings.

A measurement (`compare_logits`) is plain numbers, beside which `measure_logits` puts the same
numbers as contracts.logits_parity computes them from the same two tensors (the parity gates'
check tensors judge those, and hold the stated ones to them); an outcome function turns it into a
verdict against the spec's threshold; a `certify_*` function binds that verdict to its gate, so
an export that fails its check ends the command with exit 3 naming the gate. The command
decides an artefact's name (verified or `.unverified`) from the same outcome function, so the
name and the verdict cannot disagree, even with the contracts switched off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from contracts.gates import Outcome, gate_require, measure
from contracts.logits_parity import argmax_agreement, logits_sha256, max_abs_difference

HF_GATE = "GATE-EXPORT-001"
ONNX_GATE = "GATE-EXPORT-002"
PEFT_GATE = "GATE-LORA-007"
UNVERIFIED = ".unverified"


def unverified(path: Path) -> Path:
    """`model.int8.onnx` → `model.int8.unverified.onnx`: the name of a file whose check has not passed."""
    return path.with_name(f"{path.stem}{UNVERIFIED}{path.suffix}")


@dataclass(frozen=True)
class LogitsParity:
    """How one artefact's logits compare with the stack's on the same windows."""

    artefact: str
    max_abs_diff: float  # inf when the shapes differ, nan when a logit is not finite
    finite: bool
    argmax_agreement: float  # fraction of positions whose most likely next token is the same
    positions: int
    # the same two numbers as contracts.logits_parity computes them from the two tensors, and the
    # tensors' digests (`measure_logits`, apart from `compare_logits`): what the gates' check tensors judge
    tensors: dict[str, Any] = field(default_factory=dict)
    # the stack's own fp32 rounding on the windows (stack.export.runtimes.stack_rounding), which
    # scales GATE-EXPORT-001's tolerance; None where the comparison does not measure it
    rounding: float | None = None
    # the dtype of the logits the float64 forward `rounding` was measured against gave (check exact)
    rounding_dtype: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite difference becomes the string "inf" or "nan", which JSON can hold."""
        data = asdict(self)
        data["max_abs_diff"] = _plain_number(self.max_abs_diff)
        data["tensors"] = {key: _plain_number(value) for key, value in self.tensors.items()}
        return data

    def tensor_values(self, prefix: str, *keys: str) -> dict[str, Any]:
        """The check tensors' measured values: each stated number of `keys` (max_abs_diff,
        argmax_agreement) beside its recomputation from the tensors (key `…_tensors`), `prefix`
        naming the graph (fp32_, int8_); none when the tensors were not measured."""
        values = {}
        for key in keys if self.tensors else ():
            values[f"{prefix}{key}"] = _plain_number(getattr(self, key))
            values[f"{prefix}{key}_tensors"] = _plain_number(self.tensors[key])
        return values


def _plain_number(value: Any) -> Any:
    """A non-finite float as the string JSON can hold ("inf", "nan"); anything else as it is."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def compare_logits(artefact: str, reference: torch.Tensor, candidate: torch.Tensor) -> LogitsParity:
    """Compare `candidate` logits (N, T, vocab) with the stack's `reference`."""
    positions = reference.shape[0] * reference.shape[1]
    if candidate.shape != reference.shape:
        return LogitsParity(artefact, float("inf"), bool(candidate.isfinite().all()), 0.0, positions)
    finite = bool(candidate.isfinite().all())
    diff = float((candidate.double() - reference.double()).abs().max()) if finite else float("nan")
    agreement = float((candidate.argmax(-1) == reference.argmax(-1)).double().mean())
    return LogitsParity(artefact, diff, finite, agreement, positions)


def measure_logits(
    artefact: str,
    reference: torch.Tensor,
    candidate: torch.Tensor,
    rounding: tuple[float, str] | None = None,
) -> LogitsParity:
    """`compare_logits`'s numbers, with the same two numbers computed from the same two tensors by
    contracts.logits_parity (apart from the stack's comparison, so a bug in it cannot move both)
    and the tensors' digests: what the parity gates' check tensors judge; `rounding`, the stack's
    own fp32 rounding on the windows and the dtype of the logits it was measured against, kept
    beside them."""
    check = compare_logits(artefact, reference, candidate)
    tensors = {
        "max_abs_diff": max_abs_difference(reference, candidate),
        "argmax_agreement": argmax_agreement(reference, candidate),
        "reference_sha256": logits_sha256(reference),
        "candidate_sha256": logits_sha256(candidate),
    }
    if rounding is None:
        return replace(check, tensors=tensors)
    return replace(check, tensors=tensors, rounding=rounding[0], rounding_dtype=rounding[1])


@dataclass(frozen=True)
class SpecialIds:
    """The special token ids a Hugging Face directory names, as transformers reads them (by where:
    "config.json eos_token_id", "generation eos_token_id", "tokenizer eos_token_id", ...), the
    ids the model's own are there (`expected`, stack.export.hf_tokenizer.expected_special_ids: a
    model made elsewhere keeps its bos, eos and pad; the stack's own models start and end at the
    end of text), and the end-of-text id of the stack's tokenizer, which its documents end with."""

    found: dict[str, Any]
    eot_id: int
    expected: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """GATE-EXPORT-001's special values."""
        return {"special_ids": self.found, "eot_id": self.eot_id, "special_expected": self.expected}


# What `tokenizer_check.read_back` measures (export.json keeps them for `certify`).
TOKENIZER_KEYS = ("tokenizer_keys", "tokenizer_differing")


# What `architecture_read_back` and `dtypes_read_back` measure (export.json keeps them for `certify`).
ARCHITECTURE_KEYS = ("architecture_keys", "architecture_differing", "loaded_dtypes", "stored_dtypes")


def _plain(value: Any) -> Any:
    """A config value as JSON holds it: a torch dtype by its name (`float32`), a tuple as a list."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def architecture_read_back(model: Any, hf_config: Any, written: dict[str, Any], dtype: str) -> dict[str, Any]:
    """GATE-EXPORT-001's check `architecture`: the model's configuration (`model`, a ModelConfig)
    against the one the importer reads back from the config transformers loaded from the export
    (`stack.export.hf.model_config_from_hf`), every key it reads; and every field of the config.json
    written (`written`), as transformers loaded it, against contracts.hf_export's rule for the model
    with weights of `dtype` (dtype included). Parity on a short sample passes a config.json whose
    context is one short, and parity in float32 one that declares bfloat16; a model loaded from it
    does not compute what was exported."""
    from contracts.errors import BadInput
    from contracts.hf_export import expected_fields, field_differences
    from contracts.model_shape import DEFAULTS
    from stack.export.hf import model_config_from_hf

    ours = {**DEFAULTS, **model.model_dump(exclude_none=True)}  # an option left out is off
    loaded = {field: _plain(getattr(hf_config, field, value)) for field, value in written.items()}
    fields = field_differences(loaded, expected_fields(ours, dtype))
    try:
        exported = model_config_from_hf(hf_config)
    except BadInput as exc:
        return {"architecture_keys": 0, "architecture_differing": {"config.json": str(exc), **fields}}
    differing = {
        key: {"model": ours.get(key), "exported": value}
        for key, value in exported.items()
        if ours.get(key) != value
    }
    return {"architecture_keys": len(exported) + len(loaded), "architecture_differing": differing | fields}


def dtypes_read_back(hf_model: torch.nn.Module, stored: list[str]) -> dict[str, Any]:
    """GATE-EXPORT-001's check `loaded`: the dtypes of the parameters of the model as transformers
    loads the export by default (no dtype asked for), beside those its weights file stores."""
    loaded = sorted({_plain(p.dtype) for p in hf_model.parameters()})
    return {"loaded_dtypes": loaded, "stored_dtypes": stored}


def hf_outcome(
    parity: LogitsParity,
    special: SpecialIds | None = None,
    architecture: dict[str, Any] | None = None,
    tokenizer: dict[str, Any] | None = None,
) -> Outcome:
    """GATE-EXPORT-001: the HF model's logits (as loaded: an export's by default, an import's in
    fp32) within logits_atol of the stack's; its special ids the model's own; for an export, whose
    config.json the stack wrote, its architecture the model's (`architecture_read_back`) and the
    dtype it loads in the one its weights are stored in (`dtypes_read_back`); and its tokenizer as
    transformers reads it the model's own (stack.export.tokenizer_check.read_back)."""
    measured = {
        "max_abs_diff": _plain_number(parity.max_abs_diff),
        "finite": parity.finite,
        "positions": parity.positions,
    }
    measured |= parity.tensor_values("", "max_abs_diff")
    if parity.rounding is not None:
        measured["rounding_error"] = parity.rounding
    if parity.rounding_dtype is not None:
        measured["rounding_reference_dtype"] = parity.rounding_dtype
    if special is not None:
        measured |= special.as_dict()
    if architecture is not None:
        measured |= architecture
    if tokenizer is not None:
        measured |= tokenizer
    return measure(HF_GATE, measured, holds=f"transformers' logits of {parity.artefact} match the stack's")


def fp32_outcome(parity: LogitsParity, opset: dict[str, int]) -> Outcome:
    """GATE-EXPORT-002, fp32 graph: its logits within fp32_logits_atol of PyTorch's; and its
    check `opset`: the default-domain opset the saved graph's opset_import declares (`opset`) and
    the one the export was asked for, the record's config.opset (`opset_asked`)."""
    measured = {
        "fp32_max_abs_diff": _plain_number(parity.max_abs_diff),
        "fp32_finite": parity.finite,
        "positions": parity.positions,
        **opset,
        **parity.tensor_values("fp32_", "max_abs_diff"),
    }
    return measure(ONNX_GATE, measured, holds=f"ONNX Runtime's logits of {parity.artefact} match PyTorch's")


def int8_outcome(parity: LogitsParity, weight_types: dict[str, int]) -> Outcome:
    """GATE-EXPORT-002, int8 graph: finite, and next-token argmax agreement at least int8_argmax_agreement;
    and (check weights) every quantised matmul weight of the saved graph stored as INT8, its
    `weight_types` read from the file (contracts.onnx_weights)."""
    measured = {
        "int8_argmax_agreement": parity.argmax_agreement,
        "int8_finite": parity.finite,
        "positions": parity.positions,
        "int8_weight_types": weight_types,
        **parity.tensor_values("int8_", "argmax_agreement", "max_abs_diff"),
    }
    return measure(ONNX_GATE, measured, holds=f"the int8 graph {parity.artefact} keeps the next-token argmax")


def peft_outcome(
    parity: LogitsParity, adapters: int, not_loaded: list[str], config: dict[str, Any] | None = None
) -> Outcome:
    """GATE-LORA-007: peft's logits of the adapter on the HF base within logits_atol of the stack's,
    with every tensor of the adapter file loaded by peft as written; and, for an export, `config`:
    adapter_config.json as written against the run's [lora] section (check config,
    stack.export.peft_exchange.written_config)."""
    measured = {
        "max_abs_diff": _plain_number(parity.max_abs_diff),
        "finite": parity.finite,
        "positions": parity.positions,
        "adapters": adapters,
        "not_loaded": not_loaded,
        **(config or {}),
        **parity.tensor_values("", "max_abs_diff"),
    }
    return measure(PEFT_GATE, measured, holds=f"peft's logits of {parity.artefact} match the stack's")


@gate_require(
    "GATE-LORA-007",
    lambda parity, adapters, not_loaded, config=None: peft_outcome(parity, adapters, not_loaded, config),
)
def certify_peft(
    parity: LogitsParity, adapters: int, not_loaded: list[str], config: dict[str, Any] | None = None
) -> None:
    """Raise GATE-LORA-007 unless peft reproduces the stack's adapted logits and, for an export, its
    adapter_config.json says what the run's [lora] section does."""


@gate_require(
    "GATE-EXPORT-001",
    lambda parity, special, architecture, tokenizer: hf_outcome(parity, special, architecture, tokenizer),
)
def certify_hf(
    parity: LogitsParity,
    special: SpecialIds | None = None,
    architecture: dict[str, Any] | None = None,
    tokenizer: dict[str, Any] | None = None,
) -> None:
    """Raise GATE-EXPORT-001 unless the HF model reproduces the stack's logits and, given `special`,
    `architecture` (an export's) and `tokenizer`, names the model's own special ids, reads back as
    the model's configuration and reads its tokenizer as the model's own."""


@gate_require("GATE-EXPORT-002", lambda parity, opset: fp32_outcome(parity, opset))
def certify_onnx_fp32(parity: LogitsParity, opset: dict[str, int]) -> None:
    """Raise GATE-EXPORT-002 unless the fp32 graph reproduces PyTorch's logits and declares the
    opset it was asked for."""


@gate_require("GATE-EXPORT-002", lambda parity, weight_types: int8_outcome(parity, weight_types))
def certify_onnx_int8(parity: LogitsParity, weight_types: dict[str, int]) -> None:
    """Raise GATE-EXPORT-002 unless the int8 graph is finite, keeps the next-token argmax and stores
    its quantised weights as int8."""
