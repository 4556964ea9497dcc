"""The GPT: parameter count against its formula, forward and loss, determinism, and the first loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.judges import judge
from contracts.model_shape import DEFAULTS, param_count, parameter_shapes, state_dict_tensors
from stack.model import GPT, ModelConfig, param_count_formula

CONFIG = ModelConfig(vocab=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128, ctx=32)


@settings(max_examples=15)
@given(
    vocab=st.integers(2, 300),
    heads_kv=st.integers(1, 3),
    group=st.integers(1, 3),
    head_half=st.integers(1, 8),
    n_layers=st.integers(1, 3),
    ffn_hidden=st.integers(1, 100),
    tie=st.booleans(),
    own_half=st.one_of(st.none(), st.integers(1, 8)),
)
def test_param_count_matches_its_formula(
    vocab: int,
    heads_kv: int,
    group: int,
    head_half: int,
    n_layers: int,
    ffn_hidden: int,
    tie: bool,
    own_half: int | None,
) -> None:
    """`own_half`: Qwen3's attention, heads of their own width (2·own_half, over a residual stream
    one wider than the heads would split) with q/k head norms."""
    heads = heads_kv * group
    qwen3 = {} if own_half is None else {"head_dim": 2 * own_half, "qk_norm": True}
    config = ModelConfig(
        vocab=vocab,
        d_model=heads * 2 * head_half + (own_half is not None),
        n_layers=n_layers,
        n_heads=heads,
        n_kv_heads=heads_kv,
        ffn_hidden=ffn_hidden,
        ctx=8,
        tie_embeddings=tie,
        **qwen3,
    )
    assert GPT(config).num_params() == param_count_formula(config)


def test_the_shared_formula_reads_the_model_configs_own_defaults() -> None:
    """contracts.model_shape counts a saved [model] table, whose options are left out while off."""
    for key, default in DEFAULTS.items():
        assert ModelConfig.model_fields[key].default == default, key
    assert param_count(CONFIG.model_dump()) == param_count_formula(CONFIG) == GPT(CONFIG).num_params()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"qkv_bias": True, "tie_embeddings": False},
        {"moe_experts": 3, "moe_shared_expert": True},
        {"diff_attn": True, "qkv_bias": True, "mod_every": 2},
    ],
    ids=["dense", "biased-untied", "experts-shared", "differential-depth-routed"],
)
def test_every_parameter_is_the_one_the_shared_shapes_name(options: dict[str, object]) -> None:
    """contracts.model_shape.parameter_shapes, from the saved [model] table alone, names each of the
    model's parameters, in the order it registers them, with its shape: the tensors the integrity
    check counts in a record, and those whose initialisation GATE-MODEL-003's record must name; and
    state_dict_tensors counts its state dict, which GATE-TRAIN-008's check start hashes."""
    config = ModelConfig(**{**CONFIG.model_dump(), **options})
    shapes = parameter_shapes(config.model_dump())
    model = GPT(config)
    assert [(name, tuple(p.shape)) for name, p in model.named_parameters()] == list(shapes.items())
    assert len(model.state_dict()) == state_dict_tensors(config.model_dump())


def test_param_count_formula_by_hand() -> None:
    # embed 97*64; per layer q,o 64*64 each, k,v 64*32 each, ffn 3*64*128, norms 2*64; final norm 64.
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    assert param_count_formula(CONFIG) == 97 * 64 + 2 * per_layer + 64
    assert param_count_formula(CONFIG.model_copy(update={"tie_embeddings": False})) == (
        param_count_formula(CONFIG) + 97 * 64
    )


def test_forward_shapes_and_loss() -> None:
    model = GPT(CONFIG, seed=0)
    idx = torch.randint(CONFIG.vocab, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, CONFIG.vocab) and loss is None
    targets = torch.randint(CONFIG.vocab, (3, 10))
    _, loss = model(idx, targets)
    assert loss is not None and loss.shape == ()
    ignored = targets.clone()
    ignored[:, 5:] = -1
    _, partial = model(idx, ignored)
    expected = torch.nn.functional.cross_entropy(logits[:, :5].flatten(0, 1), targets[:, :5].flatten())
    torch.testing.assert_close(partial, expected)


def test_tied_head_shares_the_embedding() -> None:
    tied = GPT(CONFIG)
    assert tied.lm_head.weight is tied.embed.weight
    untied = GPT(CONFIG.model_copy(update={"tie_embeddings": False}))
    assert untied.lm_head.weight is not untied.embed.weight


def test_output_projections_are_scaled_by_depth() -> None:
    config = CONFIG.model_copy(update={"n_layers": 8, "d_model": 256, "n_heads": 8, "n_kv_heads": 4})
    model = GPT(config, seed=0)
    layer = model.layers[3]
    assert layer.attn.q.weight.std().item() == pytest.approx(config.init_std, rel=0.05)
    residual_std = config.init_std / math.sqrt(2 * config.n_layers)
    assert layer.attn.o.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert layer.ffn.down.weight.std().item() == pytest.approx(residual_std, rel=0.05)


def test_bad_inputs_are_refused() -> None:
    model = GPT(CONFIG)
    with pytest.raises(BadInput, match="exceeds ctx 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(BadInput, match="LongTensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(BadInput, match="targets"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_same_seed_gives_bitwise_same_weights_and_forward() -> None:
    idx = torch.randint(CONFIG.vocab, (2, 16), generator=torch.Generator().manual_seed(5))
    a, b = GPT(CONFIG, seed=7), GPT(CONFIG, seed=7)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert torch.equal(a(idx)[0], b(idx)[0])
    torch.manual_seed(3)
    c = GPT(CONFIG)
    torch.manual_seed(3)
    assert torch.equal(c(idx)[0], GPT(CONFIG)(idx)[0])
    assert not torch.equal(a.embed.weight, GPT(CONFIG, seed=8).embed.weight)


def random_token_loss(model: GPT, seed: int = 0) -> float:
    """The model's mean loss on uniform random tokens: a fresh model should be near ln(vocab) there."""
    tokens = torch.randint(
        model.config.vocab, (4, model.config.ctx + 1), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
    assert loss is not None
    return loss.item()


def near_ln_vocab(loss: float, vocab: int) -> bool:
    """GATE-TRAIN-004's verdict on a first loss, from the gate's own judge (the model half of the gate)."""
    return judge("GATE-TRAIN-004", {"loss": loss, "vocab": vocab}) == []


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("d_model", [64, 256])
def test_first_loss_is_near_ln_vocab(tie: bool, d_model: int) -> None:
    config = CONFIG.model_copy(update={"tie_embeddings": tie, "d_model": d_model, "vocab": 1000})
    assert near_ln_vocab(random_token_loss(GPT(config, seed=0)), config.vocab)


@pytest.mark.gate("GATE-TRAIN-004")
def test_falsifier_bad_init_fails_the_first_loss_check() -> None:
    """Plant the origin's bug: weights drawn with std 1.0 instead of 0.02."""
    loss = random_token_loss(GPT(CONFIG.model_copy(update={"init_std": 1.0}), seed=0))
    assert not near_ln_vocab(loss, CONFIG.vocab)


@pytest.mark.gate("GATE-TRAIN-004")
def test_falsifier_unscaled_embedding_fails_the_first_loss_check() -> None:
    model = GPT(CONFIG, seed=0)
    torch.nn.init.normal_(model.embed.weight, std=1.0)  # a tied head now reads logits of std ~ sqrt(d)
    assert not near_ln_vocab(random_token_loss(model), CONFIG.vocab)
