"""GATE-CKPT-003 at run time: after a resume, every restored state is compared with the checkpoint.

A resume that forgets one piece (the RNG, a monitor's streak, the loss scale, the optimizer's
moments) still trains, and drifts from the uninterrupted run without a word. The falsifier tests
prove the whole resume bit-exact on CPU; this check runs on every real resume and compares, by
digest, what the trainer now holds with what the checkpoint says it should hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load_file

from contracts.evidence import canonical_sha256
from contracts.gates import Outcome, gate_require, measure
from stack.train import checkpoint as ckpt


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a set of tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def state_comparisons(
    checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]
) -> tuple[list[str], list[str]]:
    """(compared, mismatched): each live state's digest against the checkpoint's.

    `live` maps a state name to a function returning the trainer's current value. "model" and
    "optimizer" return tensor dicts, compared with the checkpoint's safetensors files (tensor by
    tensor under the file's names: tied weights are stored once); the others return JSON values
    compared with the same key of state.json.
    """
    compared, mismatched = [], []
    for name, current in live.items():
        if name in ("model", "optimizer"):
            saved = load_file(str(checkpoint.path / f"{name}.safetensors"))
            now = current()
            same = saved.keys() <= now.keys() and tensors_digest(saved) == tensors_digest(
                {key: now[key] for key in saved}
            )
        else:
            same = canonical_sha256(checkpoint.state[name]) == canonical_sha256(current())
        compared.append(name)
        if not same:
            mismatched.append(name)
    return compared, mismatched


def _outcome(checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]) -> Outcome:
    compared, mismatched = state_comparisons(checkpoint, live)
    measured = {"checkpoint": checkpoint.path.name, "compared": compared, "mismatched": mismatched}
    return measure(
        "GATE-CKPT-003", measured, step=checkpoint.step, holds="every restored state is the saved one"
    )


@gate_require("GATE-CKPT-003", _outcome)
def check_restored(checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]) -> None:
    """Refuse to go on from a resume whose restored states differ from the checkpoint's."""
