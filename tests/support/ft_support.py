"""Shared set-up for the fine-tuning evaluation tests: tiny models saved as runs, and texts a model
is known to continue verbatim (its own greedy continuations), which plant memorisation without
training anything."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch

from stack.eval.memorization import GREEDY, continue_greedily
from stack.model.gpt import GPT
from stack.model.sampling_checks import DrawTally
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import WORDS

CTX = 64  # room for an 8-token prefix and a 32-token continuation without sliding the window


def model(seed: int) -> GPT:
    """A tiny random byte-level model with a 64-token context."""
    return tiny_model(seed, ctx=CTX)


def saved(root: Path, seed: int) -> Path:
    """`model(seed)` saved as a run directory under root."""
    run = root / f"model{seed}"
    save_run(run, model(seed))
    return run


def own_continuations(
    seed: int, prefix: int, length: int, wanted: int, lead: tuple[int, ...] = ()
) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs, `prefix` ASCII bytes each, whose greedy continuation by
    `model(seed)` (after the `lead` ids, then the prompt) is `length` ASCII bytes: text the model
    reproduces by construction."""
    prompts = [f"{a} {b}".ljust(prefix, ".")[:prefix] for a, b in itertools.product(WORDS[:8], WORDS[:8])]
    ids = torch.tensor([[*lead, *p.encode()] for p in prompts])
    continuations = continue_greedily(model(seed), ids, length, len(prompts), DrawTally(GREEDY))
    # ASCII only: a byte-level text that encodes back to exactly these ids
    found = [
        (p, bytes(c).decode("ascii")) for p, c in zip(prompts, continuations, strict=True) if max(c) < 128
    ]
    assert len(found) >= wanted, f"model {seed} continues only {len(found)} prompts in ASCII"
    return found[:wanted]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """One JSON object per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def filler(n: int, length: int) -> list[str]:
    """n word texts of at least `length` characters that no random model continues verbatim."""
    texts = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(length)]
        texts.append(" ".join(words)[: length + 8])
    return texts
