"""`rope_type = "llama3"`: Llama 3.1's rescaled RoPE frequencies, and nothing else changed.

The frequencies are held to transformers' own `rope_type = "llama3"` (the function a Llama 3.1 or
3.2 checkpoint is run with) over any parameters; a model with them is held to the written-out
reference in every form GATE-MODEL-003 runs, and two planted mistakes in the rescaling are caught
there. Off by default and left out of a saved configuration while off.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from stack.model import rope_scaling
from stack.model.checks import check_architecture
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from tests.support.trace_support import CONFIG

GATE = "GATE-MODEL-003"
CPU = torch.device("cpu")
# head_dim 16 at θ = 10,000: wavelengths 6.3, 20, 63, 199 … positions, so at an original context
# of 64 the first frequency is kept, the next two blended and the last five stretched.
LLAMA3 = {"rope_type": "llama3", "rope_factor": 8.0, "rope_original_ctx": 64}


def transformers_frequencies(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' plain RoPE frequencies for a Llama of `config`'s shape, and its llama3 ones (fp32)."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = {
        "rope_type": "llama3",
        "rope_theta": config.rope_theta,
        "factor": config.rope_factor,
        "low_freq_factor": config.rope_low_freq_factor,
        "high_freq_factor": config.rope_high_freq_factor,
        "original_max_position_embeddings": config.rope_original_ctx,
    }
    hf = LlamaConfig(
        hidden_size=config.d_model,
        num_attention_heads=config.n_heads,
        max_position_embeddings=config.ctx,
        rope_parameters=rope,
    )
    plain = LlamaRotaryEmbedding.compute_default_rope_parameters(hf)[0]
    return plain, ROPE_INIT_FUNCTIONS["llama3"](hf, CPU)[0]


@settings(max_examples=40, deadline=None)
@given(
    theta=st.sampled_from([10_000.0, 500_000.0, 1_000_000.0]),
    head_half=st.integers(1, 64),
    factor=st.floats(1.0, 64.0),
    low=st.floats(0.1, 4.0),
    width=st.floats(0.1, 8.0),
    original=st.integers(8, 8192),
)
def test_the_rescaling_is_transformers_llama3_one(
    theta: float, head_half: int, factor: float, low: float, width: float, original: int
) -> None:
    """From the same plain frequencies (the stack's and transformers' differ in the last bits, as
    any two ways of computing θ^(-2i/D) do, which GATE-EXPORT-001's parity covers), the rescaled
    ones agree but for a band decision a frequency within rounding of an edge may take either way:
    there the rule is continuous, so the two differ by about the rounding."""
    shape = {
        "d_model": 2 * head_half,
        "n_heads": 1,
        "n_kv_heads": 1,
        "ctx": 2 * original,
        "rope_theta": theta,
    }
    rope = {
        "rope_type": "llama3",
        "rope_factor": factor,
        "rope_low_freq_factor": low,
        "rope_high_freq_factor": low + width,
        "rope_original_ctx": original,
    }
    config = ModelConfig(**{**CONFIG.model_dump(), **shape, **rope})
    plain, theirs = transformers_frequencies(config)
    torch.testing.assert_close(rope_scaling.llama3_frequencies(plain, config), theirs, rtol=1e-6, atol=0.0)


@settings(max_examples=20, deadline=None)
@given(low=st.floats(0.1, 4.0), width=st.floats(0.1, 8.0), original=st.integers(1, 4096))
def test_at_factor_one_the_frequencies_are_the_plain_ones(low: float, width: float, original: int) -> None:
    plain = CONFIG
    scaled = CONFIG.model_copy(
        update={
            "rope_type": "llama3",
            "rope_factor": 1.0,
            "rope_low_freq_factor": low,
            "rope_high_freq_factor": low + width,
            "rope_original_ctx": original,
        }
    )
    torch.testing.assert_close(
        rope_scaling.inverse_frequencies(scaled, CPU, torch.float64),
        rope_scaling.inverse_frequencies(plain, CPU, torch.float64),
        rtol=1e-15,
        atol=0.0,
    )


def test_every_band_of_the_shape_used_here_is_reached() -> None:
    """The model below keeps one frequency, blends two and stretches the rest, so a mistake in any
    of the three cases moves its logits."""
    config = CONFIG.model_copy(update=LLAMA3)
    plain = rope_scaling.inverse_frequencies(CONFIG, CPU, torch.float64)
    ratio = (rope_scaling.inverse_frequencies(config, CPU, torch.float64) / plain).tolist()
    assert ratio[0] == 1.0 and all(1 / 8 < r < 1 for r in ratio[1:3]) and ratio[3:] == [1 / 8] * 5


@pytest.mark.holds(GATE)
def test_a_llama3_model_is_its_written_out_architecture_in_every_form() -> None:
    config = CONFIG.model_copy(update=LLAMA3)
    parity = check_architecture(GPT(config, seed=0), seed=3)
    assert parity.outcome().ok and set(parity.forms) == {
        "train",
        "eval",
        "train packed",
        "eval packed",
        "cached",
    }


# Planted: one line of `llama3_frequencies` changed, as a port of the rule might get it wrong.
MUTANTS = {
    "blend-unclamped": (".clamp(0.0, 1.0)", ""),
    "factor-multiplies": ("plain / factor", "plain * factor"),
    "bands-swapped": ("(original / wavelength - low)", "(original / wavelength - high)"),
}


def _planted(monkeypatch: pytest.MonkeyPatch, mutant: str) -> None:
    """`rope_scaling.llama3_frequencies` compiled from its own source with the mutant's line changed."""
    before, after = MUTANTS[mutant]
    source = textwrap.dedent(inspect.getsource(rope_scaling.llama3_frequencies))
    assert source.count(before) == 1, mutant
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(before, after), rope_scaling.__file__, "exec"), vars(rope_scaling), namespace)
    monkeypatch.setattr(rope_scaling, "llama3_frequencies", namespace["llama3_frequencies"])


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_mistake_in_the_rescaling_is_caught_by_the_written_out_architecture(
    monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    _planted(monkeypatch, mutant)
    with pytest.raises(GateViolation) as caught:
        check_architecture(GPT(CONFIG.model_copy(update=LLAMA3), seed=0), seed=3)
    assert caught.value.gate_id == GATE


@pytest.mark.gate(GATE)
def test_a_model_that_ignores_its_llama3_rope_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rescaling skipped: the plain frequencies where llama3's are configured."""
    monkeypatch.setattr(rope_scaling, "llama3_frequencies", lambda plain, _config: plain)
    with pytest.raises(GateViolation) as caught:
        check_architecture(GPT(CONFIG.model_copy(update=LLAMA3), seed=0), seed=3)
    assert caught.value.gate_id == GATE


def test_off_by_default_and_left_out_of_a_saved_configuration() -> None:
    assert "rope_type" not in CONFIG.model_dump(mode="json")
    saved = ModelConfig(**CONFIG.model_dump(), rope_type="llama3", rope_factor=32.0).model_dump(mode="json")
    assert saved["rope_type"] == "llama3" and saved["rope_factor"] == 32.0
    assert "rope_original_ctx" not in saved  # at its default, 8,192, as Meta's


@pytest.mark.parametrize(
    ("settings_", "needle"),
    [
        ({"rope_factor": 32.0}, 'rope_factor only apply with rope_type = "llama3"'),
        (
            {"rope_type": "llama3", "rope_low_freq_factor": 4.0, "rope_high_freq_factor": 4.0},
            "rope_high_freq_factor 4 must exceed rope_low_freq_factor 4",
        ),
        ({"rope_type": "yarn"}, "rope_type"),
        ({"rope_type": "llama3", "rope_factor": 0.5}, "rope_factor"),
    ],
)
def test_an_inconsistent_rope_is_refused_in_one_line(settings_: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadInput) as refused:
        ModelConfig.from_dict({**CONFIG.model_dump(), **settings_})
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_the_longest_wavelength_is_stretched_by_the_factor() -> None:
    """The identity Llama 3.1's extension rests on: below the low band's edge, wavelength × factor."""
    config = CONFIG.model_copy(update=LLAMA3)
    last = float(rope_scaling.inverse_frequencies(config, CPU, torch.float64)[-1])
    plain = CONFIG.rope_theta ** (-(CONFIG.head_width // 2 - 1) / (CONFIG.head_width // 2))
    assert math.isclose(2 * math.pi / last, 8.0 * 2 * math.pi / plain, rel_tol=1e-12)
