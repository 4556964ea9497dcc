"""The model: config, layers, attention paths, the GPT itself, generation and its start-up checks."""

from stack.model.config import ModelConfig
from stack.model.gpt import GPT, param_count_formula

__all__ = ["GPT", "ModelConfig", "param_count_formula"]
