"""GATE-MODEL-002: a tiny model memorises a small repeated text within the step budget.

The text repeats two pangrams, so most characters have several possible successors ('o' is
followed by w, x, v, g, ...): getting below the bound needs attention over the context, not a
bigram table. The first CONTEXT_WARMUP targets of each window are ignored, because with fewer
characters of context the next one is ambiguous even for a perfect memoriser.
"""

from __future__ import annotations

import pytest
import torch

from contracts.spec import load_spec
from stack.model import GPT, ModelConfig

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs. " * 100
WINDOW = 64
BATCH = 16
CONTEXT_WARMUP = 8
EVAL_EVERY = 25


def _tokens() -> tuple[torch.Tensor, int]:
    chars = sorted(set(TEXT))
    lookup = {c: i for i, c in enumerate(chars)}
    return torch.tensor([lookup[c] for c in TEXT]), len(chars)


def _windows(data: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - WINDOW - 1, (BATCH,), generator=generator).tolist()
    idx = torch.stack([data[s : s + WINDOW] for s in starts])
    targets = torch.stack([data[s + 1 : s + WINDOW + 1] for s in starts])
    targets[:, :CONTEXT_WARMUP] = -1
    return idx, targets


def best_loss_within_budget(model: GPT, data: torch.Tensor) -> float:
    """Train with AdamW on random windows; the lowest held-fixed-batch loss seen within the budget."""
    spec = load_spec()
    max_loss = spec.threshold("GATE-MODEL-002", "overfit_max_loss")
    max_steps = int(spec.threshold("GATE-MODEL-002", "overfit_max_steps"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    probe = _windows(data, torch.Generator().manual_seed(1))
    best = float("inf")
    for step in range(1, max_steps + 1):
        _, loss = model(*_windows(data, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % EVAL_EVERY == 0 or step == max_steps:
            with torch.no_grad():
                best = min(best, model(*probe)[1].item())
            if best < max_loss:
                break
    return best


def _tiny_model(vocab: int) -> GPT:
    shape = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 128}
    return GPT(ModelConfig(vocab=vocab, ctx=WINDOW, **shape), seed=0)


@pytest.mark.gate("GATE-MODEL-002")
def test_tiny_model_overfits_repeated_text() -> None:
    assert len(TEXT.encode()) <= 10_000
    data, vocab = _tokens()
    loss = best_loss_within_budget(_tiny_model(vocab), data)
    assert loss < load_spec().threshold("GATE-MODEL-002", "overfit_max_loss")


@pytest.mark.gate("GATE-MODEL-002")
def test_falsifier_detached_graph_cannot_overfit() -> None:
    """Plant a detached graph: the blocks' output is cut from autograd before the final norm.

    Only final_norm and the (tied) head still learn, a readout of near-embedding features:
    in effect a bigram model, which this text does not allow below the bound.
    """
    data, vocab = _tokens()
    model = _tiny_model(vocab)
    final_norm = model.final_norm.forward
    model.final_norm.forward = lambda x: final_norm(x.detach())  # type: ignore[method-assign]
    loss = best_loss_within_budget(model, data)
    assert loss > load_spec().threshold("GATE-MODEL-002", "overfit_max_loss")
