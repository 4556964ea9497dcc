"""GATE-MODEL-001: every attention path gives the same answer, and the scale is applied once."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from stack.model import GPT, ModelConfig
from stack.model import attention as attention_module
from stack.model.attention import PATHS, attention
from stack.model.checks import PathParity, check_attention_paths, runnable_paths

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

CONFIG = ModelConfig(vocab=50, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, ctx=48)
# Where every path can run: the triton kernel takes CUDA tensors, or CPU ones under its interpreter
# (which conftest turns on only where there is no GPU).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _parity(outputs: dict[str, torch.Tensor], reference: torch.Tensor) -> PathParity:
    """The GATE-MODEL-001 comparison of each path's output with the reference's."""
    scale = reference.double().abs().max().item()
    return PathParity(
        {
            f"attention:{path}": {
                "max_abs_diff": (out.double() - reference.double()).abs().max().item(),
                "ref_absmax": scale,
            }
            for path, out in outputs.items()
        }
    )


@settings(max_examples=8)
@given(
    heads_kv=st.integers(1, 2),
    group=st.integers(1, 3),
    n_q=st.integers(1, 80),
    extra_kv=st.integers(0, 20),
    dim=st.sampled_from([16, 32]),
    causal=st.booleans(),
)
def test_paths_agree_on_drawn_shapes(
    heads_kv: int, group: int, n_q: int, extra_kv: int, dim: int, causal: bool
) -> None:
    """Including cache-shaped calls (more keys than queries), where causal aligns bottom-right."""
    generator = torch.Generator().manual_seed(n_q * 100 + extra_kv)
    q = torch.randn(2, heads_kv * group, n_q, dim, generator=generator).to(DEVICE)
    k = torch.randn(2, heads_kv, n_q + extra_kv, dim, generator=generator).to(DEVICE)
    v = torch.randn(2, heads_kv, n_q + extra_kv, dim, generator=generator).to(DEVICE)
    reference = attention(q, k, v, causal=causal, path="naive")
    outcome = _parity(
        {path: attention(q, k, v, causal=causal, path=path) for path in ("sdpa", "triton")}, reference
    ).outcome()
    assert outcome.ok, outcome.message


def test_rows_that_see_no_key_are_zero_on_every_path() -> None:
    q, k, v = (torch.randn(shape, device=DEVICE) for shape in ((1, 2, 6, 16), (1, 1, 4, 16), (1, 1, 4, 16)))
    for path in PATHS:
        out = attention(q, k, v, causal=True, path=path)
        assert torch.isfinite(out).all() and (out[:, :, :2] == 0).all(), path


def test_unknown_path_is_bad_input() -> None:
    q = torch.randn(1, 1, 2, 16)
    with pytest.raises(BadInput, match="unknown attention path 'flash'"):
        attention(q, q, q, causal=True, path="flash")
    with pytest.raises(BadInput, match="unknown attention path"):
        GPT(CONFIG).set_attention_path("flash")


@pytest.mark.parametrize("tie", [True, False])
def test_start_up_check_passes_and_is_recorded(tie: bool) -> None:
    model = GPT(CONFIG.model_copy(update={"tie_embeddings": tie}), seed=1).to(DEVICE)
    with recording(Ledger()) as ledger:
        parity = check_attention_paths(model)
    assert set(parity.errors("attention")) == set(PATHS) == set(parity.errors("logits"))
    assert parity.outcome().ok
    assert ledger.results["GATE-MODEL-001"].verdict is Verdict.PASS


@pytest.mark.gate("GATE-MODEL-001")
def test_falsifier_scale_applied_twice_everywhere_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path agrees with every other, all wrong: only the fp64 formula can tell."""
    monkeypatch.setattr(attention_module, "softmax_scale", lambda head_dim: 1.0 / head_dim)
    with recording(Ledger()) as ledger, pytest.raises(GateViolation) as caught:
        check_attention_paths(GPT(CONFIG, seed=1).to(DEVICE))
    assert caught.value.gate_id == "GATE-MODEL-001"
    assert ledger.results["GATE-MODEL-001"].verdict is Verdict.FAIL
    assert all(f"attention:{path}" in caught.value.message for path in PATHS)


@pytest.mark.gate("GATE-MODEL-001")
def test_falsifier_one_path_scaling_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sdpa path pre-scales q and then lets torch scale again."""
    sdpa = attention_module.sdpa_attention

    def scaled_twice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float):
        return sdpa(q * scale, k, v, causal=causal, scale=scale)

    monkeypatch.setitem(attention_module._IMPLEMENTATIONS, "sdpa", scaled_twice)
    with pytest.raises(GateViolation, match="attention:sdpa") as caught:
        check_attention_paths(GPT(CONFIG, seed=1))
    assert "attention:naive" not in caught.value.message and "attention:triton" not in caught.value.message


@pytest.mark.gate("GATE-MODEL-001")
@pytest.mark.parametrize(
    ("ref_absmax", "past", "inside"),
    [
        (0.0, 1.5e-4, 7e-5),  # a reference of magnitude 0: path_atol 1e-4 alone
        (10.0, 1.5e-3, 8e-4),  # magnitude 10: 1e-4 + path_rtol 1e-4 x 10 = 1.1e-3
    ],
    ids=["atol", "rtol"],
)
def test_a_path_just_past_the_tolerance_fails_and_one_just_inside_holds(
    ref_absmax: float, past: float, inside: float
) -> None:
    """Each value lies strictly inside the tolerance's double or half.

    So a tolerance widened or narrowed twofold (or set to 0.05) turns this red.
    """

    def off_by(diff: float) -> bool:
        return PathParity({"attention:sdpa": {"max_abs_diff": diff, "ref_absmax": ref_absmax}}).outcome().ok

    assert not off_by(past)
    assert off_by(inside)


def test_triton_is_only_compared_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert runnable_paths(torch.device("cpu")) == ("naive", "sdpa")
    assert runnable_paths(torch.device("cuda")) == PATHS
