"""The judges of the export gates (spec/gates/export.yaml): a Hugging Face or ONNX export computes
the logits of the model it exports. The tensor comparisons (`tensors_within`, `sample_problems`)
are the ones the LoRA and quantisation judges read too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has, items, number

judges = Judges()


def _logits_within(m: Measured, prefix: str, atol: float, what: str) -> list[str]:
    diff, finite = number(m, f"{prefix}max_abs_diff"), flag(m, f"{prefix}finite")
    if finite and diff <= atol:
        return []
    return [f"{what} logits differ by up to {diff:.3g} (atol {atol}; finite: {finite})"]


# The dtype of the logits GATE-EXPORT-001's rounding is measured against (check exact): a float64
# forward's, as torch names it.
ROUNDING_REFERENCE_DTYPE = "torch.float64"


# What a gate comparing logits on a sample (GATE-EXPORT-001/002, GATE-HQQ-002) measures of it: the
# windows it consumed and what their named source gives (contracts.agreement_sample.source_facts).
SAMPLE_KEYS = ("sample_ids_sha256", "sample_windows", "source_ids_sha256", "source_windows")


def sample_problems(m: Measured) -> list[str]:
    """Check sample: the windows compared on are, id for id and in number, those their source gives."""
    if not has(m, *SAMPLE_KEYS):
        return []
    source = m.get("sample_source", "its source")
    if count(m, "sample_windows") != count(m, "source_windows"):
        return [
            f"the comparison read {m['sample_windows']} window(s) of the sample, but {source} gives "
            f"{m['source_windows']}: fewer positions compared than the source allows"
        ]
    if m.get("sample_ids_sha256") != m.get("source_ids_sha256"):
        return [
            f"the comparison read other ids (sha256 {str(m['sample_ids_sha256'])[:12]}) than {source} gives "
            f"({str(m['source_ids_sha256'])[:12]}): the sample is not the text its record names"
        ]
    return []


def tensors_within(m: Measured, prefix: str, atol: float, what: str) -> list[str]:
    """Check tensors of the parity gates: the largest difference between the two logits tensors as
    contracts.logits_parity computes it (`…max_abs_diff_tensors`, nan or inf for logits not finite or
    of another shape) within `atol`, and the number the record states (`…max_abs_diff`) that one."""
    diff = number(m, f"{prefix}max_abs_diff_tensors")
    problems = [] if diff <= atol else [f"{what} logits differ by up to {diff:.3g} (atol {atol})"]
    return problems + restated_from_tensors(m, f"{prefix}max_abs_diff", what)


def restated_from_tensors(m: Measured, key: str, what: str) -> list[str]:
    """The number the record states (`key`) against the one contracts.logits_parity computes from the
    same two tensors (`key_tensors`): equal, nan for nan, since both read the same float64 values."""
    stated, measured = number(m, key), number(m, f"{key}_tensors")
    if stated == measured or (math.isnan(stated) and math.isnan(measured)):
        return []
    return [
        f"{what} {key} is stated as {stated:.6g}, but the two logits tensors give {measured:.6g} "
        "(contracts.logits_parity): the stated number is not the one its definition gives"
    ]


@judges(
    "GATE-EXPORT-001",
    checks={
        "logits": ("max_abs_diff", "finite"),
        "special": ("special_ids+", "eot_id"),
        # the configuration read back from the export is the model's (every field
        # of config.json as transformers loads it, dtype included, against contracts.hf_export)
        "architecture": ("architecture_keys", "architecture_differing"),
        # a plain from_pretrained loads the export in the dtype its weights are stored in
        "loaded": ("loaded_dtypes+", "stored_dtypes+"),
        # the tokenizer transformers reads back is the model's own
        "tokenizer": ("tokenizer_keys", "tokenizer_differing"),
        # the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # the largest difference recomputed from the two logits tensors (contracts.logits_parity)
        "tensors": ("max_abs_diff", "max_abs_diff_tensors"),
        # the stack's own fp32 rounding on the sample, which scales the tolerance
        "rounding": ("rounding_error",),
        # the rounding was measured against logits a float64 forward gave
        "exact": ("rounding_reference_dtype",),
    },
)
def _hf_parity(m: Measured, t: Thresholds) -> list[str]:
    """The HF model's logits within logits_atol of the stack's (`logits`), every special id an
    export names, where transformers reads it, the model's own (`special`), every setting the
    importer reads back from the export and every field of its config.json the model's own
    (`architecture`), the dtypes a plain load gives the ones stored (`loaded`), and the tokenizer
    transformers reads from it, its special tokens, chat template and ids, the model's own
    (`tokenizer`)."""
    what, atol = "the Hugging Face export's", hf_logits_tolerance(m, t)
    problems = _logits_within(m, "", atol, what) if has(m, "finite") else []
    problems += sample_problems(m)
    if has(m, "max_abs_diff_tensors"):
        problems += tensors_within(m, "", atol, what)
    if has(m, "rounding_reference_dtype") and m["rounding_reference_dtype"] != ROUNDING_REFERENCE_DTYPE:
        problems.append(
            f"the stack's rounding was measured against {m['rounding_reference_dtype']} logits, not "
            f"{ROUNDING_REFERENCE_DTYPE}: the fp32 forward measured against itself, a rounding of about 0 "
            "that narrows the tolerance it scales"
        )
    if has(m, "loaded_dtypes", "stored_dtypes"):
        loaded, stored = (
            sorted(map(str, items(m, "loaded_dtypes"))),
            sorted(map(str, items(m, "stored_dtypes"))),
        )
        if loaded != stored:
            problems.append(
                f"transformers' plain from_pretrained loads the export in {', '.join(loaded)}, but its "
                f"weights are stored in {', '.join(stored)}: config.json declares another dtype than its "
                "weights', and users get a model other than the one exported"
            )
    if has(m, "special_ids", "eot_id"):
        problems += _special_id_problems(m)
    if has(m, "architecture_keys", "architecture_differing"):
        differing = _differing(m, "architecture_differing")
        if differing or count(m, "architecture_keys") < 1:
            problems.append(
                f"the configuration read back from the export is not the model's: {dict(differing)} "
                f"({count(m, 'architecture_keys')} setting(s) read back); a model loaded from it computes "
                "something else past what parity compared"
            )
    if has(m, "tokenizer_keys", "tokenizer_differing"):
        differing = _differing(m, "tokenizer_differing")
        if differing or count(m, "tokenizer_keys") < 1:
            listed = ", ".join(sorted(differing))
            problems.append(
                f"the tokenizer transformers reads back is not the model's own: {listed} differ "
                f"({count(m, 'tokenizer_keys')} value(s) read back); its users would get other special "
                "tokens, prompts or ids than the model's"
            )
    return problems


def _differing(m: Measured, key: str) -> Mapping[str, Any]:
    """A read-back's differing values, each setting to what differs."""
    differing = m[key]
    if not isinstance(differing, Mapping):
        raise Malformed(f"'{key}' must map each setting to what differs")
    return differing


