"""Trace dumps: a trace written in one process (or machine) and compared in another.

    stack trace CKPT --prompt TEXT --dump A.json          # here
    stack trace CKPT --prompt TEXT --dump B.json ...      # there, another backend or dtype
    stack trace --compare A.json B.json

A dump is one JSON file holding, per site: shape, dtype, the full statistics, the path's
reference error from fp64 (what default tolerances are calibrated from), and the values of the
site. Sites of at most SAMPLE_LIMIT elements are stored whole; a larger one is stored as the
SAMPLE_LIMIT elements at evenly spaced flat positions, which depend only on its size, so two
dumps of the same model sample the same positions. Values are little-endian float32 in base64
(exact for fp32, bf16 and fp16), float64 for an fp64 trace. A dump is thus at most about
11 kB per site: ~600 kB for a 4-layer model, whatever the prompt length. The dump of a model
whose blocks are not dense (a mixture of experts) also holds their site layout (sites.Layout).

Statistics always describe the whole tensor; element-wise errors of a sampled site describe
the sample, and the report says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.dump_sample import kept_positions, stored_values
from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes, plain
from contracts.gates import Outcome, gate_require, measure
from stack.artifacts import TRACE_DUMP_FORMAT
from stack.trace.sites import DENSE, TRACE_SCHEMA_VERSION, Layout
from stack.trace.tracer import SiteRecord, Trace

FORMAT = TRACE_DUMP_FORMAT
# Elements kept per site: a format constant (both sides of a comparison must agree), not a threshold.
SAMPLE_LIMIT = 2048


@dataclass(frozen=True)
class Dump:
    """A trace read back from a dump, with what it was made from."""

    trace: Trace
    tokens: list[int]
    path: dict[str, str]
    reference_error: dict[str, float]
    sample_limit: int


def sample_indices(numel: int, limit: int) -> torch.Tensor:
    """The flat positions a dump keeps of a tensor with `numel` elements."""
    if numel <= limit:
        return torch.arange(numel)
    return torch.linspace(0, numel - 1, limit, dtype=torch.float64).round().long()


def _encode(values: torch.Tensor) -> tuple[str, str]:
    wide = values.dtype == torch.float64
    array = (
        values.detach()
        .to("cpu", torch.float64 if wide else torch.float32)
        .numpy()
        .astype("<f8" if wide else "<f4")
    )
    return base64.b64encode(array.tobytes()).decode(), "float64" if wide else "float32"


def _decode(text: str, dtype: str) -> torch.Tensor:
    raw = bytearray(base64.b64decode(text))
    wide = torch.float64 if dtype == "float64" else torch.float32
    if not raw:  # an empty site (an expert no token chose); frombuffer refuses an empty buffer
        return torch.empty(0, dtype=wide)
    return torch.frombuffer(raw, dtype=wide).clone()


def write_dump(
    out: Path, trace: Trace, tokens: list[int], path: dict[str, str], reference_error: dict[str, float]
) -> None:
    """Write a kept trace as a dump (atomically)."""
    sites = []
    for name in trace.names:
        record = trace.sites[name]
        flat = trace.values[name].reshape(-1)
        values, dtype = _encode(flat[sample_indices(flat.numel(), SAMPLE_LIMIT).to(flat.device)])
        sites.append(
            {
                "name": name,
                "shape": list(record.shape),
                "dtype": record.dtype,
                "stats": {k: plain(v) for k, v in record.stats.items()},
                "reference_error": reference_error[name],
                "values_dtype": dtype,
                "values": values,
            }
        )
    payload = {
        "format": FORMAT,
        "trace_schema_version": trace.schema_version,
        "sample_limit": SAMPLE_LIMIT,
        "n_layers": trace.n_layers,
        "path": path,
        "tokens": tokens,
        "sites": sites,
    }
    if trace.layout != DENSE:  # a dense dump reads as it always has
        payload["layout"] = trace.layout.as_json()
    atomic_write_bytes(Path(out), (json.dumps(payload, allow_nan=False) + "\n").encode())


def _same(stored: list[float], kept: list[float]) -> bool:
    """Element by element equal, NaN where NaN."""
    return len(stored) == len(kept) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(stored, kept, strict=True)
    )


def dump_outcome(out: Path, trace: Trace) -> Outcome:
    """GATE-TRACE-002's check dump: the dump as written, read back from its bytes, against the
    traced forward's tensors: each site's stored values are its elements at the positions the
    format keeps (contracts.dump_sample), cast as the format stores them. States the file's sha256."""
    raw = Path(out).read_bytes()
    stored = {site.get("name"): site for site in json.loads(raw).get("sites") or []}
    unlike = []
    for name in trace.names:
        site, flat = stored.get(name), trace.values[name].detach().reshape(-1).cpu()
        wide = flat.dtype == torch.float64
        kept = flat[kept_positions(flat.numel(), SAMPLE_LIMIT)].to(torch.float64 if wide else torch.float32)
        if site is None or not _same(stored_values(site["values"], site["values_dtype"]), kept.tolist()):
            unlike.append(name)
    measured = {
        "dump_sha256": hashlib.sha256(raw).hexdigest(),
        "dump_sites": len(stored),
        "dump_traced": len(trace.names),
        "dump_unlike": unlike,
    }
    return measure("GATE-TRACE-002", measured, holds="the dump holds the traced sites' elements")


@gate_require("GATE-TRACE-002", dump_outcome)
def check_dump(out: Path, trace: Trace) -> None:
    """Bound to GATE-TRACE-002 (check dump): a dump whose stored elements are not the traced
    sites' halts the trace (exit 3) before its report is believed."""


def _load(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(
            f"no trace dump at {path}; make one with `stack trace CKPT --prompt TEXT --dump FILE`"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"{path} is not JSON; pass a file written by `stack trace --dump`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInput(f"{path} is not a gatestack trace dump (no format {FORMAT!r}); pass a `--dump` file")
    if payload.get("trace_schema_version") != TRACE_SCHEMA_VERSION:
        raise BadInput(
            f"{path} has trace schema version {payload.get('trace_schema_version')}, this gatestack reads "
            f"{TRACE_SCHEMA_VERSION}; dump it again with this version"
        )
    return payload


def read_dump(path: Path) -> Dump:
    """Read a dump back; anything but a dump of this schema version is bad input."""
    payload = _load(path)
    try:
        sites, values, errors = {}, {}, {}
        for site in payload["sites"]:
            name = site["name"]
            stats = {k: float(v) for k, v in site["stats"].items()}  # "nan"/"inf" read back as floats
            sites[name] = SiteRecord(name, tuple(site["shape"]), site["dtype"], stats)
            values[name] = _decode(site["values"], site["values_dtype"])
            errors[name] = float(site["reference_error"])
        layout = Layout.from_json(payload["layout"]) if "layout" in payload else DENSE
        trace = Trace(int(payload["n_layers"]), sites, values, layout=layout)
        return Dump(
            trace, list(payload["tokens"]), dict(payload["path"]), errors, int(payload["sample_limit"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(
            f"{path} is a damaged trace dump ({type(exc).__name__}: {exc}); dump it again"
        ) from None
