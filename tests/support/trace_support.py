"""Shared set-up for the trace tests: tiny random models, planted bugs, checkpoints on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from stack.data.tokenizer import ByteTokenizer, Tokenizer
from stack.data.tokenizer_record import tokenizer_state
from stack.model import GPT, ModelConfig
from stack.trace import tracer as tracer_module
from stack.trace.hooks import SiteHooks
from stack.train.checkpoint import save_checkpoint
from stack.train.config import RunConfig, TrainSection

# head_dim 16: the smallest the Triton kernel takes. Byte vocabulary, so a checkpoint can decode.
CONFIG = ModelConfig(vocab=257, d_model=32, n_layers=3, n_heads=2, n_kv_heads=1, ffn_hidden=48, ctx=32)


def tiny_model(seed: int = 0, **changes: object) -> GPT:
    """A small random model in eval mode; init_std 0.2 keeps every site well away from zero."""
    config = CONFIG.model_copy(update={"init_std": 0.2, **changes})
    return GPT(config, seed=seed).eval()


def tokens(length: int = 12, seed: int = 0) -> torch.Tensor:
    """(1, length) random token ids."""
    return torch.randint(CONFIG.vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def save_run(
    run_dir: Path,
    model: GPT,
    step: int = 1,
    tokenizer: Tokenizer | None = None,
    extra: dict[str, Any] | None = None,
    config: RunConfig | None = None,
) -> Path:
    """Write `model` as a checkpoint of a run at run_dir, as the training loop would; returns its path.

    Its tokenizer is the byte tokenizer unless `tokenizer` is given (of at most the model's vocab);
    `extra` adds keys to its state (a chat template, say); `config` replaces the run's configuration
    (one with a LoRA section, say); optimizer state is kept for the trainable parameters."""
    config = config or RunConfig(model=model.config, train=TrainSection(steps=step))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable or list(model.parameters()))  # a frozen model: all of it
    state = {
        "epoch": 0,
        "scheduler": {"kind": "warmup_cosine", "step": step},
        "scaler": None,
        "rng": {},
        "reader": {},
        "monitors": {},
        "config": config.as_dict(),
        "spec_version": "1.0.0",
        "heldout_loss": None,
        "tokenizer": tokenizer_state(tokenizer or ByteTokenizer()),
        **(extra or {}),
    }
    return save_checkpoint(run_dir, step, model, optimizer, state)


def seen_as(monkeypatch: pytest.MonkeyPatch, site: str, plant: Any) -> None:
    """The hook of `site` shows the trace plant(output) while the forward goes on with the output."""
    output_hook = tracer_module.SiteHooks._output

    def planted(self: Any, module: torch.nn.Module, name: str) -> None:
        if name != site:
            return output_hook(self, module, name)

        def hook(_module: torch.nn.Module, _args: Any, output: torch.Tensor) -> None:
            self.visit(name, plant(output))

        self._handles.append(module.register_forward_hook(hook))

    monkeypatch.setattr(tracer_module.SiteHooks, "_output", planted)


def swap_sites(monkeypatch: pytest.MonkeyPatch, swap: dict[str, str]) -> None:
    """Planted: the hook table registers the output of each module whose site kind `swap` names
    under its partner's name (`{"q": "k", "k": "q"}`: attn.k's output as `q`, attn.q's as `k`)."""
    output_hook = SiteHooks._output

    def swapped(self: SiteHooks, module: torch.nn.Module, name: str) -> None:
        layer, _, kind = name.rpartition(".")
        output_hook(self, module, f"{layer}.{swap.get(kind, kind)}" if layer else name)

    monkeypatch.setattr(SiteHooks, "_output", swapped)
