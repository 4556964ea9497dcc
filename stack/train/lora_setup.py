"""A training run with `[lora]`: adapters applied before the optimizer exists, judged when the run ends.

At set-up (`attach`, called by the Trainer right after it builds the model, so the optimizer,
DDP and torch.compile all see the adapted model): the adapters are applied with the run's seed,
every base parameter is frozen, and GATE-LORA-001 judges that the adapted model computes its
base's logits exactly. `attach` returns the selection (the matrices adapted, and every other one
with the reason it carries none), which `stack train` prints and records. A base loaded
afterwards (`--init-from`) goes in through `stack.model.lora.loading_base`, which records it as
the base the adapters belong to.

At the end (`finish`, called by `stack train` after the last checkpoint): GATE-LORA-004 judges
that the base did not move and every B trained, and the adapter is written beside the
checkpoints as RUN_DIR/adapter/adapter.safetensors + adapter.json (stack.model.adapters), from
the final weights. Checkpoints hold base and adapters together, so a resume needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contracts.errors import BadInput
from stack.model.adapters import save_adapter
from stack.model.gpt import GPT
from stack.model.lora import apply_lora, base_sha256, has_lora, lora_selection
from stack.model.lora_checks import check_identity, check_trained, identity_measured, trained_measured
from stack.surgery.targets import Selection
from stack.train.config import LoraSection, RunConfig

ADAPTER_DIR = "adapter"


def attach(model: GPT, config: RunConfig, sharded: bool) -> Selection | None:
    """Apply the run's adapters to `model` under GATE-LORA-001; None when the config has no [lora]."""
    section: LoraSection | None = config.lora
    if section is None:
        return None
    if sharded:
        raise BadInput("[lora] does not run under train.parallel=fsdp; use ddp (the default)")
    selection = lora_selection(model, section.targets)
    generator = torch.Generator().manual_seed(config.train.seed)
    apply_lora(
        model, section.targets, section.r, section.alpha, section.dropout, section.rslora, generator=generator
    )
    check_identity(identity_measured(model))
    return selection


def finish(model: GPT, run_dir: Path, config: RunConfig) -> Path | None:
    """Judge the trained adapters (GATE-LORA-004) and write RUN_DIR/adapter; None without [lora]."""
    if config.lora is None or not has_lora(model):
        return None
    check_trained(trained_measured(model))
    return save_adapter(model, Path(run_dir) / ADAPTER_DIR, base_sha256(model), config.lora.targets)
