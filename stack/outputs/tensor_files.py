"""Writing safetensors files with the permissions every other file of an output gets.

safetensors writes its files readable by their owner alone (mode 0600), while the stack's JSON, TOML
and tokenizer files are written as the user's umask allows (0644 under the usual 022): a colleague
could then read a shared run's or export's record but not its weights without a chmod. Every
weights file the stack writes goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model


def process_umask() -> int:
    """The process's umask (read by setting it and setting it back: the only way to read it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def ordinary_permissions(path: Path) -> None:
    """Give `path` the mode a newly created file gets under the process's umask (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~process_umask())


def save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, then ordinary permissions."""
    save_file(tensors, str(path), metadata=metadata)
    ordinary_permissions(Path(path))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """`safetensors.torch.save_model` (shared tensors such as a tied embedding stored once), then
    ordinary permissions."""
    save_model(model, str(path))
    ordinary_permissions(Path(path))