def hf_logits_tolerance(m: Measured, t: Thresholds) -> float:
    """The largest logit difference GATE-EXPORT-001 admits: logits_atol, or, from rev 5, where the
    record measured it, logits_rounding_factor × the rounding the stack's own fp32 forward makes on
    the sample (its largest difference from the same model in float64), if that is larger. Two
    correct fp32 implementations differ by their summation order, which grows with depth, width and
    the logits' scale: a user's 8-layer Llama with logits near 8 was refused at 1.1e-4,
    while a wrong weight or rotary layout moves the logits by far more."""
    if not has(m, "rounding_error"):
        return float(t["logits_atol"])
    return max(float(t["logits_atol"]), float(t["logits_rounding_factor"]) * number(m, "rounding_error"))


def _special_id_problems(m: Measured) -> list[str]:
    """Each special id read from the export is the model's own (`special_expected`, by where it is
    read; rev 3 records name none, and then every one is the end of text of the stack's tokenizer)."""
    found, eot = m["special_ids"], count(m, "eot_id")
    if not isinstance(found, Mapping):
        raise Malformed("'special_ids' must map where each id was read to the id")
    expected = m.get("special_expected", dict.fromkeys(found, eot))
    if not isinstance(expected, Mapping):
        raise Malformed("'special_expected' must map where each id is read to the model's own")
    wrong = {
        where: (found.get(where), value)
        for where, value in sorted(expected.items())
        if isinstance(found.get(where), bool) or found.get(where) != value
    }
    if not wrong:
        return []
    listed = ", ".join(f"{where} is {got}, not {value}" for where, (got, value) in wrong.items())
    return [
        f"the export names other special ids than the model's own ({listed}): "
        "generation from it would not stop, or start, where the model learned to"
    ]


