"""Named starting points for `stack train --preset NAME`; a config file and `--set` refine them.

The sizes are chosen for the machines they run on: `smoke` for a test that must finish in
seconds, `tiny` for a CPU check, `demo` for `make demo`'s few minutes on two CPU cores, `small`
for a single GPU.
"""

from __future__ import annotations

from typing import Any

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
}
