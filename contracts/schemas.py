"""JSON Schema of every document gatestack reads or writes, for tools outside Python."""

from __future__ import annotations

from typing import Any

from contracts.evidence import EvidenceRecord
from contracts.registry import Registry
from contracts.spec import BenchmarkFile, GateFile, SpecHeader

SCHEMA_MODELS = {
    "spec": SpecHeader,
    "gates": GateFile,
    "benchmarks": BenchmarkFile,
    "registry": Registry,
    "evidence": EvidenceRecord,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """name → JSON Schema (draft 2020-12, as pydantic emits it)."""
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}
