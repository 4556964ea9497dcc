"""GATE-MODEL-003: the model computes the architecture its config names.

The falsifiers plant a bug in one of the model's own modules, the way a slip in stack/model would
put it there, and call the start-up check the training loop calls; only the float64 reference of
stack/model/reference.py, which runs none of those modules, can tell. The threshold falsifiers put
a known error on the logits just beyond and just inside the tolerance.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.model import GPT, ModelConfig
from stack.model import gpt as gpt_module
from stack.model import layers as layers_module
from stack.model.checks import check_architecture
from stack.model.feedforward import SwiGLU
from stack.model.layers import Block, RMSNorm

CONFIG = ModelConfig(vocab=61, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, ctx=48)


def _violation(model: GPT) -> GateViolation:
    """The GATE-MODEL-003 violation the start-up check raises on `model`, recorded as FAIL."""
    with recording(Ledger()) as ledger, pytest.raises(GateViolation) as caught:
        check_architecture(model)
    assert caught.value.gate_id == "GATE-MODEL-003"
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.FAIL
    return caught.value


@settings(max_examples=10, deadline=None)
@given(
    kv_heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([8, 16]),
    layers=st.integers(1, 3),
    qkv_bias=st.booleans(),
    tie=st.booleans(),
    theta=st.sampled_from([500.0, 10000.0, 1e6]),
    ctx=st.integers(2, 48),
)
def test_the_model_is_the_architecture_its_config_names(
    kv_heads: int, head_dim: int, layers: int, qkv_bias: bool, tie: bool, theta: float, ctx: int
) -> None:
    """Any dense shape, with biases or without, tied or not, any RoPE base, any probe length."""
    config = ModelConfig(
        vocab=37, d_model=4 * head_dim, n_layers=layers, n_heads=4, n_kv_heads=kv_heads, ffn_hidden=40,
        ctx=ctx, qkv_bias=qkv_bias, tie_embeddings=tie, rope_theta=theta,
    )  # fmt: skip
    with recording(Ledger()) as ledger:
        parity = check_architecture(GPT(config, seed=0))
    assert parity.checked and set(parity.forms) == {"train", "eval", "train packed", "eval packed", "cached"}
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS


def test_an_option_the_reference_does_not_write_out_is_named_not_compared() -> None:
    parity = check_architecture(GPT(CONFIG.model_copy(update={"moe_experts": 4}), seed=0))
    assert not parity.checked and parity.skipped == ("moe",) and not parity.forms
    assert parity.outcome().ok


def test_a_record_without_its_forms_is_malformed() -> None:
    problems = judge("GATE-MODEL-003", {"checked": True, "forms": {}})
    assert problems and "malformed" in problems[0] and "forms" in problems[0]


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_rope_left_out_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation is the identity: the attention check's own reference rotated with the same
    function, so only a reference that writes RoPE out again sees the positions gone."""
    monkeypatch.setattr(layers_module, "apply_rope", lambda x, cos, sin: x)
    message = _violation(GPT(CONFIG, seed=0)).message
    assert all(form in message for form in ("train", "eval", "cached"))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_rope_turned_the_wrong_way_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's tables rotate by −angle: every position still differs from every other."""
    tables = gpt_module.rope_angles

    def backwards(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables(*args)
        return cos, -sin

    monkeypatch.setattr(gpt_module, "rope_angles", backwards)
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_cached_decoding_restarting_positions_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cached call rotates from position 0: the training forward is right, generation is not."""
    tables = gpt_module.rope_angles
    monkeypatch.setattr(gpt_module, "rope_angles", lambda c, start, n, d, t: tables(c, 0, n, d, t))
    message = _violation(GPT(CONFIG, seed=0)).message
    assert "cached differs" in message and "train differs" not in message


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_norm_without_its_gain_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invisible at initialisation (every gain is 1): the probe draws the gains off 1."""
    monkeypatch.setattr(RMSNorm, "forward", lambda self, x: torch.nn.functional.rms_norm(x, x.shape[-1:]))
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_dropped_residual_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    forward = Block.forward

    def without_residual(self: Block, x: torch.Tensor, *args: object) -> torch.Tensor:
        return forward(self, x, *args) - x

    monkeypatch.setattr(Block, "forward", without_residual)
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_swiglu_without_its_silu_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SwiGLU, "forward", lambda self, gate, up: gate * up)
    _violation(GPT(CONFIG, seed=0))


def _allowed() -> float:
    """The tolerance of the clean model's probe: model_atol + model_rtol × max |reference logit|."""
    parity = check_architecture(GPT(CONFIG, seed=0))
    atol, rtol = (load_spec().threshold("GATE-MODEL-003", name) for name in ("model_atol", "model_rtol"))
    return atol + rtol * max(form["ref_absmax"] for form in parity.forms.values())


def _offset_head(model: GPT, offset: float) -> GPT:
    """A head that adds `offset` to the first logit of every call (the twin inherits the hook)."""

    def shifted(module: torch.nn.Module, args: object, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[0, 0, 0] += offset
        return logits

    model.lm_head.register_forward_hook(shifted)
    return model


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_an_error_just_beyond_the_tolerance_is_caught() -> None:
    _violation(_offset_head(GPT(CONFIG, seed=0), 1.1 * _allowed()))


@pytest.mark.holds("GATE-MODEL-003")
def test_an_error_just_inside_the_tolerance_passes() -> None:
    with recording(Ledger()) as ledger:
        check_architecture(_offset_head(GPT(CONFIG, seed=0), 0.9 * _allowed()))
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS
