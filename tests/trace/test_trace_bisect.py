"""Bisection names the planted bug (GATE-TRACE-003): the layer and the site, for every kind of site;
the producer of a NaN; and nothing at all for the same weights under another backend or dtype."""

from __future__ import annotations

import copy
import types
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.spec import load_spec
from stack.model import GPT
from stack.model.layers import Block
from stack.trace.bisect import nonfinite
from stack.trace.calibrate import TracePath
from stack.trace.compare import Tolerance, TolerancePolicy, compare_site, parse_rules
from stack.trace.modes import two_paths
from stack.trace.sites import LAYER_SITES, MODEL_SITES, site_names
from stack.trace.tracer import SiteRecord, trace_forward
from tests.support.trace_support import CONFIG, tiny_model, tokens

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

NAMES = site_names(CONFIG.n_layers)


def _edit_row(weight: torch.Tensor, delta: float) -> None:
    with torch.no_grad():
        weight[0] += delta


def _block_forward(model: GPT, layer: int, residual: float = 0.0, ffn_scale: float = 1.0) -> None:
    """Replace one block's forward by one with a bug in its residual arithmetic."""

    def forward(
        block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *rest: object
    ) -> torch.Tensor:
        x = x + block.attn(block.attn_norm(x), cos, sin, *rest) + residual
        return x + ffn_scale * block.ffn(block.ffn_norm(x))

    # Bound to the block, so that a deep copy of the model rebinds it to the copy's block.
    model.layers[layer].forward = types.MethodType(forward, model.layers[layer])  # type: ignore[method-assign]


def _swiglu(
    model: GPT, layer: int, forward: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
) -> None:
    """`forward(swiglu, gate, up)` as block `layer`'s product, bound to its module (its `act` is the
    ffn_silu site), so that a deep copy of the model rebinds it to the copy's."""
    swiglu = model.layers[layer].ffn.swiglu
    swiglu.forward = types.MethodType(forward, swiglu)  # type: ignore[method-assign]


# One planted bug per site kind: a weight edit where the site has a weight, code changed elsewhere.
PLANTS: dict[str, Callable[[GPT, int, float], None]] = {
    "embed": lambda m, i, d: _edit_row(m.embed.weight.T, d),
    "attn_norm": lambda m, i, d: _edit_row(m.layers[i].attn_norm.weight, d),
    "q": lambda m, i, d: _edit_row(m.layers[i].attn.q.weight, d),
    "k": lambda m, i, d: _edit_row(m.layers[i].attn.k.weight, d),
    "v": lambda m, i, d: _edit_row(m.layers[i].attn.v.weight, d),
    "attn_out": lambda m, i, d: _edit_row(m.layers[i].attn.o.weight, d),
    "attn_residual": lambda m, i, d: _block_forward(m, i, residual=d),
    "ffn_norm": lambda m, i, d: _edit_row(m.layers[i].ffn_norm.weight, d),
    "ffn_gate": lambda m, i, d: _edit_row(m.layers[i].ffn.gate.weight, d),
    "ffn_up": lambda m, i, d: _edit_row(m.layers[i].ffn.up.weight, d),
    "ffn_silu": lambda m, i, d: _swiglu(m, i, lambda s, g, u: s.act(g + d) * u),
    "ffn_swiglu": lambda m, i, d: _swiglu(m, i, lambda s, g, u: s.act(g) * u * (1 + d)),
    "ffn_out": lambda m, i, d: _edit_row(m.layers[i].ffn.down.weight, d),
    "output": lambda m, i, d: _block_forward(m, i, ffn_scale=1 + d),
    "final_norm": lambda m, i, d: _edit_row(m.final_norm.weight, d),
    "logits": lambda m, i, d: _edit_row(m.lm_head.weight, d),
}


def planted(kind: str, layer: int, delta: float) -> tuple[GPT, GPT]:
    """A small random model (head untied: the logits have a weight of their own) and a copy with the bug."""
    model = tiny_model(tie_embeddings=False)
    broken = copy.deepcopy(model)
    PLANTS[kind](broken, layer, delta)
    return model, broken


def first_divergence(a: GPT, b: GPT, **paths: str) -> str | None:
    path_a = TracePath(a, "sdpa", "fp32", "A")
    path_b = TracePath(b, paths.get("backend", "sdpa"), paths.get("dtype", "fp32"), "B")
    return two_paths(path_a, path_b, tokens(), NAMES, [], shadow=False, stop_on_nonfinite=False).first


def test_every_site_kind_has_a_plant() -> None:
    assert set(PLANTS) == set(LAYER_SITES) | set(MODEL_SITES)


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize("kind", [*LAYER_SITES, *MODEL_SITES])
@settings(max_examples=2)
@given(layer=st.integers(0, CONFIG.n_layers - 1), delta=st.floats(0.05, 2.0))
def test_bisection_names_the_planted_layer_and_site(kind: str, layer: int, delta: float) -> None:
    model, broken = planted(kind, layer, delta)
    expected = kind if kind in MODEL_SITES else f"layers.{layer}.{kind}"
    assert first_divergence(model, broken) == expected  # green without the plant: see the next test


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize(
    ("backend", "dtype"), [("sdpa", "fp32"), ("naive", "fp32"), ("triton", "fp32"), ("sdpa", "bf16")]
)
def test_the_same_weights_under_another_backend_or_dtype_agree(backend: str, dtype: str) -> None:
    model = tiny_model()
    assert first_divergence(model, model, backend=backend, dtype=dtype) is None


