"""The model: config, layers, attention paths, the GPT itself, generation and its start-up checks.

`ModelConfig` is imported at once; `GPT` and `param_count_formula` on first use (PEP 562), so that
what reads a configuration alone (`stack prepare` sizing its held-out split against the presets)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stack.model.config import ModelConfig

if TYPE_CHECKING:
    from stack.model.gpt import GPT, param_count_formula

__all__ = ["GPT", "ModelConfig", "param_count_formula"]


def __getattr__(name: str) -> Any:
    """The names of stack.model.gpt, imported when first asked for."""
    if name in ("GPT", "param_count_formula"):
        from stack.model import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
