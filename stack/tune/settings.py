"""The settings of `stack synth` and their defaults, free of torch so that `stack --help` stays fast.

(`stack dpo` and `stack distill` are training runs: their settings are stack.train.tune_settings.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthSettings:
    """How many samples, how they are drawn, and what the filters keep."""

    samples: int = 32
    seed: int = 0
    temperature: float = 1.0
    max_instruction_tokens: int = 64
    max_response_tokens: int = 192
    min_chars: int = 20
    min_coherence: float = 30.0


SYNTH_DEFAULTS = SynthSettings()
