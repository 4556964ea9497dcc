"""RoPE's frequencies under `rope_type`: plain, or stretched as Llama 3.1 stretches them.

Llama 3.1 and 3.2 were trained at a context of 8,192 and then extended by changing only the
rotation frequencies: a frequency whose wavelength (2π / f positions) is longer than
`rope_original_ctx / rope_low_freq_factor` turns `rope_factor` times slower, one whose wavelength is
shorter than `rope_original_ctx / rope_high_freq_factor` is kept, and those between are blended
linearly in `rope_original_ctx / wavelength`, so that the frequencies change continuously. A
checkpoint of that family computes its logits only with these frequencies, so importing one needs
them (stack.export.hf reads them from `rope_parameters`). The numbers are Meta's reference
`apply_scaling` and transformers' `rope_type = "llama3"`; stack/model/reference.py writes the same
rule out per frequency in float64, and GATE-MODEL-003 holds the two to each other.
"""

from __future__ import annotations

import math

import torch

from stack.model.config import ModelConfig


def inverse_frequencies(config: ModelConfig, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The head_dim / 2 rotation frequencies f_i = θ^(-2i/D) of `config`'s RoPE, rescaled when
    `rope_type` is llama3, in `dtype` (at least fp32: `stack.model.layers.rope_angles`)."""
    half = config.head_width // 2
    plain = config.rope_theta ** (-torch.arange(half, device=device, dtype=dtype) / half)
    if config.rope_type == "default":
        return plain
    return llama3_frequencies(plain, config)


def llama3_frequencies(plain: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """`plain` frequencies stretched as Llama 3.1's: kept above the high-frequency band's edge,
    divided by `rope_factor` below the low one, and between them (1 − s)·f/factor + s·f with s
    running from 0 at the low edge to 1 at the high one."""
    original, low, high = config.rope_original_ctx, config.rope_low_freq_factor, config.rope_high_freq_factor
    factor = config.rope_factor
    wavelength = 2 * math.pi / plain
    blend = ((original / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - blend) * plain / factor + blend * plain