@pytest.mark.holds("GATE-TRACE-003")
def test_calibration_is_what_lets_bf16_drift_pass() -> None:
    model = tiny_model()
    a, b = TracePath(model, "sdpa", "fp32", "A"), TracePath(model, "sdpa", "bf16", "B")
    idx = tokens()
    calibrated = two_paths(a, b, idx, NAMES, [], shadow=False, stop_on_nonfinite=False)
    uncalibrated = two_paths(
        a, b, idx, NAMES, parse_rules(["1e-6"], []), shadow=False, stop_on_nonfinite=False
    )
    assert calibrated.first is None
    assert uncalibrated.first == "embed"  # bf16 rounds the embedding table itself


@pytest.mark.gate("GATE-TRACE-003")
def test_a_broken_attention_backend_is_named_at_attn_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from stack.model import attention

    model = tiny_model()
    assert first_divergence(model, model, backend="naive") is None
    # The classic: a kernel that scales the scores twice.
    naive = attention.naive_attention

    def twice(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float
    ) -> torch.Tensor:
        return naive(q, k, v, causal=causal, scale=scale * scale)

    monkeypatch.setitem(attention._IMPLEMENTATIONS, "naive", twice)
    assert first_divergence(model, model, backend="naive") == "layers.0.attn_out"


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize("kind", ["v", "ffn_gate", "ffn_up", "ffn_out"])
@settings(max_examples=3)
@given(layer=st.integers(0, CONFIG.n_layers - 1), value=st.sampled_from([float("nan"), float("inf")]))
def test_the_producer_of_a_nan_is_named_not_the_sites_that_pass_it_on(
    kind: str, layer: int, value: float
) -> None:
    model = tiny_model()
    trace, _ = trace_forward(model, tokens())
    assert nonfinite(trace).first is None
    PLANTS[kind](model, layer, value)
    found = nonfinite(trace_forward(model, tokens())[0])
    assert found.first == f"layers.{layer}.{kind}"
    assert found.producers == [found.first] and "logits" in found.carriers


@pytest.mark.gate("GATE-TRACE-003")
def test_shadow_mode_separates_error_made_from_error_inherited() -> None:
    model, broken = planted("ffn_up", 1, 0.5)
    result = two_paths(
        TracePath(model, "sdpa", "fp32", "A"),
        TracePath(broken, "sdpa", "fp32", "B"),
        tokens(),
        NAMES,
        [],
        True,
        False,
    )
    local = {row["layer"]: row["local_error_site"] for row in result.per_layer}
    inherited = {row["layer"]: row["first_diverging_site"] for row in result.per_layer}
    assert local == {0: None, 1: "layers.1.ffn_up", 2: None}
    assert inherited == {0: None, 1: "layers.1.ffn_up", 2: "layers.2.attn_norm"}


def _record(name: str, values: torch.Tensor) -> SiteRecord:
    return SiteRecord(name, tuple(values.shape), "float32", {})


@settings(max_examples=40)
@given(atol=st.floats(0, 1), rtol=st.floats(0, 1), seed=st.integers(0, 2**16), scale=st.floats(1e-3, 10))
def test_the_minimum_tolerance_passes_and_anything_tighter_fails(
    atol: float, rtol: float, seed: int, scale: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(64, generator=generator)
    b = a + scale * torch.randn(64, generator=generator)
    rec = _record("logits", a)

    def check(at: float, rt: float) -> bool:
        return compare_site("logits", rec, rec, a, b, Tolerance(at, rt, "test")).passed

    result = compare_site("logits", rec, rec, a, b, Tolerance(atol, rtol, "test"))
    assert check(result.min_atol, rtol) and check(atol, result.min_rtol)
    if result.min_atol > 0:
        assert not check(result.min_atol * 0.999, rtol)


def test_error_statistics_of_a_known_difference() -> None:
    a = torch.tensor([1.0, 2.0, 4.0, 0.0])
    b = torch.tensor([1.0, 2.5, 3.0, 0.0])
    rec = _record("embed", a)
    result = compare_site("embed", rec, rec, a, b, TolerancePolicy({}, []).for_site("embed"))
    assert result.abs_error.max == 1.0 and result.abs_error.mean == pytest.approx(0.375)
    assert result.rel_error.max == 0.25 and result.failing == 2 and not result.passed
    assert result.cosine == pytest.approx(float(F.cosine_similarity(a, b, dim=0)))
    assert result.sqnr_db == pytest.approx(10 * torch.log10(a.square().sum() / (a - b).square().sum()).item())


def test_nonfinite_values_agree_only_with_the_same_nonfinite_values() -> None:
    a = torch.tensor([float("nan"), float("inf"), 1.0])
    rec = _record("embed", a)
    policy = TolerancePolicy({}, [])
    assert compare_site("embed", rec, rec, a, a.clone(), policy.for_site("embed")).passed
    flipped = torch.tensor([float("nan"), float("-inf"), 1.0])
    assert compare_site("embed", rec, rec, a, flipped, policy.for_site("embed")).nonfinite_mismatch == 1


def test_tolerance_rules_match_by_glob_and_the_last_match_wins() -> None:
    policy = TolerancePolicy(
        {"layers.1.q": 1e-6}, parse_rules(["1e-3", "layers.1.*=0.5", "ffn_*=2"], ["q=0.1"])
    )
    assert policy.for_site("layers.1.q").atol == 0.5 and policy.for_site("layers.1.q").rtol == 0.1
    assert policy.for_site("layers.0.ffn_up").atol == 2.0
    assert policy.for_site("embed").atol == 1e-3
    m = load_spec().threshold("GATE-TRACE-003", "fp64_error_multiple")
    assert TolerancePolicy({"embed": 1e-6}, []).for_site("embed").atol == pytest.approx(m * 1e-6)


@pytest.mark.parametrize("rule", ["abc", "x=-1", "q=nan", "="])
def test_a_malformed_tolerance_is_bad_input(rule: str) -> None:
    with pytest.raises(BadInput, match="--atol"):
        parse_rules([rule], [])
