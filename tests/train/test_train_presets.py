"""The presets people train on one GPU: their sizes as documented, and room on an 80 GB GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.model import param_count_formula
from stack.train.config import resolve, training_window
from stack.train.presets import PRESETS, estimated_memory_bytes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
GPU_BYTES = 80 * 10**9  # one 80 GB GPU, as its maker counts
# vocabulary → (base, gpt2) parameters: what docs/training.md's preset table states
DOCUMENTED = {
    257: (29_633_536, 85_151_232),
    32_768: (46_279_168, 110_119_680),
    50_257: (55_233_536, 123_551_232),
}


@pytest.mark.parametrize("vocab", sorted(DOCUMENTED))
def test_the_documented_sizes_are_the_formulas(vocab: int) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for name, expected in zip(("base", "gpt2"), DOCUMENTED[vocab], strict=True):
        assert param_count_formula(resolve(name, None, [], vocab=vocab).model) == expected
        assert f"{expected:,}" in docs, (
            f"docs/training.md does not state {name}'s {expected:,} at vocab {vocab}"
        )


def test_gpt2_is_gpt2_small_and_base_is_30m_besides_the_embedding() -> None:
    gpt2 = resolve("gpt2", None, [], vocab=50_257).model
    assert (gpt2.n_layers, gpt2.d_model, gpt2.n_heads, gpt2.ctx) == (12, 768, 12, 1024)
    assert 120e6 < param_count_formula(gpt2) < 128e6
    base = resolve("base", None, [], vocab=257).model
    assert 25e6 < param_count_formula(base) - 257 * base.d_model < 35e6


@pytest.mark.parametrize("name", ["base", "gpt2"])
def test_the_batch_defaults_fit_one_80gb_gpu_with_room(name: str) -> None:
    """By the estimate, at a 50 k vocabulary, with half the GPU left for what it does not count."""
    config = resolve(name, None, [], vocab=50_257)
    estimate = estimated_memory_bytes(
        config.model, config.train.batch_size, training_window(config), param_count_formula(config.model)
    )
    assert estimate < GPU_BYTES / 2
    assert config.train.precision == "bf16" and set(PRESETS[name]) == {
        "model",
        "train",
        "eval",
        "ckpt",
        "monitor",
    }
