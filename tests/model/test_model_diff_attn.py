"""Differential attention: the layer, its gates (GATE-ARCH-005 … 007, and GATE-MODEL-001 over it).

The falsifiers plant each bug in the real code path: λ_init counted from the wrong depth, a
branch that forgets the causal mask, a branch scaled twice, an attention path that disagrees.
The workflow test trains a differential model with experts through the CLI and uses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_model, save_model

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.cli import main
from stack.model import attention as attention_module
from stack.model import diff_attention
from stack.model.checks import check_attention_paths
from stack.model.config import ModelConfig
from stack.model.diff_attention import DiffAttention, lambda_init
from stack.model.diff_checks import (
    check_diff_attention,
    check_diff_causal,
    check_diff_reduces,
    check_lambda_init,
)
from stack.model.gpt import GPT, param_count_formula
from stack.model.kv_cache import KVCache
from tests.support.train_support import prepared, smoke_args, train, unjudged, verdicts

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

SHAPE = {
    "vocab": 53,
    "d_model": 32,
    "n_layers": 3,
    "n_heads": 4,
    "n_kv_heads": 2,
    "ffn_hidden": 40,
    "ctx": 24,
}


def diff_model(seed: int = 0, **changes: object) -> GPT:
    return GPT(ModelConfig(**{**SHAPE, "diff_attn": True, **changes}), seed=seed)


def threshold(gate_id: str, name: str) -> float:
    return float(load_spec().gate(gate_id).threshold_values[name])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("diff-data"))


def test_off_by_default_changes_nothing() -> None:
    """A dense config dumps and names its tensors as a config without the option's keys does."""
    dense = ModelConfig(**SHAPE)
    assert "diff_attn" not in dense.model_dump()
    names = [name for name, _ in GPT(dense, seed=0).named_parameters()]
    assert not any("lambda" in n or ".q2." in n or "head_norm" in n for n in names)


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_formula(bias: bool) -> None:
    model = diff_model(qkv_bias=bias)
    assert model.num_params() == param_count_formula(model.config)


def test_triton_path_is_refused_in_one_line() -> None:
    with pytest.raises(BadInput, match=r"diff_attn has no Triton kernel path; set attention = \"sdpa\""):
        ModelConfig.from_dict({**SHAPE, "diff_attn": True, "attention": "triton"})
    with pytest.raises(BadInput, match="diff_attn has no Triton kernel path"):
        diff_model().set_attention_path("triton")


@given(depth=st.integers(min_value=0, max_value=100))
def test_lambda_init_rises_from_0_2_towards_0_8(depth: int) -> None:
    """The formula's shape: 0.2 at depth 0, increasing, below 0.8 (λ_init's role in the paper)."""
    assert lambda_init(0) == pytest.approx(0.2)
    assert lambda_init(depth) <= lambda_init(depth + 1) <= 0.8


@pytest.mark.holds("GATE-ARCH-005")
@pytest.mark.holds("GATE-ARCH-006")
@pytest.mark.holds("GATE-ARCH-007")
def test_start_up_checks_hold_on_a_gqa_model() -> None:
    with recording(Ledger()) as ledger:
        check_diff_attention(diff_model())
    for gate_id in ("GATE-ARCH-005", "GATE-ARCH-006", "GATE-ARCH-007"):
        assert ledger.results[gate_id].verdict is Verdict.PASS


@pytest.mark.gate("GATE-ARCH-005")
def test_falsifier_lambda_init_counted_from_one() -> None:
    """Depth counted from 1 (a common reading of "layer l") shifts every block's λ_init."""
    model = diff_model()
    for i, layer in enumerate(model.layers):
        layer.attn.lambda_init = lambda_init(i + 1)
    with pytest.raises(GateViolation) as caught:
        check_lambda_init(model)
    assert caught.value.gate_id == "GATE-ARCH-005"
    assert "block 0 has λ_init" in caught.value.message


