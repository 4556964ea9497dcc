"""Tracing the architecture options: a model's sites come from its modules, block by block.

A block with experts is traced as its layout (stack.trace.sites.block_layout) says: the router's
logits, each expert's routed input and its output, the shared expert, the mixture's output;
differential attention adds q2, k2 and the head norm; Qwen3's q/k head norms `q_norm` and
`k_norm`; a mixture-of-depths block its router, in the routed blocks only. The trace gates hold
there as they do for a dense model (GATE-TRACE-001, -002), and bisection names the expert, branch
or norm a planted bug lives in (GATE-TRACE-003). Dense names are untouched (the other trace tests
run unchanged).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from stack.cli import main
from stack.lens.residual import capture
from stack.model.gpt import GPT
from stack.trace import tracer as tracer_module
from stack.trace.anomaly import find_anomalies
from stack.trace.calibrate import TracePath, reference_error, run
from stack.trace.dump import read_dump, write_dump
from stack.trace.modes import two_paths
from stack.trace.patch import check_sites, sweep_sites
from stack.trace.sites import DENSE, LAYER_SITES, block_layout, layout_for, site_names
from stack.trace.tracer import trace_forward, unchanged_outcome
from tests.support.trace_support import CONFIG, save_run, swap_sites, tiny_model, tokens

EXPERTS = 4


def moe_model(seed: int = 0, **changes: object) -> GPT:
    return tiny_model(seed, moe_experts=EXPERTS, **changes)


def names(model: GPT) -> list[str]:
    return site_names(len(model.layers), layout_for(model.config))


def routed(trace: Any, layer: int) -> list[int]:
    """Per expert of `layer`, how many tokens it was routed in this trace."""
    return [trace.sites[f"layers.{layer}.moe.expert{e}.input"].shape[0] for e in range(EXPERTS)]


def test_the_dense_block_layout_is_the_dense_site_list() -> None:
    assert block_layout().kinds == LAYER_SITES
    assert layout_for(tiny_model().config) == DENSE


@pytest.mark.holds("GATE-TRACE-002")
def test_every_expert_is_a_site_in_forward_order() -> None:
    model = moe_model(moe_shared_expert=True)
    trace, _ = trace_forward(model, tokens())
    assert list(trace.sites) == names(model)
    assert trace.completeness().ok
    kinds = layout_for(model.config).kinds
    assert kinds[kinds.index("moe.router") :] == (
        "moe.router",
        *(k for e in range(EXPERTS) for k in (f"moe.expert{e}.input", f"moe.expert{e}")),
        "moe.shared",
        "moe_out",
        "output",
    )
    assert "layers.2.moe.expert3" in trace.sites and "layers.2.ffn_gate" not in trace.sites
    assert trace.sites["layers.0.moe.router"].shape == (12, EXPERTS)
    assert sum(routed(trace, 1)) == 12 * model.config.moe_top_k  # every token reaches its top-k


OPTIONS: dict[str, dict[str, object]] = {
    "moe": {"moe_experts": EXPERTS},
    "moe-shared-top1": {"moe_experts": EXPERTS, "moe_shared_expert": True, "moe_top_k": 1},
    "diff-attn": {"diff_attn": True},
    "qk-norm": {"qk_norm": True, "head_dim": 24},
    "mod": {"mod_every": 2, "mod_capacity": 0.5},
    "all": {"moe_experts": EXPERTS, "diff_attn": True, "mod_every": 1, "mod_capacity": 0.5},
}


@pytest.mark.holds("GATE-TRACE-001", "GATE-TRACE-002")
@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), length=st.integers(1, 16), option=st.sampled_from(sorted(OPTIONS)))
def test_tracing_any_option_leaves_the_logits_bit_for_bit(seed: int, length: int, option: str) -> None:
    model, idx = tiny_model(seed, **OPTIONS[option]), tokens(length, seed)
    with torch.no_grad():
        plain, _ = model(idx)
    trace, traced = trace_forward(model, idx)
    assert unchanged_outcome(traced, plain).ok
    assert list(trace.sites) == names(model) and trace.completeness().ok


def test_differential_attention_sites_observe_its_second_branch() -> None:
    model, idx = tiny_model(diff_attn=True), tokens()
    trace, _ = trace_forward(model, idx, keep=True)
    v, attn = trace.values, model.layers[1].attn
    kinds = ("attn_norm", "q", "q2", "k", "k2", "v", "attn_head_norm", "attn_out")
    assert list(trace.sites)[1:9] == [f"layers.0.{k}" for k in kinds]
    with torch.no_grad():
        assert torch.equal(v["layers.1.q2"], attn.q2(v["layers.1.attn_norm"]))
        assert torch.equal(v["layers.1.k2"], attn.k2(v["layers.1.attn_norm"]))
    assert trace.sites["layers.1.attn_head_norm"].shape == (1, CONFIG.n_heads, 12, CONFIG.head_width)


def test_head_norm_sites_observe_each_head_of_q_and_k_normed() -> None:
    """q_norm and k_norm come after v (the projections are one product) and hold their module's
    output on q and k: rows as wide as q's and k's, heads of 24 where d_model / n_heads is 16."""
    model, idx = tiny_model(**OPTIONS["qk-norm"]), tokens()
    trace, _ = trace_forward(model, idx, keep=True)
    v, attn = trace.values, model.layers[1].attn
    kinds = ("attn_norm", "q", "k", "v", "q_norm", "k_norm", "attn_out")
    assert list(trace.sites)[1:8] == [f"layers.0.{k}" for k in kinds]
    with torch.no_grad():
        assert torch.equal(v["layers.1.q_norm"], attn.q_norm(v["layers.1.q"]))
        assert torch.equal(v["layers.1.k_norm"], attn.k_norm(v["layers.1.k"]))
    assert trace.sites["layers.1.q_norm"].shape == (1, 12, CONFIG.n_heads * 24)


@pytest.mark.gate("GATE-TRACE-002")
def test_a_tracer_that_swaps_the_head_norms_fails_the_identity_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: attn.k_norm's output recorded as `q_norm` and attn.q_norm's as `k_norm`, with as
    many key as query heads, so the two are alike in shape and scale and only their values differ."""
    swap_sites(monkeypatch, {"q_norm": "k_norm", "k_norm": "q_norm"})
    model = tiny_model(**OPTIONS["qk-norm"], n_kv_heads=CONFIG.n_heads)
    with pytest.raises(GateViolation, match=r"GATE-TRACE-002.*layers\.0\.q_norm"):
        trace_forward(model, tokens())