@judges(
    "GATE-EXPORT-002",
    checks={
        "fp32": ("fp32_max_abs_diff", "fp32_finite"),
        "int8": ("int8_argmax_agreement", "int8_finite"),
        # the int8 graph, as saved, stores every quantised matmul weight as INT8
        "weights": ("int8_weight_types+",),
        # the saved fp32 graph's opset_import declares the opset the export was asked for
        "opset": ("opset", "opset_asked"),
        # the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # the numbers recomputed from the two logits tensors (contracts.logits_parity)
        "tensors": ("fp32_max_abs_diff", "fp32_max_abs_diff_tensors"),
        "int8_tensors": ("int8_argmax_agreement_tensors", "int8_max_abs_diff_tensors"),
    },
)
def _onnx_parity(m: Measured, t: Thresholds) -> list[str]:
    problems = _int8_weight_problems(m) if has(m, "int8_weight_types") else []
    problems += sample_problems(m)
    if has(m, "opset", "opset_asked") and count(m, "opset") != count(m, "opset_asked"):
        problems.append(
            f"the saved graph declares ai.onnx opset {count(m, 'opset')}, but the export was asked for opset "
            f"{count(m, 'opset_asked')}: a runtime that needs the asked opset's operators cannot load it"
        )
    if has(m, "fp32_max_abs_diff") and has(m, "fp32_finite"):
        problems += _logits_within(m, "fp32_", t["fp32_logits_atol"], "the fp32 graph's")
    if has(m, "fp32_max_abs_diff_tensors"):
        problems += tensors_within(m, "fp32_", t["fp32_logits_atol"], "the fp32 graph's")
    if has(m, "int8_argmax_agreement_tensors", "int8_max_abs_diff_tensors"):
        problems += _int8_tensor_problems(m, t["int8_argmax_agreement"])
    if has(m, "int8_argmax_agreement"):
        agreement, finite = number(m, "int8_argmax_agreement"), flag(m, "int8_finite")
        if not (finite and agreement >= t["int8_argmax_agreement"]):
            problems.append(
                f"the int8 graph keeps the next-token argmax at {agreement:.1%} of positions "
                f"(at least {t['int8_argmax_agreement']:.0%}; finite: {finite})"
            )
    return problems


def _int8_tensor_problems(m: Measured, least: float) -> list[str]:
    """Check int8_tensors: the int8 graph's logits finite and of the stack's shape, and its argmax
    agreement as contracts.logits_parity computes them from the two tensors at least `least`; the
    record's stated agreement and difference those."""
    what = "the int8 graph's"
    agreement, diff = number(m, "int8_argmax_agreement_tensors"), number(m, "int8_max_abs_diff_tensors")
    problems = []
    if not (math.isfinite(diff) and agreement >= least):
        problems.append(
            f"{what} logits, as the two tensors give them, keep the next-token argmax at {agreement:.1%} of "
            f"positions (at least {least:.0%}; largest difference {diff:.3g})"
        )
    for key in ("int8_argmax_agreement", "int8_max_abs_diff"):
        problems += restated_from_tensors(m, key, what) if has(m, key) else []
    return problems


def _int8_weight_problems(m: Measured) -> list[str]:
    """The element types of the saved int8 graph's quantised matmul weights and zero-points
    (contracts.onnx_weights), every one INT8 as the export states."""
    types = m.get("int8_weight_types")
    if not isinstance(types, Mapping) or not all(isinstance(n, int) for n in types.values()):
        raise Malformed("'int8_weight_types' must map element types to counts")
    other = {kind: n for kind, n in types.items() if kind != "INT8"}
    if not other:
        return []
    return [
        f"the int8 graph stores {sum(other.values())} of its {sum(types.values())} quantised matmul weights "
        f"and zero-points as {', '.join(sorted(other))}, not INT8 (as stored: {dict(types)})"
    ]
