"""Qwen3's attention: `head_dim`, heads of their own width, and `qk_norm`, each head of q and k
RMS-normed with a gain before RoPE; nothing else changed.

Both are off by default and left out of a saved configuration while off, so every configuration
from before them hashes the same. On, the norms are modules of the attention (`attn.q_norm`,
`attn.k_norm`), so the trace, the KV cache, GATE-MODEL-001's float64 attention and GATE-MODEL-003's
written-out architecture all see them; three planted mistakes in them are caught by the last.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from stack.model import layers
from stack.model.checks import check_architecture, check_attention_paths
from stack.model.config import ModelConfig
from stack.model.gpt import GPT, param_count_formula
from tests.support.trace_support import CONFIG

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

GATE = "GATE-MODEL-003"
# Heads of 16 where d_model / n_heads is 8, as Qwen3-0.6B's 128 where 1024 / 16 is 64: q is wider
# than the residual stream, and o maps it back. 16 is a width the Triton kernel takes.
QWEN3 = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "qk_norm": True}


def qk_norm_model(seed: int = 0, **changes: Any) -> GPT:
    return GPT(CONFIG.model_copy(update={**QWEN3, **changes}), seed=seed)


def test_off_by_default_and_left_out_of_a_saved_configuration() -> None:
    saved = CONFIG.model_dump(mode="json")
    assert "head_dim" not in saved and "qk_norm" not in saved
    assert CONFIG.head_width == CONFIG.d_model // CONFIG.n_heads
    on = CONFIG.model_copy(update=QWEN3).model_dump(mode="json")
    assert on["head_dim"] == 16 and on["qk_norm"] is True
    assert all(layer.attn.q_norm is None for layer in GPT(CONFIG).layers)


@pytest.mark.parametrize("tie", [True, False])
def test_the_parameter_formula_counts_the_wider_heads_and_the_gains(tie: bool) -> None:
    config = CONFIG.model_copy(update={**QWEN3, "tie_embeddings": tie})
    model = GPT(config)
    assert param_count_formula(config) == model.num_params()
    attn = model.layers[0].attn
    assert attn.q.weight.shape == (4 * 16, CONFIG.d_model) and attn.o.weight.shape == (CONFIG.d_model, 4 * 16)
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (16,)


@settings(max_examples=60, deadline=None)
@given(
    heads=st.integers(1, 4),
    width=st.sampled_from([2, 4, 6, 16]),
    rows=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_a_head_norm_is_an_rms_norm_of_each_head_alone(heads: int, width: int, rows: int, seed: int) -> None:
    """Each head's slice of a row normed by its own mean square, whatever the others hold."""
    generator = torch.Generator().manual_seed(seed)
    norm = layers.HeadNorm(width, 1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width, generator=generator) + 0.5)
    x = torch.randn(rows, heads * width, generator=generator) * torch.rand(
        1, heads * width, generator=generator
    )
    expected = torch.cat(
        [F.rms_norm(part, (width,), norm.weight, 1e-6) for part in x.split(width, dim=-1)], dim=-1
    )
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6)


def test_a_fresh_model_s_gains_are_one_and_every_form_computes_the_written_out_architecture() -> None:
    model = qk_norm_model()
    assert all(bool((layer.attn.q_norm.weight == 1).all()) for layer in model.layers)
    parity = check_architecture(model, seed=3)  # fires GATE-MODEL-003 otherwise
    assert set(parity.forms) == {"train", "eval", "train packed", "eval packed", "cached"}


def test_every_attention_path_agrees_with_the_float64_attention_of_the_head_norms() -> None:
    paths = check_attention_paths(qk_norm_model()).errors("attention")
    assert {"naive", "sdpa"} <= paths.keys()  # and triton, interpreted, wherever it can run


def _whole_row(self: layers.HeadNorm, x: torch.Tensor) -> torch.Tensor:
    """Planted: one mean square over every head of the row, the gain tiled over the heads."""
    gain = self.weight.repeat(x.shape[-1] // self.weight.shape[0])
    return F.rms_norm(x, gain.shape, gain, self.eps)


def _skipped(self: layers.HeadNorm, x: torch.Tensor) -> torch.Tensor:
    """Planted: the heads passed on unnormed."""
    return x


def _after_rope(
    self: layers.Attention,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: Any = None,
    start: int = 0,
    docs: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Planted: the attention's forward with each head normed after RoPE instead of before (the
    gain then weighs the rotated coordinates, not the projection's)."""
    q, k, v = layers.project(x, (self.q, self.k, self.v))
    q = layers.RMSNorm.forward(self.q_norm, layers.apply_rope(self.heads(q, self.n_heads), cos, sin))
    k = layers.RMSNorm.forward(self.k_norm, layers.apply_rope(self.heads(k, self.n_kv_heads), cos, sin))
    v = self.heads(v, self.n_kv_heads)
    if cache is not None:
        k, v = cache.extend(k, v, start)
    return self.merge_heads(
        layers.attention(q, k, v, causal=True, path=self.path, docs=docs, key_mask=key_mask)
    )


MUTANTS = {
    "normed-over-the-whole-row": lambda patch: patch.setattr(layers.HeadNorm, "forward", _whole_row),
    "skipped": lambda patch: patch.setattr(layers.HeadNorm, "forward", _skipped),
    "after-rope": lambda patch: patch.setattr(layers.Attention, "forward", _after_rope),
}


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_mistake_in_the_head_norms_is_caught_by_the_written_out_architecture(
    monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    MUTANTS[mutant](monkeypatch)
    with pytest.raises(GateViolation) as caught:
        check_architecture(qk_norm_model(), seed=3)
    assert caught.value.gate_id == GATE


@pytest.mark.parametrize(
    ("settings_", "needle"),
    [
        ({"qk_norm": True, "diff_attn": True}, "qk_norm is not built for diff_attn"),
        ({"d_model": 30, "n_heads": 4}, "set head_dim to give the heads a width of their own"),
        ({"head_dim": 15}, "head_dim 15 must be even for RoPE"),
        ({"head_dim": 1}, "head_dim"),
    ],
)
def test_an_inconsistent_head_setting_is_refused_in_one_line(settings_: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadInput) as refused:
        ModelConfig.from_dict({**CONFIG.model_dump(), **settings_})
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_heads_of_their_own_width_need_no_divisible_residual_stream() -> None:
    """Qwen3's widths: 30 is no multiple of 4 heads, but with head_dim set the heads need not split it."""
    config = ModelConfig.from_dict({**CONFIG.model_dump(), "d_model": 30, "n_heads": 4, "head_dim": 8})
    check_architecture(GPT(config, seed=0), seed=1)
