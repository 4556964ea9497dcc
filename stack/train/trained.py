"""A trained model back from disk: `RUN_DIR` or a checkpoint directory → model, config, tokenizer.

Used by every command that reads a checkpoint (sample, eval, inspect, trace, export). The
tokenizer travels inside the checkpoint's state, so a checkpoint copied elsewhere still decodes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from stack.data.tokenizer import BpeTokenizer, ByteTokenizer, Tokenizer
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig, resolve


@dataclass
class Trained:
    model: GPT
    config: RunConfig
    checkpoint: ckpt.Checkpoint
    tokenizer: Tokenizer


def tokenizer_state(tokenizer: Tokenizer) -> dict[str, Any]:
    """The tokenizer as JSON-safe data for state.json."""
    text = tokenizer.to_json() if isinstance(tokenizer, BpeTokenizer) else None
    return {
        "name": tokenizer.name,
        "sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "json": text,
    }


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer saved by `tokenizer_state`, refusing one whose identity changed."""
    if state["name"] == "byte":
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        from tokenizers import Tokenizer as Backend

        tokenizer = BpeTokenizer(Backend.from_str(state["json"]))
    if tokenizer.sha256 != state["sha256"]:
        raise BadInput(f"the checkpoint's {state['name']} tokenizer does not match its recorded sha256")
    return tokenizer


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's newest valid checkpoint."""
    path = Path(path)
    if (path / ckpt.MANIFEST).is_file():
        return path
    if (path / ckpt.CKPT_DIR).is_dir():
        latest, notes = ckpt.latest_valid(path)
        for note in notes:
            print(f"stack: {note}", file=sys.stderr)
        if latest is None:
            raise BadInput(f"{path} has no valid checkpoint")
        return latest
    raise BadInput(f"{path} is neither a run directory nor a checkpoint directory (no {ckpt.MANIFEST})")


def load_trained(path: Path, device: str | torch.device = "cpu", attention: str | None = None) -> Trained:
    """Verify and load a checkpoint (GATE-CKPT-002) with its config and tokenizer."""
    checkpoint = ckpt.load_checkpoint(resolve_checkpoint(path))
    config = resolve(None, None, [], base=checkpoint.state["config"])
    model_config = (
        config.model if attention is None else config.model.model_copy(update={"attention": attention})
    )
    model = GPT(model_config)
    ckpt.load_weights(checkpoint, model)
    model.to(device).eval()
    return Trained(model, config, checkpoint, tokenizer_from_state(checkpoint.state["tokenizer"]))
