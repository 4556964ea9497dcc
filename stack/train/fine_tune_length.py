"""What a fine-tune started without a length is told: the steps one pass over its data takes.

A run started from a model (`stack sft`, `stack train --init-from`) takes its shape from that
model, so no preset has to be named, and then nothing names how long it trains: train.steps has no
default, because the length is the user's call. Fine-tuning recipes count it in passes over the
examples (Hugging Face's Trainer and TRL default to three), which a user cannot turn into steps
without the split's size, the pack length and the batch. So the refusal does that arithmetic for
them, at the run's own batch, and names the flag.
"""

from __future__ import annotations

import math
from pathlib import Path

from contracts.errors import BadInput
from stack.data.manifest import load_manifest
from stack.train.config import RunConfig, parse_sets, read_toml, training_window
from stack.train.presets import PRESETS
from stack.train.tasks import objective_for

# The passes the refusal prices besides one: the usual default of fine-tuning recipes.
SUGGESTED_PASSES = 3


def steps_given(preset: str | None, config_file: Path | None, sets: list[str]) -> bool:
    """Whether the preset (each has a length; an unknown one is left to `resolve` to refuse), the
    file or a `--set` item gives train.steps."""
    if preset is not None:
        return preset not in PRESETS or "steps" in PRESETS[preset].get("train", {})
    tables = [parse_sets(sets), read_toml(config_file) if config_file is not None else {}]
    return any(isinstance(table.get("train"), dict) and "steps" in table["train"] for table in tables)


def no_length(config: RunConfig, data_dir: Path, world: int) -> BadInput:
    """The one line a run started from a model gets when nothing gives train.steps (`config` is
    its settings resolved with any length): one pass over DATA_DIR's train split in steps of the
    run's batch on `world` processes, and the flag that sets the length."""
    train = config.train
    window = objective_for(train.task).window(data_dir, training_window(config))
    tokens = load_manifest(data_dir).totals["train"].tokens
    one_pass = max(1, math.ceil(tokens / (train.batch_size * train.grad_accum * window * world)))
    step = f"{train.batch_size} × {window} tokens"
    step += f" × {train.grad_accum} micro-batches" if train.grad_accum > 1 else ""
    step += f" × {world} processes" if world > 1 else ""
    return BadInput(
        f"train.steps is not set, and a run started from a model takes no length from it: one pass "
        f"over the {tokens:,} training tokens in {data_dir} is {one_pass:,} step(s) of {step}; give "
        f"--set train.steps=N (--set train.steps={SUGGESTED_PASSES * one_pass} makes {SUGGESTED_PASSES} "
        "passes), a --config FILE that sets it, or a --preset"
    )
