"""What a surgery record states of the model it started from, derived again from that model.

A LASER or HQQ record names its source model (config `source`, the word its command line gave)
and the digest of the weights it read (surgery.json's `source.model_sha256`). Where those weights
are in the repository (a committed model under evidence/models/, say) several of its numbers
follow from them alone, without running the surgery or the model:

* GATE-LASER-002, per matrix: its rank (the smaller dimension), its Frobenius norm, and the norm
  of the singular values ⌈ρ·rank⌉ leaves out (an SVD in float64, as stack.surgery.laser takes it);
* GATE-HQQ-001, per matrix: the Frobenius error of round-to-nearest at the record's bits and
  group (contracts.quantisation, the baseline the quantiser is held to), rounded to the weight's
  dtype as the quantiser stores it.

So a record that restates a baseline error, a norm or a discarded norm its source does not give
is caught, however well its files are re-hashed. The errors of the weights a surgery wrote are
not derived here: those weights are the surgery's output, outside the repository. What its
grid is, is: GATE-HQQ-001's check grid counts the distinct values of each group of every matrix
the quantiser wrote, and the checkpoint the record's run directory holds gives those counts again
(contracts.quantisation.most_levels), with each matrix's number of groups.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.quantisation import most_levels, rtn_baseline
from contracts.reading import read_bytes, read_json, read_safetensors
from contracts.truncation import rank_kept
from stack.model.names import block_matrix

SURGERY_REPORT = "surgery.json"
WEIGHTS = "model.safetensors"
# Derived norms agree with the record to this relative tolerance: LAPACK's SVD and the norms'
# summation order may differ in the last bits between machines; a tampering is far larger.
NORM_RTOL = 1e-9


def _matrix_key(site: str) -> str:
    """The state-dict key of a block matrix named by its trace site, `layers.2.ffn_gate`."""
    layers, index, name = site.split(".", 2)
    return f"{layers}.{index}.{block_matrix(name).module}.weight"


# Source models' tensors by the sha256 of the file they were read from. Every number derived here
# is a pure function of those bytes, so it is computed once per process and digest
# (`_laser_numbers`, `_rtn_error`): a process that checks several copies of one ledger, as the
# checker's tests do, takes each SVD once.
_SOURCES: dict[str, dict[str, torch.Tensor]] = {}


def source_weights(record: EvidenceRecord, report: dict[str, Any], root: Path) -> str | None:
    """The digest of the source model's weights, loaded into `_SOURCES`, when its `source` names a
    directory of the repository whose weights hash to the digest surgery.json states; else None
    (nothing to derive from)."""
    word = record.config.get("source") if isinstance(record.config, dict) else None
    stated = (report.get("source") or {}).get("model_sha256")
    if not isinstance(word, str) or not isinstance(stated, str) or Path(word).is_absolute():
        return None
    path = (root / word / WEIGHTS).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    if hashlib.sha256(read_bytes(path, root)).hexdigest() != stated:
        return None
    if stated not in _SOURCES:
        _SOURCES[stated] = read_safetensors(path, root)
    return stated


@lru_cache(maxsize=4096)
def _laser_numbers(digest: str, key: str, rho: float) -> dict[str, float]:
    """A matrix's rank, Frobenius norm and the norm of the singular values LASER at ρ leaves out,
    in float64 as stack.surgery.laser takes them."""
    original = _SOURCES[digest][key].double()
    rank = min(original.shape)
    values = torch.linalg.svdvals(original)
    return {
        "rank": rank,
        "norm": float(torch.linalg.matrix_norm(original)),
        "discarded_norm": float(values[rank_kept(rank, rho) :].square().sum().sqrt()),
    }


@lru_cache(maxsize=4096)
def _rtn_error(digest: str, key: str, bits: int, group: int) -> float:
    """The Frobenius error of round-to-nearest at `bits` in groups of `group`, rounded to the
    weight's dtype as the quantiser stores it."""
    weight = _SOURCES[digest][key]
    baseline = rtn_baseline(weight, bits, group).to(weight.dtype).double()
    return float(torch.linalg.matrix_norm(weight.double() - baseline))


def _differs(recorded: Any, derived: float) -> bool:
    return not isinstance(recorded, int | float) or not math.isclose(recorded, derived, rel_tol=NORM_RTOL)


def _held(
    gate_id: str, rows: list[Any], digest: str, problems: list[str]
) -> Iterator[tuple[dict[str, Any], str]]:
    """Each row of `gate_id` with the state-dict key of the matrix it names; a row naming a
    matrix the source model (`digest`) does not hold is a problem, added to `problems`."""
    for row in rows:
        key = _matrix_key(str(row.get("matrix")))
        if key not in _SOURCES[digest]:
            problems.append(f"{gate_id} names {row.get('matrix')}, which its source model does not hold")
        else:
            yield row, key


