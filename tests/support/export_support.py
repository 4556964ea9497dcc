"""Shared set-up for the export tests (no tests here): tiny checkpoints written the way training writes them.

A randomly initialised model has nearly flat logits, on which int8 rounding flips the argmax
by chance; `fitted=True` first fits the model to the built-in sample text for a few dozen
steps, so its next-token predictions are confident, as a trained model's are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from stack.data.tokenizer import ByteTokenizer, Tokenizer
from stack.data.tokenizer_record import tokenizer_state
from stack.export import runtimes
from stack.export.importer import fresh_state
from stack.export.sample import BUILTIN_TEXT
from stack.model import lora
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train.config import LoraSection, RunConfig, TrainSection, resolve
from stack.train.loop import build_optimizer
from tests.support.trace_support import save_run, tiny_model

SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 64, "ctx": 32}


def run_config(tokenizer: Tokenizer, **model: Any) -> RunConfig:
    """A run config for a tiny model over `tokenizer` (SMALL, updated by `model`)."""
    base = {"model": {**SMALL, **model}, "train": {"steps": 1, "lr": 1e-2, "warmup_steps": 0}}
    return resolve(None, None, [], vocab=tokenizer.vocab_size, base=base)


def fit(model: GPT, tokenizer: Tokenizer, steps: int) -> None:
    """A few full-batch AdamW steps on the built-in text: enough for confident next-token guesses."""
    ctx = model.config.ctx
    ids = torch.tensor(tokenizer.encode(BUILTIN_TEXT))
    count = (len(ids) - 1) // ctx
    inputs = ids[: count * ctx].view(count, ctx)
    targets = ids[1 : count * ctx + 1].view(count, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    # One thread: a model this small gains nothing from two, and a second thread spinning on a
    # core another process holds made these steps a hundred times slower on a busy machine.
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(steps):
            _, loss = model(inputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def make_checkpoint(
    root: Path, tokenizer: Tokenizer | None = None, fitted: bool = False, seed: int = 0, **model: Any
) -> Path:
    """A verified checkpoint directory of a tiny model under root/run/checkpoints/."""
    tokenizer = tokenizer or ByteTokenizer()
    config = run_config(tokenizer, **model)
    torch.manual_seed(seed)
    net = GPT(config.model, seed=seed)
    if fitted:
        fit(net, tokenizer, steps=60)
    optimizer = build_optimizer(net, config, torch.device("cpu"))
    state = fresh_state(config, tokenizer_state(tokenizer), {"made_by": "tests"})
    return ckpt.save_checkpoint(Path(root) / "run", 0, net, optimizer, state)


TARGETS = "q_proj,v_proj,o_proj,down_proj"  # the HF names, as a peft user writes them


def save_lora_run(run_dir: Path, section: LoraSection, seed: int = 0) -> GPT:
    """A run whose checkpoint holds a base (`tiny_model(seed)`) and trained adapters of `section`."""
    model = tiny_model(seed)
    lora.apply_lora(model, section.targets, section.r, section.alpha, rslora=section.rslora)
    trained_adapters(model)
    save_run(run_dir, model, config=RunConfig(model=model.config, train=TrainSection(steps=1), lora=section))
    return model


def plant_shift(monkeypatch: pytest.MonkeyPatch, name: str, amount: float) -> None:
    """The runtime `runtimes.<name>` (onnx_logits, logits_of, peft_logits) returning one logit moved."""
    real: Callable[..., Any] = getattr(runtimes, name)

    def moved(*args: Any) -> Any:
        got = real(*args)
        return (shifted(got[0], amount), *got[1:]) if isinstance(got, tuple) else shifted(got, amount)

    monkeypatch.setattr(runtimes, name, moved)


def shifted(logits: torch.Tensor, amount: float) -> torch.Tensor:
    """`logits` with one logit moved by `amount`: a runtime off there alone."""
    moved = logits.clone()
    moved[0, 0, 0] += amount
    return moved


def trained_adapters(model: GPT, seed: int = 1) -> None:
    """Give every B the small non-zero values a few training steps would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, wrapper in lora.adapters(model):
            wrapper.lora_B.copy_(torch.randn(wrapper.lora_B.shape, generator=generator) * 0.05)