@pytest.mark.gate("GATE-ARCH-005")
def test_falsifier_lambda_init_tolerance_boundary() -> None:
    atol = threshold("GATE-ARCH-005", "lambda_init_atol")

    def off_by(delta: float) -> dict[str, object]:
        return {"layers": [{"index": 2, "lambda_init": lambda_init(2) + delta}]}

    assert judge("GATE-ARCH-005", off_by(0.5 * atol)) == []
    assert judge("GATE-ARCH-005", off_by(2 * atol)) != []


@pytest.mark.gate("GATE-ARCH-006")
def test_falsifier_branch_without_causal_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both maps computed without the causal mask: the past then sees the future."""
    real = diff_attention.attention
    monkeypatch.setattr(
        diff_attention, "attention", lambda q, k, v, *, causal, **kw: real(q, k, v, causal=False, **kw)
    )
    with pytest.raises(GateViolation) as caught:
        check_diff_causal(diff_model())
    assert caught.value.gate_id == "GATE-ARCH-006"


@pytest.mark.gate("GATE-ARCH-006")
def test_falsifier_causal_tolerance_boundary() -> None:
    atol = threshold("GATE-ARCH-006", "causal_atol")
    leak = {"ref_absmax": 1.0, "prefix": 12, "length": 24}
    assert judge("GATE-ARCH-006", {**leak, "max_abs_diff": 0.5 * atol}) == []
    assert judge("GATE-ARCH-006", {**leak, "max_abs_diff": 2 * atol}) != []


def _scaled_twice(real: object) -> object:
    """attention with q divided by sqrt(head_dim) once more: the twice-scaled attention bug."""

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: object) -> torch.Tensor:
        return real(q * q.shape[-1] ** -0.5, k, v, **kw)  # type: ignore[operator]

    return attention


@pytest.mark.holds("GATE-ARCH-007")
@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), kv_heads=st.sampled_from([1, 2, 4]), bias=st.booleans())
def test_reduction_identity_holds_for_any_draw(seed: int, kv_heads: int, bias: bool) -> None:
    """λ = 0 gives normalised ordinary attention whatever the weights, GQA grouping and biases."""
    config = ModelConfig(**{**SHAPE, "diff_attn": True, "n_kv_heads": kv_heads, "qkv_bias": bias})
    with recording(Ledger()) as ledger:
        check_diff_reduces(config, seed=seed)
    assert ledger.results["GATE-ARCH-007"].verdict is Verdict.PASS


@pytest.mark.gate("GATE-ARCH-007")
def test_falsifier_branch_scaled_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diff_attention, "attention", _scaled_twice(diff_attention.attention))
    with pytest.raises(GateViolation) as caught:
        check_diff_reduces(diff_model().config)
    assert caught.value.gate_id == "GATE-ARCH-007"


@pytest.mark.gate("GATE-ARCH-007")
def test_falsifier_norm_without_its_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """head_norm applied without its learned weight: ordinary attention, but not the layer's."""
    monkeypatch.setattr(
        diff_attention.RMSNorm,
        "forward",
        lambda self, x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps),
    )
    with pytest.raises(GateViolation) as caught:
        check_diff_reduces(diff_model().config)
    assert caught.value.gate_id == "GATE-ARCH-007"


@pytest.mark.gate("GATE-ARCH-007")
def test_falsifier_reduction_tolerance_boundary() -> None:
    t = load_spec().gate("GATE-ARCH-007").threshold_values
    allowed = t["reduce_atol"] + t["reduce_rtol"] * 2.0
    assert judge("GATE-ARCH-007", {"max_abs_diff": 0.9 * allowed, "ref_absmax": 2.0}) == []
    assert judge("GATE-ARCH-007", {"max_abs_diff": 1.1 * allowed, "ref_absmax": 2.0}) != []


@pytest.mark.holds("GATE-MODEL-001")
def test_paths_agree_on_the_differential_layer() -> None:
    parity = check_attention_paths(diff_model())
    assert {"attention:naive", "attention:sdpa", "logits:sdpa"} <= set(parity.paths)
    assert "attention:triton" not in parity.paths  # refused by the config, so never probed