@pytest.mark.gate("GATE-TRACE-003")
def test_bisection_names_the_head_norm_with_the_planted_gain() -> None:
    model, idx = tiny_model(**OPTIONS["qk-norm"]), tokens()
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layers[1].attn.k_norm.weight[:3] *= 1.5
    a, b = TracePath(model, "sdpa", "fp32", "A"), TracePath(broken, "sdpa", "fp32", "B")
    assert two_paths(a, b, idx, names(model), [], False, False).first == "layers.1.k_norm"


def test_only_the_routed_blocks_have_a_depth_router() -> None:
    """mod_every 2 of three blocks: block 1 routes, so its sites differ from blocks 0 and 2."""
    model = tiny_model(mod_every=2, mod_capacity=0.5)
    layout = layout_for(model.config)
    assert layout.block(1).kinds[0] == "router" and "router" not in layout.block(0).kinds
    trace, _ = trace_forward(model, tokens(), keep=True)
    assert "layers.1.router" in trace.sites and "layers.0.router" not in trace.sites
    routed = int((trace.values["layers.1.router"] > 0).sum())  # the threshold of a fresh model is 0
    assert trace.sites["layers.1.ffn_norm"].shape == (routed, CONFIG.d_model)
    find_anomalies(trace, trace.names)  # a site only some blocks have is compared among those


@pytest.mark.gate("GATE-TRACE-003")
def test_bisection_names_the_second_branch_of_differential_attention() -> None:
    model, idx = tiny_model(diff_attn=True), tokens()
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layers[1].attn.q2.weight[0] += 0.5
    a, b = TracePath(model, "sdpa", "fp32", "A"), TracePath(broken, "sdpa", "fp32", "B")
    assert two_paths(a, a, idx, names(model), [], False, False).first is None
    assert two_paths(a, b, idx, names(model), [], False, False).first == "layers.1.q2"


