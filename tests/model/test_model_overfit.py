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
from stack.model.checks import overfit_outcome

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs. " * 100
WINDOW = 64
BATCH = 16
CONTEXT_WARMUP = 8
EVAL_EVERY = 25
MAX_STEPS = int(load_spec().threshold("GATE-MODEL-002", "overfit_max_steps"))


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


def overfits(loss: float) -> bool:
    """GATE-MODEL-002's verdict on a best loss reached within the budget, by the gate's judge.

    The one rule for the positive test and the falsifiers; switched off in a mutation run, it
    lets the planted models through.
    """
    return overfit_outcome(loss, MAX_STEPS).ok


def best_loss_within_budget(model: GPT, data: torch.Tensor, lr: float = 1e-2) -> float:
    """Train with AdamW on random windows; the lowest held-fixed-batch loss seen within the budget.

    `lr` is the gate's 1e-2 unless a falsifier stunts it.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    probe = _windows(data, torch.Generator().manual_seed(1))
    best = float("inf")
    for step in range(1, MAX_STEPS + 1):
        _, loss = model(*_windows(data, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % EVAL_EVERY == 0 or step == MAX_STEPS:
            with torch.no_grad():
                best = min(best, model(*probe)[1].item())
            if overfits(best):
                break
    return best


def _tiny_model(vocab: int) -> GPT:
    shape = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 128}
    return GPT(ModelConfig(vocab=vocab, ctx=WINDOW, **shape), seed=0)


@pytest.mark.holds("GATE-MODEL-002")
def test_tiny_model_overfits_repeated_text() -> None:
    assert len(TEXT.encode()) <= 10_000
    data, vocab = _tokens()
    assert overfits(best_loss_within_budget(_tiny_model(vocab), data))


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
    assert not overfits(best_loss_within_budget(model, data))


@pytest.mark.gate("GATE-MODEL-002")
def test_falsifier_a_stunted_learning_rate_stops_short_of_the_bound() -> None:
    """Plant a learning rate of 5e-4 for the gate's 1e-2: a model that learns, but too slowly.

    It ends the budget at a loss of about 0.16: above the bound of 0.1, and below 0.2 and 0.6, so
    a bound widened twofold (or to 0.6) calls this model overfit and turns the test red.
    """
    data, vocab = _tokens()
    loss = best_loss_within_budget(_tiny_model(vocab), data, lr=5e-4)
    assert not overfits(loss)
    assert loss < 0.2  # it did learn: the bound, not a broken model, is what it misses