@pytest.mark.gate("GATE-MODEL-001")
def test_falsifier_sdpa_scaled_twice_on_the_differential_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATE-MODEL-001's probe is the differential layer itself: a bad sdpa path shows on it."""
    implementations = dict(attention_module._IMPLEMENTATIONS)
    implementations["sdpa"] = _scaled_twice(attention_module.sdpa_attention)  # type: ignore[assignment]
    monkeypatch.setattr(attention_module, "_IMPLEMENTATIONS", implementations)
    with pytest.raises(GateViolation) as caught:
        check_attention_paths(diff_model())
    assert caught.value.gate_id == "GATE-MODEL-001"


@settings(max_examples=5)
@given(split=st.integers(min_value=SHAPE["ctx"] - 6, max_value=SHAPE["ctx"] - 1), seed=st.integers(0, 1000))
def test_kv_cache_decoding_equals_one_forward(split: int, seed: int) -> None:
    """Prefill then one token at a time through the cache gives the logits of one full forward."""
    model = diff_model(seed=seed).eval()
    tokens = torch.randint(SHAPE["vocab"], (2, SHAPE["ctx"]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        full, _ = model(tokens)
        cache = KVCache(model.config, 2, tokens.device, torch.float32)
        steps = [model(tokens[:, :split], cache=cache)[0]]
        steps += [model(tokens[:, t : t + 1], cache=cache)[0] for t in range(split, SHAPE["ctx"])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_naive_and_sdpa_models_agree_with_moe() -> None:
    model = diff_model(moe_experts=2, moe_top_k=1)
    tokens = torch.randint(SHAPE["vocab"], (2, 16), generator=torch.Generator().manual_seed(0))
    model.set_attention_path("naive")
    naive, _ = model(tokens)
    model.set_attention_path("sdpa")
    torch.testing.assert_close(model(tokens)[0], naive, atol=1e-5, rtol=1e-5)


def test_save_and_load_round_trip_bit_for_bit(tmp_path: Path) -> None:
    saved, tokens = diff_model(seed=1), torch.randint(SHAPE["vocab"], (2, 16))
    save_model(saved, str(tmp_path / "model.safetensors"))
    fresh = diff_model(seed=2)
    load_model(fresh, str(tmp_path / "model.safetensors"))
    assert torch.equal(fresh(tokens)[0], saved(tokens)[0])
    keys = set(fresh.state_dict())
    assert {"layers.1.attn.lambda_q1", "layers.1.attn.k2.weight", "layers.1.attn.head_norm.weight"} <= keys


def test_layer_is_a_diff_attention_with_plain_linear_projections() -> None:
    """LoRA and surgery see q2 and k2 as ordinary nn.Linear submodules."""
    attn = diff_model().layers[0].attn
    assert isinstance(attn, DiffAttention)
    assert all(isinstance(getattr(attn, n), torch.nn.Linear) for n in ("q", "k", "v", "o", "q2", "k2"))


@pytest.mark.slow
@pytest.mark.holds("GATE-ARCH-005")
@pytest.mark.holds("GATE-ARCH-007")
def test_workflow_with_experts_train_sample_eval_inspect(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train a differential model with experts through the CLI, then use it with every tool."""
    run = tmp_path / "run"
    sets = ("model.n_layers=2", "model.diff_attn=true", "model.moe_experts=2")
    assert train(smoke_args(data, run, *sets)) == 0
    got = verdicts(run)
    assert {got[g] for g in ("GATE-ARCH-005", "GATE-ARCH-006", "GATE-ARCH-007", "GATE-MODEL-001")} == {"PASS"}
    assert unjudged(run) == {}  # the kind's gates and those its diff_attn and moe options turn on
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "gate", "--tokens", "8"]) == 0
    assert main(["eval", str(run), "--split", "val"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "--json"]) == 0
    names = {t["name"] for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert {"layers.1.attn.lambda_q1", "layers.1.attn.lambda_k2", "layers.1.attn.q2.weight"} <= names
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    assert "cannot be exported as a Hugging Face Llama" in capsys.readouterr().err