def test_expert_sites_observe_what_their_names_say() -> None:
    model, idx = moe_model(), tokens()
    trace, _ = trace_forward(model, idx, keep=True)
    v, moe = trace.values, model.layers[1].moe
    with torch.no_grad():
        logits = moe.router(v["layers.1.ffn_norm"].reshape(-1, CONFIG.d_model))
        for e, expert in enumerate(moe.experts):
            assert torch.equal(v[f"layers.1.moe.expert{e}"], expert(v[f"layers.1.moe.expert{e}.input"]))
    assert torch.equal(v["layers.1.moe.router"], logits)
    torch.testing.assert_close(v["layers.1.output"], v["layers.1.attn_residual"] + v["layers.1.moe_out"])


def test_an_expert_no_token_chose_is_recorded_empty() -> None:
    """One token, top-1 of four experts: three see no rows, and say so without NaN."""
    model = moe_model(moe_top_k=1)
    trace, _ = trace_forward(model, tokens(1))
    empty = [e for e, n in enumerate(routed(trace, 0)) if n == 0]
    assert len(empty) == EXPERTS - 1
    stats = trace.sites[f"layers.0.moe.expert{empty[0]}"].stats
    assert stats["count"] == 0 and set(stats.values()) == {0.0}
    assert trace.completeness().ok


