"""Named starting points for `stack train --preset NAME`; a config file and `--set` refine them.

The sizes are chosen for the machines they run on: `smoke` for a test that must finish in
seconds, `tiny` for a CPU check, `demo` for `make demo`'s few minutes on two CPU cores, `small`
for a quick look on a single GPU, and the two sizes people train on one GPU for hours or days:
`base` (about 30 M parameters besides the embedding) and `gpt2` (GPT-2 small's shape: 12
layers × 768, ctx 1024, about 124 M parameters with a 50 k vocabulary).

No preset names a vocabulary: it comes from the data's tokenizer (stack.train.config.resolve), so
a preset's parameter count depends on it. docs/training.md lists each preset's count at the
vocabularies people use, computed by `param_count_formula`, and its estimated memory
(`estimated_memory_bytes`). The batch and accumulation defaults of `base` and `gpt2` are sized
for one 80 GB GPU in bf16 by that estimate; `stack train` records the peak it actually allocated
on CUDA (metrics.peak_memory_bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # an annotation only: `stack train --help` lists the presets without pydantic
    from stack.model.config import ModelConfig

# What the memory estimate counts, per parameter, per token and per logit (bytes):
# fp32 weights and gradients and AdamW's two fp32 moments, held for the whole run;
STATE_BYTES_PER_PARAM = 16
# activations kept for the backward per token, per block and per unit of d_model under bf16
# autocast with a flash attention kernel (no N×N scores): about 34 for a GPT-2 block in 16-bit
# (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
# without the attention-score term), rounded up to 40 for SwiGLU's three projections and the
# fp32 residual stream;
ACTIVATION_BYTES = 40
# and the loss's peak per logit: the bf16 logits, their fp32 copy for the cross-entropy and its
# fp32 gradient.
LOGIT_BYTES = 10

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 64, "ctx": 32},
        "train": {"steps": 5, "batch_size": 4, "warmup_steps": 2, "log_every": 1},
        "eval": {"every": 5},
        "ckpt": {"every": 5},
        "monitor": {"sample_every": 5, "tokens": 16},
    },
    "tiny": {
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 176, "ctx": 64},
        "train": {"steps": 200, "batch_size": 8, "warmup_steps": 20},
        "eval": {"every": 50},
        "ckpt": {"every": 100},
        "monitor": {"sample_every": 50},
    },
    "demo": {
        "model": {
            "d_model": 128,
            "n_layers": 4,
            "n_heads": 4,
            "n_kv_heads": 2,
            "ffn_hidden": 352,
            "ctx": 128,
        },
        "train": {"steps": 1200, "batch_size": 32, "warmup_steps": 60, "lr": 2e-3, "min_lr": 2e-4},
        "eval": {"every": 200},
        "ckpt": {"every": 400},
        "monitor": {"sample_every": 200},
    },
    "small": {
        "model": {
            "d_model": 384,
            "n_layers": 6,
            "n_heads": 6,
            "n_kv_heads": 2,
            "ffn_hidden": 1024,
            "ctx": 256,
        },
        "train": {"steps": 5000, "batch_size": 32, "warmup_steps": 200, "lr": 1e-3, "min_lr": 1e-4},
        "eval": {"every": 250},
        "ckpt": {"every": 500},
        "monitor": {"sample_every": 250},
    },
    # 10 × 512, ctx 1024: 29.5 M parameters besides the embedding. 32 × 2 sequences of 1024 tokens
    # per step (65 k tokens); 10 000 steps are 655 M tokens, about Chinchilla's 20 per parameter.
    "base": {
        "model": {
            "d_model": 512,
            "n_layers": 10,
            "n_heads": 8,
            "n_kv_heads": 4,
            "ffn_hidden": 1408,
            "ctx": 1024,
        },
        "train": {
            "steps": 10000,
            "batch_size": 32,
            "grad_accum": 2,
            "precision": "bf16",
            "warmup_steps": 500,
            "lr": 1e-3,
            "min_lr": 1e-4,
        },
        "eval": {"every": 500},
        "ckpt": {"every": 1000},
        "monitor": {"sample_every": 500},
    },
    # GPT-2 small's shape (12 × 768, 12 heads, ctx 1024) with this stack's blocks (RMSNorm, RoPE,
    # SwiGLU at 2048, whose three matrices hold as many weights as GPT-2's 4 × 768 MLP): 85 M
    # parameters besides the embedding. 16 × 8 sequences per step (131 k tokens); 20 000 steps are
    # 2.6 B tokens, about 20 per parameter.
    "gpt2": {
        "model": {
            "d_model": 768,
            "n_layers": 12,
            "n_heads": 12,
            "n_kv_heads": 12,
            "ffn_hidden": 2048,
            "ctx": 1024,
        },
        "train": {
            "steps": 20000,
            "batch_size": 16,
            "grad_accum": 8,
            "precision": "bf16",
            "warmup_steps": 700,
            "lr": 6e-4,
            "min_lr": 6e-5,
        },
        "eval": {"every": 500},
        "ckpt": {"every": 1000},
        "monitor": {"sample_every": 1000},
    },
}


def estimated_memory_bytes(model: ModelConfig, batch_size: int, seq_len: int, n_params: int) -> int:
    """GPU memory a training step of `batch_size` sequences of `seq_len` tokens needs, estimated.

    The sum of three terms (the constants above say what each counts): the training state of
    every parameter, the activations every block keeps for the backward, and the loss's logits.
    It leaves out the CUDA context, the allocator's fragmentation and the compiler's workspaces,
    so a GPU should have room to spare; compare metrics.peak_memory_bytes of a real run.
    """
    tokens = batch_size * seq_len
    state = STATE_BYTES_PER_PARAM * n_params
    activations = ACTIVATION_BYTES * tokens * model.n_layers * model.d_model
    logits = LOGIT_BYTES * tokens * model.vocab
    return state + activations + logits
