"""A configuration that cannot fit in the device's memory is refused before anything is allocated.

A mistyped `--set model.ctx=100000000` must end in one line that shows the typo, not as an
internal error with a traceback from whatever allocates first (a start-up check's KV cache sized
by that context asks for 25.6 GB at once). So the start-up checks size what they allocate by
their probes, and before any of it the run's training step is estimated
(stack.train.presets.estimated_memory_bytes: the training state of every parameter, the
activations every block keeps, the loss's logits) against the device's memory: a step that cannot
fit even there is refused in one line that names the settings its largest term grows with, and
their values, so the typo shows. The estimate leaves things out (the CUDA context, fragmentation,
attention scores off the flash path), so it refuses only what cannot fit; a run it lets through
may still run out, which the CLI reports in one line too (stack.cli.describe).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from contracts.errors import BadInput
from stack.model.gpt import param_count_formula
from stack.train.config import RunConfig, training_window
from stack.train.presets import ACTIVATION_BYTES, LOGIT_BYTES, STATE_BYTES_PER_PARAM, estimated_memory_bytes

# The memory limit of this process's cgroup (v2), where the machine's RAM is not all it may use.
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def device_memory_bytes(device: torch.device) -> int:
    """All the memory a training step on `device` could have: the GPU's total, or the machine's
    physical memory (its cgroup's limit, when lower)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _gigabytes(count: int) -> str:
    return f"{count / 1e9:,.1f} GB"


def check_fits(config: RunConfig, device: torch.device) -> None:
    """Refuse, before the model is built, a configuration whose training step's estimated memory is
    more than `device` has: one line naming the settings the largest term grows with."""
    model, batch, window = config.model, config.train.batch_size, training_window(config)
    parameters = param_count_formula(model)
    needed = estimated_memory_bytes(model, batch, window, parameters)
    available = device_memory_bytes(device)
    if needed <= available:
        return
    tokens = batch * window
    # the setting the window is: train.seq_len where set, else the context (which a pretraining
    # window, the only one train.seq_len sets, may be shorter than)
    length = f"train.seq_len={window}" if config.train.seq_len else f"model.ctx={model.ctx}"
    if config.train.seq_len is None and config.train.task is None:
        length += " (or a shorter train.seq_len)"
    terms = {
        f"the training state of {parameters:,} parameters ({STATE_BYTES_PER_PARAM} bytes each)": (
            STATE_BYTES_PER_PARAM * parameters,
            f"model.d_model={model.d_model}, model.n_layers={model.n_layers}, "
            f"model.ffn_hidden={model.ffn_hidden} or the vocabulary ({model.vocab}, the data's tokenizer's)",
        ),
        f"the activations of {tokens:,} tokens through {model.n_layers} blocks": (
            ACTIVATION_BYTES * tokens * model.n_layers * model.d_model,
            f"{length}, train.batch_size={batch} (train.grad_accum keeps the tokens per "
            f"step), model.n_layers={model.n_layers} or model.d_model={model.d_model}",
        ),
        f"the logits of {tokens:,} tokens over a vocabulary of {model.vocab}": (
            LOGIT_BYTES * tokens * model.vocab,
            f"{length} or train.batch_size={batch} (train.grad_accum keeps the tokens per step)",
        ),
    }
    largest = max(terms, key=lambda name: terms[name][0])
    holder = "the GPU" if device.type == "cuda" else "this machine"
    size, settings = terms[largest]
    raise BadInput(
        f"this configuration needs about {_gigabytes(needed)} for a training step, most of it "
        f"{_gigabytes(size)} for {largest}, and {holder} has {_gigabytes(available)} in all; "
        f"lower {settings}"
    )
