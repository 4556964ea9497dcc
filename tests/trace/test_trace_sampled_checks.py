"""GATE-TRACE-002's checks on samples (rev 6): what each fault class is caught with, proved.

Outside `stack trace --verify` each identity is checked on identity_sample_rows evenly spaced rows
of its site and each sampled site's statistics on a bounded slice of it. The spec states, per fault
class the falsifiers plant, the probability that the sample catches it: a site that observes
another tensor or a scaled module, 1; a fault on a run of ceil(n/s) consecutive rows (one sequence
of the batch), 1; a fault in one row at a place drawn uniformly, s/n. The tests here plant each
class on a batch with more rows than the sample, so that sampling is what is being tested.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.derive.trace import slice_problems
from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.kernels import host_build, host_stats
from stack.trace import stats as stats_module
from stack.trace import tracer as tracer_module
from stack.trace.site_identity import (
    Identity,
    SiteIdentities,
    sampled_deviations,
    sampled_rows,
    site_deviation,
)
from stack.trace.tracer import statistics_sample, statistics_slice, trace_forward
from tests.support.trace_support import save_run, seen_as, tiny_model

BATCH, LENGTH = 4, 30  # 120 rows: more than identity_sample_rows, so the sample is a sample
SAMPLE = int(load_spec().threshold("GATE-TRACE-002", "identity_sample_rows"))
RTOL = float(load_spec().threshold("GATE-TRACE-002", "site_identity_rtol"))


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(257, (BATCH, LENGTH), generator=torch.Generator().manual_seed(seed))


def _measured(trace: Any) -> dict[str, Any]:
    outcome = trace.completeness()
    assert outcome.ok, outcome.message
    return outcome.measured


def _rows_scaled(rows: list[int], times: float) -> Any:
    """The site with the given flat rows scaled by 1 + times × site_identity_rtol."""

    def plant(output: torch.Tensor) -> torch.Tensor:
        seen = output.clone().reshape(-1, output.shape[-1])
        seen[rows] *= 1 + times * RTOL
        return seen.reshape(output.shape)

    return plant


@pytest.mark.holds("GATE-TRACE-002")
def test_a_healthy_trace_states_its_sample_and_every_identity_holds_on_it() -> None:
    measured = _measured(trace_forward(tiny_model(), batch())[0])
    q = measured["identities"]["layers.0.q"]
    assert (q["rows"], q["rows_checked"]) == (BATCH * LENGTH, SAMPLE)
    assert measured["stats_rows"]["logits"][0] < BATCH * LENGTH  # a slice of the logits, not all


@pytest.mark.holds("GATE-TRACE-002")
def test_verify_checks_every_row_and_whole_sites() -> None:
    with tracer_module.exhaustive_checks():
        measured = _measured(trace_forward(tiny_model(), batch())[0])
    assert all(i["rows_checked"] == i["rows"] for i in measured["identities"].values())
    assert all(checked == rows for checked, rows in measured["stats_rows"].values())


@pytest.mark.gate("GATE-TRACE-002")
@pytest.mark.parametrize("rename", [{"q": "k", "k": "q"}, {"ffn_gate": "ffn_up", "ffn_up": "ffn_gate"}])
def test_swapped_sites_are_caught_on_the_sample(
    monkeypatch: pytest.MonkeyPatch, rename: dict[str, str]
) -> None:
    """Fault class 'another tensor' (probability 1): every row differs, so every sample sees it. Two
    kv heads make k as wide as q, so the sampled rows are compared, not the shapes."""
    output_hook = tracer_module.SiteHooks._output

    def swapped(self: Any, module: torch.nn.Module, name: str) -> None:
        layer, _, kind = name.rpartition(".")
        output_hook(self, module, f"{layer}.{rename.get(kind, kind)}" if layer else name)

    monkeypatch.setattr(tracer_module.SiteHooks, "_output", swapped)
    with pytest.raises(GateViolation, match="GATE-TRACE-002") as fired:
        trace_forward(tiny_model(n_kv_heads=2), batch())
    for kind in rename:
        assert fired.value.measured["identities"][f"layers.0.{kind}"]["rows_checked"] == SAMPLE


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
def test_a_scaled_module_just_beyond_the_tolerance_is_caught_on_the_sample(
    monkeypatch: pytest.MonkeyPatch, times: float, fires: bool
) -> None:
    """Fault class 'module off by a scale' (probability 1): the sampled rows are off by the same
    fraction as every row, so the sample's verdict is the whole tensor's."""
    seen_as(monkeypatch, "layers.1.ffn_out", _rows_scaled(list(range(BATCH * LENGTH)), times))
    if fires:
        with pytest.raises(GateViolation, match=r"layers\.1\.ffn_out differs"):
            trace_forward(tiny_model(), batch())
    else:
        found = _measured(trace_forward(tiny_model(), batch())[0])["identities"]["layers.1.ffn_out"]
        assert found["max_abs_diff"] == pytest.approx(times * RTOL * found["ref_absmax"], rel=0.01)


@pytest.mark.gate("GATE-TRACE-002")
@pytest.mark.parametrize("sequence", range(BATCH))
def test_a_fault_in_any_one_sequence_of_the_batch_is_caught(
    monkeypatch: pytest.MonkeyPatch, sequence: int
) -> None:
    """Fault class 'a run of ceil(n/s) rows' (probability 1): one whole sequence of the batch (30
    rows, at least ceil(120/s)) scaled; no gap between sampled rows is that long, wherever it is."""
    assert math.ceil(BATCH * LENGTH / SAMPLE) <= LENGTH
    rows = list(range(sequence * LENGTH, (sequence + 1) * LENGTH))
    seen_as(monkeypatch, "layers.2.q", _rows_scaled(rows, 3.0))
    with pytest.raises(GateViolation, match=r"layers\.2\.q differs"):
        trace_forward(tiny_model(), batch())


def _caught_at(row: int, rows: int, sample: int | None) -> bool:
    """Whether the identity of a projection, its traced output off in `row` alone, fails when
    checked by SiteIdentities on `sample` of its `rows` rows."""
    projection = torch.nn.Linear(8, 6, bias=False)
    x = torch.randn(rows, 8, generator=torch.Generator().manual_seed(row))
    with torch.no_grad():
        traced = projection(x)
        traced[row] += traced.abs().max()  # one token's row off by the site's scale
    checked = SiteIdentities({"out": Identity(("in",), projection.forward)}, {}, frozenset(), sample)
    checked.visit("in", x)
    checked.visit("out", traced)
    diff, scale, _ = checked.deviations()["out"].tolist()
    return diff > RTOL * scale


@pytest.mark.parametrize("rows", [SAMPLE + 1, 3 * SAMPLE + 5, 200])
def test_a_fault_in_one_row_is_caught_with_probability_s_over_n(rows: int) -> None:
    """Fault class 'one row' (probability s/n for a row drawn uniformly): the rows whose fault the
    sample catches are exactly its s sampled rows, so s of the n places catch it; --verify all n."""
    caught = [row for row in range(rows) if _caught_at(row, rows, SAMPLE)]
    assert len(caught) == SAMPLE
    assert caught == sampled_rows(rows, SAMPLE).tolist()
    assert all(_caught_at(row, rows, None) for row in range(rows))


@pytest.mark.gate("GATE-TRACE-002")
def test_a_fault_in_one_row_is_caught_in_the_sample_and_by_verify_outside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = BATCH * LENGTH
    inside = sampled_rows(n, SAMPLE).tolist()
    outside = next(row for row in range(n) if row not in inside)
    seen_as(monkeypatch, "layers.0.v", _rows_scaled([inside[3]], 3.0))
    with pytest.raises(GateViolation, match=r"layers\.0\.v differs"):
        trace_forward(tiny_model(), batch())
    seen_as(monkeypatch, "layers.0.v", _rows_scaled([outside], 3.0))
    trace_forward(tiny_model(), batch())  # the sample misses it, as the revision states
    with pytest.raises(GateViolation, match=r"layers\.0\.v differs"), tracer_module.exhaustive_checks():
        trace_forward(tiny_model(), batch())


@pytest.mark.gate("GATE-TRACE-002")
def test_a_kernel_whose_absmax_is_the_max_is_caught_on_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault class 'a kernel computing another quantity' (probability 1 where the slice shows it):
    absmax taken as the max on every site, here on slices of the batch's sites."""
    real = stats_module.host_site_stats

    def planted(tensor: torch.Tensor, **options: Any) -> torch.Tensor | None:
        row = real(tensor, **options)
        if row is not None:
            row = row.clone()
            row[4] = row[3]
        return row

    monkeypatch.setattr(stats_module, "host_site_stats", planted)
    with pytest.raises(GateViolation, match=r"absmax") as fired:
        trace_forward(tiny_model(), batch())
    assert any(checked < rows for checked, rows in fired.value.measured["stats_rows"].values())


