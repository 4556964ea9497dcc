"""ModelConfig: typed, validated, unknown keys refused with the valid ones named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.errors import BadInput
from stack.model import ModelConfig

TINY = {"vocab": 32, "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 64, "ctx": 16}


def test_defaults_and_head_dim() -> None:
    config = ModelConfig(**TINY)
    assert config.head_width == 8
    assert config.attention == "sdpa"
    assert config.init_std == 0.02
    assert config.tie_embeddings


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(BadInput, match=r"unknown model config key\(s\) n_head; valid keys: vocab, d_model"):
        ModelConfig.from_dict({**TINY, "n_head": 4})
    with pytest.raises(ValidationError):
        ModelConfig(**TINY, dropout=0.1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 30}, "not a multiple of n_heads"),
        ({"n_kv_heads": 3}, "not a multiple of n_kv_heads"),
        ({"d_model": 36, "n_heads": 4, "n_kv_heads": 4}, "must be even for RoPE"),
        ({"attention": "flash"}, "attention"),
        ({"vocab": 1}, "vocab"),
    ],
)
def test_inconsistent_shapes_are_bad_input(change: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        ModelConfig.from_dict({**TINY, **change})


def test_config_is_frozen() -> None:
    config = ModelConfig(**TINY)
    with pytest.raises(ValidationError):
        config.d_model = 64  # type: ignore[misc]