def _traced_json(model: GPT, prompt: str, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """`stack trace` of `model` saved as a run, in anomaly mode: its exit code and its --json report."""
    save_run(tmp_path / "run", model)
    report = tmp_path / "report.json"
    argv = ["trace", str(tmp_path / "run"), "--prompt", prompt, "--json", str(report)]
    code = main([*argv, "--out", str(tmp_path / "record")])
    return code, json.loads(report.read_text())


@pytest.mark.holds("GATE-TRACE-003")
def test_an_expert_empty_in_one_layer_is_no_baseline_for_another(tmp_path: Path) -> None:
    """Two layers of four experts: expert 3 of layer 0 gets no token of this prompt, expert 3 of
    layer 1 gets some. The empty site is reported as empty, and its std of 0 is no baseline: a
    baseline of 0 made layer 1's expert an infinite ratio, a false anomaly (exit 3)."""
    model = moe_model(n_layers=2)
    code, report = _traced_json(model, "abcdef", tmp_path)
    counts = {s["name"]: s["stats"]["count"] for s in report["trace"]["sites"]}
    assert counts["layers.0.moe.expert3"] == 0 < counts["layers.1.moe.expert3"]  # the case, as built
    assert code == 0 and report["verdict"] == "clean", report["anomalies"]
    assert "layers.0.moe.expert3" in report["empty"] and "layers.1.moe.expert3" not in report["empty"]


@pytest.mark.holds("GATE-TRACE-003")
def test_a_depth_routed_block_that_routes_nothing_is_no_baseline(tmp_path: Path) -> None:
    """Both blocks route (mod_every 1); layer 0's inference threshold is above every score, so its
    feed-forward sees no row: empty, and no baseline for layer 1's."""
    model = tiny_model(n_layers=2, mod_every=1, mod_capacity=0.5)
    model.layers[0].route_threshold.fill_(1e9)
    code, report = _traced_json(model, "gate model evidence", tmp_path)
    counts = {s["name"]: s["stats"]["count"] for s in report["trace"]["sites"]}
    assert counts["layers.0.ffn_swiglu"] == 0 < counts["layers.1.ffn_swiglu"]
    assert code == 0 and report["verdict"] == "clean", report["anomalies"]
    assert {"layers.0.ffn_gate", "layers.0.ffn_out"} <= set(report["empty"])


@pytest.mark.gate("GATE-TRACE-003")
def test_a_real_outlier_next_to_an_empty_site_still_fires(tmp_path: Path) -> None:
    """Leaving empty sites out of the baselines hides nothing else: the MoD model above with layer
    1's up projection scaled beyond the anomaly multiple is still the first anomaly."""
    model = tiny_model(n_layers=3, mod_every=1, mod_capacity=0.5)
    model.layers[0].route_threshold.fill_(1e9)
    with torch.no_grad():
        model.layers[2].ffn.up.weight.mul_(100.0)
    code, report = _traced_json(model, "gate model evidence", tmp_path)
    assert code == 3 and report["first"] == "layers.2.ffn_up"


@pytest.mark.gate("GATE-TRACE-002")
def test_a_tracer_that_skips_an_expert_fails_completeness(monkeypatch: pytest.MonkeyPatch) -> None:
    output_hook = tracer_module.SiteHooks._output

    def forgetful(self: Any, module: torch.nn.Module, name: str) -> None:
        if name != "layers.1.moe.expert2":
            output_hook(self, module, name)

    monkeypatch.setattr(tracer_module.SiteHooks, "_output", forgetful)
    with pytest.raises(GateViolation, match=r"GATE-TRACE-002.*missing: layers\.1\.moe\.expert2"):
        trace_forward(moe_model(), tokens())


@pytest.mark.gate("GATE-TRACE-003")
def test_bisection_names_the_expert_with_the_planted_bug() -> None:
    model, idx = moe_model(), tokens()
    trace, _ = trace_forward(model, idx)
    expert = next(e for e, n in enumerate(routed(trace, 2)) if n > 0)  # one that computes something
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layers[2].moe.experts[expert].up.weight[0] += 0.5
    a, b = TracePath(model, "sdpa", "fp32", "A"), TracePath(broken, "sdpa", "fp32", "B")
    same = two_paths(a, TracePath(model, "naive", "fp32", "C"), idx, names(model), [], False, False)
    assert same.first is None
    found = two_paths(a, b, idx, names(model), [], shadow=False, stop_on_nonfinite=False)
    assert found.first == f"layers.2.moe.expert{expert}"


@pytest.mark.parametrize("option", ["moe-shared-top1", "mod"])
def test_a_dump_reads_back_with_its_layout(option: str, tmp_path: Path) -> None:
    path, idx = TracePath(tiny_model(**OPTIONS[option]), "sdpa", "fp32", "A"), tokens()
    meta = {"label": "A", "backend": "sdpa", "dtype": "fp32", "device": "cpu"}
    write_dump(tmp_path / "a.json", run(path, idx), idx[0].tolist(), meta, reference_error(path, idx))
    back = read_dump(tmp_path / "a.json").trace
    assert back.layout == layout_for(path.weights.config) != DENSE
    assert list(back.sites) == back.names and back.completeness().ok


def test_routed_sites_are_observed_or_ablated_but_not_patched_at_a_position() -> None:
    model = moe_model()
    layout, n = layout_for(model.config), len(model.layers)
    with pytest.raises(BadInput, match=r"no positions to patch.*moe_out, output"):
        check_sites(["layers.0.moe.expert1"], n, layout)
    with pytest.raises(BadInput, match="observed, not replaceable"):
        trace_forward(model, tokens(), ablate=["layers.0.moe.expert1.input"])
    with pytest.raises(BadInput, match="block 0 of this model has no ffn_gate site"):
        trace_forward(model, tokens(), ablate=["layers.0.ffn_gate"])
    assert sweep_sites("moe_out", n, layout) == [f"layers.{i}.moe_out" for i in range(n)]
    with pytest.raises(BadInput, match="moe_out, output"):
        sweep_sites("moe.router", n, layout)
    ablated, _ = trace_forward(model, tokens(), ablate=["layers.0.moe.expert1"])
    assert ablated.stat("layers.0.moe.expert1", "zero") == ablated.stat("layers.0.moe.expert1", "count")


@pytest.mark.holds("GATE-LENS-005")
def test_the_lens_reads_a_model_with_experts() -> None:
    model = moe_model()
    residuals = capture(model, tokens())
    assert len(residuals.states) == len(model.layers)


def test_stack_trace_names_expert_sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    save_run(run_dir, moe_model())
    code = main(
        ["trace", str(run_dir), "--prompt", "gate model", "--sites", "moe.*", "--out", str(tmp_path / "t")]
    )
    out = capsys.readouterr().out
    assert code == 0, out  # an expert no token chose is empty, never an anomaly
    assert "moe.expert3.input" in out and "moe.router" in out
