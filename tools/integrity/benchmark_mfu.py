"""A benchmark's model FLOPs utilisation, held to its tokens/s and to its model's shape.

The training benchmark also states the FLOPs per token its MFU is made of (`flops_per_token`),
which a reader takes at its word to compare with another stack's count: the checker counts them
again from the model it stored, with the function that counted them (a record that raised them
with its MFU would otherwise hold, MFU being recomputed from the model, not from them).

MFU is tokens/s × FLOPs per token ÷ the GPU's peak (stack/train/flops.py), so for one model shape
on one GPU, MFU ÷ tokens/s is one constant: the shape's FLOPs per token over the peak. A record
whose tokens/s was raised with its MFU left, whose MFU was raised alone, or whose two contenders'
throughputs were swapped (each MFU then sits beside the other's speed) breaks it. The benchmarks
store the model configuration they measured (benchmarks/model_speed.py: `config`,
benchmarks/train_throughput.py: `model`) and the GPU is the record's env.device, so the checker
computes every MFU again with the benchmark's own function (`stack.train.flops.mfu`) from the
tokens/s beside it, and a tokens/s rounded to a whole number may move it by half a unit only
(contracts/derive/benchmarks.py's Identity bounds the rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from contracts.derive.benchmarks import (
    FLOAT_SLACK,
    SPEED_BENCHMARKS,
    TRAIN_BENCHMARK,
    Identity,
    finite_number,
    problems_of,
)
from contracts.evidence import EvidenceRecord
from stack.model.config import ModelConfig
from stack.train.flops import flops_per_token, mfu, peak_flops

# The training benchmark stores its model from 2026-11-23 on; a record from before states its MFU
# on its word (one H100 record: bench-train-20261122T164456).
MODEL_STORED_SINCE = datetime(2026, 11, 23, tzinfo=UTC)
# benchmarks/train_throughput.py: each MFU field and the tokens/s it is of (`mfu` is the compiled
# stack's, the one the GPU goal train_mfu_gpu judges).
TRAIN_MFU = {
    "stack_mfu": "stack_tokens_per_s",
    "compiled_mfu": "compiled_tokens_per_s",
    "mfu": "compiled_tokens_per_s",
}


def mfu_problems(record: EvidenceRecord) -> list[str]:
    """Sentences for every MFU of a speed benchmark's record that its tokens/s, model and GPU do not give."""
    metrics = record.metrics
    name = metrics.get("benchmark")
    if record.run.kind != "benchmark" or name not in (*SPEED_BENCHMARKS.values(), TRAIN_BENCHMARK):
        return []
    pairs = list(_train_pairs(metrics) if name == TRAIN_BENCHMARK else _row_pairs(metrics))
    shape = metrics.get("model" if name == TRAIN_BENCHMARK else "config")
    if not isinstance(shape, dict):
        stated = any(recorded is not None for _, recorded, _ in pairs)
        if stated and record.run.started >= MODEL_STORED_SINCE:
            return [f"a {name} record states MFU without the model configuration it measured"]
        return []
    try:
        config = ModelConfig(**shape)
    except (ValidationError, TypeError) as exc:
        return [f"its model configuration is not one the stack builds ({exc.__class__.__name__})"]
    problems = _flops_problems(metrics, config)
    device = str(record.env.device)
    if peak_flops(device) is None:
        return problems + [
            f"{field} is {recorded!r}, but {device!r} has no known peak: its MFU is null"
            for field, recorded, _ in pairs
            if recorded is not None
        ]
    return problems + problems_of(_identities(pairs, _of_shape(config, device)))


def _flops_problems(metrics: dict[str, Any], config: ModelConfig) -> list[str]:
    """The stated FLOPs per token against those of the stored model (stack.train.flops), which the
    benchmark writes unrounded."""
    if "flops_per_token" not in metrics:
        return []
    stated, counted = metrics["flops_per_token"], flops_per_token(config)
    if finite_number(stated) and math.isclose(stated, counted, rel_tol=FLOAT_SLACK):
        return []
    return [
        f"metrics.flops_per_token is {stated!r}, but its model (metrics.model) counts {counted:.8g} a token "
        "(stack.train.flops.flops_per_token)"
    ]


def _of_shape(config: ModelConfig, device: str) -> Callable[[float], float]:
    """The benchmark's MFU of a tokens/s, for one model on one GPU."""

    def of(tokens_per_s: float) -> float:
        value = mfu(tokens_per_s, config, device)
        assert value is not None  # the caller checked the GPU's peak is known
        return value

    return of


def _identities(pairs: list[tuple[str, Any, Any]], formula: Callable[[float], float]) -> Iterator[Identity]:
    for field, recorded, tokens_per_s in pairs:
        yield Identity(field, recorded, formula, (tokens_per_s,), name="mfu")


def _row_pairs(metrics: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(field, recorded MFU, tokens/s) of each row of benchmarks/model_speed.py."""
    for row_name, row in (metrics.get("rows") or {}).items():
        if isinstance(row, dict) and "mfu" in row:
            yield f"metrics.rows.{row_name}.mfu", row["mfu"], row.get("tokens_per_s")


def _train_pairs(metrics: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(field, recorded MFU, tokens/s) of benchmarks/train_throughput.py's record."""
    for field, speed in TRAIN_MFU.items():
        if field in metrics and not (metrics[field] is None and metrics.get(speed) is None):
            yield f"metrics.{field}", metrics[field], metrics.get(speed)
