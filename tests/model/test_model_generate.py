"""Generation: the KV cache reproduces the full forward; sampling is reproducible and filters."""

from __future__ import annotations

import pytest
import torch

from contracts.errors import BadInput
from contracts.spec import load_spec
from stack.model import GPT, ModelConfig
from stack.model.attention import PATHS
from stack.model.generate import generate_long, keep_top_k, keep_top_p, penalise_repeats
from stack.model.kv_cache import KVCache

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

CONFIG = ModelConfig(vocab=61, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, ctx=40)


def _model(path: str = "sdpa") -> GPT:
    # A larger init than the default so that the logits, and any cache bug, are far from uniform.
    return GPT(CONFIG.model_copy(update={"attention": path, "init_std": 0.2}), seed=0)


@pytest.mark.parametrize("path", PATHS)
def test_cached_decoding_reproduces_the_full_forward(path: str) -> None:
    model = _model(path)
    idx = torch.randint(CONFIG.vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    full, _ = model(idx)
    cache = KVCache(CONFIG, 2, idx.device, torch.float32)
    prefill = model(idx[:, :7], cache=cache)[0]
    steps = [prefill] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 12)]
    assert cache.length == 12
    spec = load_spec()
    torch.testing.assert_close(
        torch.cat(steps, dim=1),
        full,
        atol=spec.threshold("GATE-MODEL-001", "path_atol"),
        rtol=spec.threshold("GATE-MODEL-001", "path_rtol"),
    )


def test_greedy_generation_matches_recomputing_without_cache() -> None:
    model = _model()
    prompt = torch.randint(CONFIG.vocab, (2, 5), generator=torch.Generator().manual_seed(1))
    out = model.generate(prompt, 10, temperature=0)
    expected = prompt
    for _ in range(10):
        next_token = model(expected)[0][:, -1].argmax(-1, keepdim=True)
        expected = torch.cat((expected, next_token), dim=1)
    assert torch.equal(out, expected)
    assert torch.equal(model.generate(prompt, 10, top_k=1), expected)


def test_sampling_is_reproducible_for_a_fixed_generator() -> None:
    model = _model()
    prompt = torch.zeros(3, 2, dtype=torch.long)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 20, top_k=20, top_p=0.95, repetition_penalty=1.3, generator=generator)

    first = draw(0)
    assert first.shape == (3, 22) and torch.equal(first[:, :2], prompt)
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    assert torch.isinf(keep_top_k(logits, 2)).tolist() == [[True, False, True, False]]
    assert torch.equal(keep_top_k(logits, 10), logits)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.15, 0.25]]))
    kept = ~torch.isinf(keep_top_p(logits, 0.7))
    assert kept.tolist() == [[False, True, False, True]]  # 0.5 + 0.25 reaches 0.7
    assert (~torch.isinf(keep_top_p(logits, 0.01))).sum() == 1  # the most likely always stays


def test_repetition_penalty_makes_seen_tokens_less_likely() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    penalised = penalise_repeats(logits, torch.tensor([[0, 1]]), 2.0)
    assert penalised.tolist() == [[1.0, -4.0, 1.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 40}, "exceeds ctx 40"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_bad_sampling_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    arguments: dict[str, float] = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(BadInput, match=message):
        _model().generate(torch.zeros(1, 2, dtype=torch.long), **arguments)


def test_generation_past_the_context_slides_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    longest = []
    forward = GPT.forward

    def watched(
        self: GPT, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache: KVCache | None = None
    ):
        longest.append((cache.length if cache is not None else 0) + idx.shape[1])
        return forward(self, idx, targets, cache=cache)

    monkeypatch.setattr(GPT, "forward", watched)
    prompt = torch.tensor([[1, 2, 3]])
    out = generate_long(model, prompt, 3 * CONFIG.ctx, temperature=0.0)
    assert out.shape == (1, 3 + 3 * CONFIG.ctx) and out[0, :3].tolist() == [1, 2, 3]
    assert max(longest) <= CONFIG.ctx
    again = generate_long(model, prompt, 3 * CONFIG.ctx, temperature=0.0)
    assert torch.equal(out, again)
