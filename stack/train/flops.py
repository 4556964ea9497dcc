"""Model FLOPs per trained token and GPU peaks: what model FLOPs utilisation (MFU) is made of.

MFU = tokens/s × FLOPs per token / the GPU's peak. FLOPs per token are counted the way the PaLM
paper's appendix and nanoGPT count them, so numbers compare with theirs: every weight matrix a
token goes through costs 2 FLOPs per weight forward and 4 backward (6 in all), and attention's
two matmuls over a context of T add 12·L·H·D_head·T (full, not halved for causal masking). The
embedding lookup is no matmul and is not counted; the lm_head is, tied or not. A
mixture-of-experts feed-forward counts the experts a token is routed to (top-k, plus the shared
one), not all of them; differential attention its second q and k and its third score matmul; a
mixture-of-depths block its router for every token and the rest for the capacity C of them, whose
attention sees C of the keys. Recomputation (activation checkpointing) is not counted: it is not model
FLOPs.
"""

from __future__ import annotations

from stack.model.config import ModelConfig

# Dense (no sparsity) bf16 tensor-core peak FLOP/s, from NVIDIA's data sheets, by a piece of the
# name torch.cuda.get_device_name() reports; the first match wins, so specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (HBM3)
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
)


def flops_per_token(config: ModelConfig) -> float:
    """Model FLOPs (forward + backward) of one trained token at context `config.ctx`."""
    d, hd = config.d_model, config.head_width
    attention = d * config.n_heads * hd * 2 + d * config.n_kv_heads * hd * 2  # q, o; k, v
    scores = 12 * config.n_heads * hd * config.ctx  # q·kᵀ and p·v, per block
    if config.diff_attn:  # a second q and k, and a second q·kᵀ map: three score matmuls, not two
        attention += d * config.n_heads * hd + d * config.n_kv_heads * hd
        scores = scores * 3 / 2
    ffn = 3 * d * config.ffn_hidden  # SwiGLU: gate, up, down
    if config.moe:
        routed = config.moe_top_k + (1 if config.moe_shared_expert else 0)
        ffn = routed * ffn + d * config.moe_experts  # the experts a token visits, and the router
    block = 6.0 * (attention + ffn) + scores
    total = 0.0
    for index in range(config.n_layers):
        if config.mod_block(index):  # a routed block computes C of the tokens, among C of the keys
            c = config.mod_capacity
            total += 6.0 * d + c * 6.0 * (attention + ffn) + c * c * scores  # + the router, every token
        else:
            total += block
    return total + 6.0 * d * config.vocab  # the lm_head


def peak_flops(device_name: str) -> float | None:
    """The bf16 dense peak of the GPU named `device_name`, or None when the table lacks it."""
    return next((peak for piece, peak in PEAK_BF16_FLOPS if piece in device_name), None)


def mfu(tokens_per_s: float, config: ModelConfig, device_name: str) -> float | None:
    """Model FLOPs utilisation of a run at `tokens_per_s` on `device_name` (None: unknown GPU)."""
    peak = peak_flops(device_name)
    return None if peak is None else tokens_per_s * flops_per_token(config) / peak