def _elements_problems(measured: dict[str, Any], digest: str) -> list[str]:
    """GATE-LASER-001's elements: the weights of the matrices it lists, counted in the source model
    (each matrix's shape is the source's)."""
    keys = [_matrix_key(str(site)) for site in measured["matrices"]]
    if any(key not in _SOURCES[digest] for key in keys):
        return ["GATE-LASER-001 lists a matrix its source model does not hold"]
    elements = sum(_SOURCES[digest][key].numel() for key in keys)
    if measured["elements"] == elements:
        return []
    return [
        f"GATE-LASER-001's elements is {measured['elements']!r}, but the {len(keys)} matrices it lists "
        f"hold {elements} weights in its source model"
    ]


def _laser_problems(rows: list[Any], digest: str, rho: float) -> list[str]:
    problems: list[str] = []
    for row, key in _held("GATE-LASER-002", rows, digest, problems):
        derived = _laser_numbers(digest, key, rho)
        problems += [
            f"GATE-LASER-002's {row.get('matrix')} {key} is {row.get(key)!r}, but its source model "
            f"gives {want:.10g}"
            for key, want in derived.items()
            if _differs(row.get(key), want)
        ]
    return problems


def _hqq_problems(rows: list[Any], digest: str, bits: int, group: int) -> list[str]:
    problems: list[str] = []
    for row, key in _held("GATE-HQQ-001", rows, digest, problems):
        want = _rtn_error(digest, key, bits, group)
        if _differs(row.get("rtn_error"), want):
            problems.append(
                f"GATE-HQQ-001's {row.get('matrix')} rtn_error is {row.get('rtn_error')!r}, but "
                f"round-to-nearest at {bits} bits in groups of {group} of its source model gives {want:.10g}"
            )
    return problems


def _grid_problems(rows: list[Any], run_dir: Path, report: dict[str, Any]) -> list[str]:
    """GATE-HQQ-001's grid rows against the checkpoint the quantiser wrote (surgery.json's
    `checkpoint` in the run directory): each matrix's groups and the most distinct values a group
    holds there."""
    path = run_dir / str(report.get("checkpoint")) / WEIGHTS
    if not path.is_file():
        return []  # a halted surgery wrote none; the artifact checks name a missing one
    written = read_safetensors(path, run_dir)
    problems = []
    for row in rows:
        weight, group = written.get(str(row.get("key"))), row.get("group")
        if weight is None or not isinstance(group, int) or group < 1 or weight.numel() % group:
            where = f"{row.get('key')!r} in groups of {group!r}"
            problems.append(f"GATE-HQQ-001's grid names {where}, which the checkpoint it wrote does not hold")
            continue
        derived = {"groups": weight.numel() // group, "levels": most_levels(weight, group)}
        problems += [
            f"GATE-HQQ-001's grid of {row.get('matrix')} has {key} {row.get(key)!r}, but the checkpoint it "
            f"wrote gives {want}"
            for key, want in derived.items()
            if row.get(key) != want
        ]
    return problems


def surgery_source_problems(record: EvidenceRecord, run_dir: Path, root: Path = REPO_ROOT) -> list[str]:
    """What a laser or quantize record states of its committed source model and the model does not
    give (empty for other kinds, and for a source outside the repository), and what its grid states
    of the checkpoint it wrote and that checkpoint does not give."""
    if record.run.kind not in ("laser", "quantize") or not (run_dir / SURGERY_REPORT).is_file():
        return []
    report = read_json(run_dir / SURGERY_REPORT, run_dir)
    gates = report.get("gates") if isinstance(report, dict) else None
    if not isinstance(gates, dict):
        return []
    settings = report.get("settings") or {}
    laser_rows = (gates.get("GATE-LASER-002") or {}).get("matrices")
    hqq_rows = (gates.get("GATE-HQQ-001") or {}).get("matrices")
    grid_rows = (gates.get("GATE-HQQ-001") or {}).get("grid")
    problems = []
    if isinstance(grid_rows, list):
        problems += _grid_problems([r for r in grid_rows if isinstance(r, dict)], run_dir, report)
    rho, bits, group = settings.get("rho"), settings.get("bits"), settings.get("group_size")
    counted = gates.get("GATE-LASER-001") or {}
    digest = source_weights(record, report, root) if laser_rows or hqq_rows or counted else None
    if digest is None:
        return [f"{SURGERY_REPORT}: {problem}" for problem in problems]
    if isinstance(counted, dict) and isinstance(counted.get("matrices"), list) and "elements" in counted:
        problems += _elements_problems(counted, digest)
    if isinstance(laser_rows, list) and isinstance(rho, int | float):
        problems += _laser_problems([r for r in laser_rows if isinstance(r, dict)], digest, float(rho))
    if isinstance(hqq_rows, list) and isinstance(bits, int) and isinstance(group, int):
        problems += _hqq_problems([r for r in hqq_rows if isinstance(r, dict)], digest, bits, group)
    return [f"{SURGERY_REPORT}: {problem}" for problem in problems]