# The C kernel's merge of a site's blocks (host_stats.c), each summed on its own, by OpenMP's threads
# where there are several, and what a planted fault leaves of it: the first block of several dropped.
_MERGE = "for (int64_t k = 0; k < blocks; k++) merge(&t, &block[k]);"
_MERGE_WITHOUT_FIRST = "for (int64_t k = blocks > 1; k < blocks; k++) merge(&t, &block[k]);"


@pytest.mark.gate("GATE-TRACE-002")
def test_a_kernel_whose_merge_drops_a_block_is_caught_on_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault class 'a kernel computing another quantity', in the merge that joins the blocks the
    threads summed: a slice of statistics_sample_elements spans two of the kernel's blocks, so the
    merge runs on it and the slice's statistics leave their definitions (here the logits', the one
    layout of this model whose slice spans more than one block)."""
    source = host_stats.SOURCE.read_text()
    assert _MERGE in source, "the planted fault no longer matches the kernel's merge"
    mutant = tmp_path / "host_stats.c"
    mutant.write_text(source.replace(_MERGE, _MERGE_WITHOUT_FIRST))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    library = host_build.loaded(mutant, host_stats.declare, openmp=True)
    assert not isinstance(library, str), library
    monkeypatch.setattr(host_stats, "_library", lambda: library)
    with pytest.raises(GateViolation, match="logits") as fired:
        trace_forward(tiny_model(), batch())
    checked, rows = fired.value.measured["stats_rows"]["logits"]
    assert checked < rows


def test_a_slice_is_evenly_spaced_rows_in_the_sites_own_layout() -> None:
    fused = torch.randn(2, 50, 96)
    q = fused[..., 32:64]  # a slice of a fused projection, as the q site is
    chosen, checked, rows = statistics_slice(q, 32 * 10)
    assert (checked, rows) == (10, 100) and chosen.stride() == (96 * 10, 1)
    assert torch.equal(chosen, q.reshape(-1, 32)[::10])
    assert statistics_slice(q, None)[1:] == (100, 100)


def test_the_statistics_sample_is_the_first_site_of_each_row_layout() -> None:
    """The check statistics' sample: the first site the forward shows of each device, dtype, row
    width and row strides. q, a view of the fused projection, is sampled beside the residual-width
    sites of its shape and dtype (embed first); a later block's sites are layouts block 0 showed
    already; every site's shape and dtype is among the sample's."""
    trace, _ = trace_forward(tiny_model(), batch())
    sampled = set(trace.sampled)
    assert {"embed", "layers.0.q", "layers.0.ffn_gate", "logits"} <= sampled
    assert trace.sites["layers.0.q"].shape == trace.sites["embed"].shape and "layers.1.q" in trace.sites
    assert not sampled & {"layers.0.attn_norm", "layers.1.attn_norm", "layers.1.q", "layers.1.ffn_gate"}
    layouts = {(site.shape, site.dtype) for name, site in trace.sites.items() if name in sampled}
    assert all((site.shape, site.dtype) in layouts for site in trace.sites.values())
    assert len(sampled) < len(trace.sites)


def test_rows_that_do_not_flatten_are_a_layout_of_their_own() -> None:
    """Every other sequence of a batch has the rows of the whole batch (width and row stride alike),
    but its rows do not flatten to one run at a fixed stride, so the kernel reads a contiguous copy:
    another path, sampled on its own; the same layout with other rows is not."""
    takes = statistics_sample()
    batch = torch.randn(4, 3, 8)
    assert takes(batch) and takes(batch[::2]) and not takes(torch.randn(5, 3, 8))


def test_the_statistics_sample_of_experts_does_not_grow_with_depth_or_routing() -> None:
    """Each expert reads its own number of routed rows of the residual width: rows of a layout the
    forward showed already (embed's), so however many blocks and experts, the sample is the same
    handful of layouts."""
    samples = []
    for layers in (2, 4):
        trace, _ = trace_forward(tiny_model(moe_experts=4, moe_top_k=2, n_layers=layers), batch())
        experts = [name for name in trace.sites if ".moe.expert" in name]
        assert len({trace.sites[name].shape for name in experts}) > 1  # the routing differs
        samples.append(sorted(trace.sampled))
    assert samples[0] == samples[1] and not any(".moe.expert" in name for name in samples[0])


def test_a_slices_statistics_outside_its_sites_are_named() -> None:
    site = {"count": 100, "min": -2.0, "max": 3.0, "absmax": 3.0, "nan": 0, "inf": 0, "zero": 1}
    site |= {"mean": 0.1, "std": 1.0, "l1_fp64": 80.0}
    part = site | {"count": 10, "min": -1.0, "max": 2.0, "absmax": 2.0, "zero": 0, "l1_fp64": 8.0}
    assert slice_problems(part, site) == []
    assert slice_problems(part | {"min": -2.5}, site) == [
        "the slice's min -2.5 lies outside its site's (-2.0)"
    ]
    assert "absmax" in slice_problems(part | {"absmax": 3.5}, site)[0]


SPECIALS = st.sampled_from([0.0, -0.0, 1e-30, 3.0e38, float("nan"), float("inf"), float("-inf")])
PAIR = st.lists(st.tuples(st.floats(-1e6, 1e6) | SPECIALS, st.floats(-1e6, 1e6) | SPECIALS), max_size=12)


@settings(max_examples=60)
@given(st.lists(PAIR, min_size=1, max_size=5), st.sampled_from([torch.float32, torch.bfloat16]))
def test_the_sampled_deviations_are_each_pairs_site_deviation(pairs: list[Any], dtype: torch.dtype) -> None:
    """Measured together, each pair's row is site_deviation's (float64) up to the rounding of its
    float32 difference; NaN/Inf matched or not, empty pairs included."""
    tensors = [
        (torch.tensor([a for a, _ in p]).to(dtype), torch.tensor([b for _, b in p]).to(dtype)) for p in pairs
    ]
    together = sampled_deviations(tensors)
    for row, (traced, recomputed) in zip(together.tolist(), tensors, strict=True):
        alone = site_deviation(traced, recomputed).tolist()
        assert row[1:] == alone[1:]
        assert row[0] == pytest.approx(alone[0], rel=1e-6, nan_ok=True)


@pytest.mark.holds("GATE-TRACE-002")
@pytest.mark.parametrize(("verify", "checked"), [(False, SAMPLE), (True, 30)])
def test_stack_trace_checks_the_sample_and_verify_every_row(
    tmp_path: Path, verify: bool, checked: int
) -> None:
    """A 30-byte prompt (30 rows): `stack trace` checks 16 of them, `--verify` all 30; the record
    says which."""
    run = save_run(tmp_path / "run", tiny_model())
    out = tmp_path / "rec"
    argv = ["trace", str(run), "--prompt", "x" * 30, "--out", str(out), *(["--verify"] if verify else [])]
    assert main(argv) == 0
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-TRACE-002"]
    q = result.measured["identities"]["layers.0.q"]
    assert (q["rows"], q["rows_checked"]) == (30, checked)


@pytest.mark.parametrize(
    ("checked", "fires"),
    [
        pytest.param(SAMPLE - 1, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(SAMPLE, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
def test_an_identity_checked_on_fewer_rows_than_the_sample_fires(checked: int, fires: bool) -> None:
    """A sample shrunk below identity_sample_rows catches less than the revision states."""
    from contracts.judges import judge

    identity = {"max_abs_diff": 0.0, "ref_absmax": 1.0, "rows": 100, "rows_checked": checked}
    problems = judge("GATE-TRACE-002", {"identities": {"layers.0.q": identity}})
    assert bool(problems) is fires
