"""Dumps: a trace made in one process is bisected in another, exactly as in-process where it is whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from stack.trace.calibrate import TracePath, reference_error, run
from stack.trace.dump import SAMPLE_LIMIT, read_dump, sample_indices, write_dump
from stack.trace.modes import dumps
from stack.trace.sites import site_names
from tests.support.trace_support import tiny_model, tokens

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU


def dump_of(path: TracePath, out: Path, idx: torch.Tensor) -> Path:
    meta = {"label": path.label, "backend": path.backend, "dtype": path.dtype, "device": "cpu"}
    write_dump(out, run(path, idx), idx[0].tolist(), meta, reference_error(path, idx))
    return out


@settings(max_examples=30)
@given(numel=st.integers(1, 5 * SAMPLE_LIMIT))
def test_samples_are_whole_below_the_limit_and_evenly_spread_above(numel: int) -> None:
    indices = sample_indices(numel, SAMPLE_LIMIT)
    assert indices.numel() == min(numel, SAMPLE_LIMIT)
    assert indices[0] == 0 and indices[-1] == numel - 1 and bool((indices.diff() > 0).all())


def test_a_dump_reads_back_what_was_traced(tmp_path: Path) -> None:
    path, idx = TracePath(tiny_model(), "sdpa", "bf16", "A"), tokens()
    trace = run(path, idx)
    back = read_dump(dump_of(path, tmp_path / "a.json", idx))
    assert back.tokens == idx[0].tolist() and back.path["dtype"] == "bf16"
    assert back.trace.sites == trace.sites
    for name, value in trace.values.items():
        kept = sample_indices(value.numel(), SAMPLE_LIMIT)
        assert torch.equal(back.trace.values[name], value.float().reshape(-1)[kept]), name
    assert back.trace.values["logits"].numel() == SAMPLE_LIMIT < trace.values["logits"].numel()


@pytest.mark.gate("GATE-TRACE-003")
def test_dumps_from_two_processes_name_the_planted_site(tmp_path: Path) -> None:
    model, idx = tiny_model(), tokens(20)  # 20 × 257 logits: more than a dump keeps
    broken = tiny_model()
    with torch.no_grad():
        broken.layers[2].attn.v.weight[3] *= -1
    a = read_dump(dump_of(TracePath(model, "sdpa", "fp32", "A"), tmp_path / "a.json", idx))
    b = read_dump(dump_of(TracePath(broken, "triton", "fp32", "B"), tmp_path / "b.json", idx))
    same = read_dump(dump_of(TracePath(model, "naive", "bf16", "C"), tmp_path / "c.json", idx))
    names = site_names(3)
    agree = dumps(a, same, names, [], False, ("a", "c"))
    assert agree.first is None and agree.data["comparisons"][-1]["sampled"]
    assert dumps(a, b, names, [], False, ("a", "b")).first == "layers.2.v"


def test_dumps_of_different_prompts_are_bad_input(tmp_path: Path) -> None:
    path = TracePath(tiny_model(), "sdpa", "fp32", "A")
    a = read_dump(dump_of(path, tmp_path / "a.json", tokens(seed=0)))
    b = read_dump(dump_of(path, tmp_path / "b.json", tokens(seed=1)))
    with pytest.raises(BadInput, match="different tokens"):
        dumps(a, b, site_names(3), [], False, ("a", "b"))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no trace dump"),
        ("{not json", "not JSON"),
        (json.dumps({"format": "something else"}), "not a gatestack trace dump"),
        (json.dumps({"format": "gatestack-trace-dump", "trace_schema_version": 99}), "schema version 99"),
        (json.dumps({"format": "gatestack-trace-dump", "trace_schema_version": 1}), "damaged"),
    ],
)
def test_a_bad_dump_is_bad_input(tmp_path: Path, content: str | None, needle: str) -> None:
    target = tmp_path / "x.json"
    if content is not None:
        target.write_text(content)
    with pytest.raises(BadInput, match=needle):
        read_dump(target)
