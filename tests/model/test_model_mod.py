"""Mixture of depths: the routed block, its gates (GATE-ARCH-008 … 011), and a model with both options.

The falsifiers plant each bug in the real code path: a strict comparison against the k-th score,
a skip path through a cast, a router weight that is detached, inference that routes by top-k over
the whole sequence. The workflow tests train a model with differential attention and mixture of
depths through the CLI, use it with every tool, and resume it bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_model, save_model

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.cli import main
from stack.model import depth_router as depth_router_module
from stack.model.config import ModelConfig
from stack.model.depth_router import DepthRoutedBlock, capacity_tokens, split_score
from stack.model.gpt import GPT, param_count_formula
from stack.model.kv_cache import KVCache
from stack.model.layers import rope_angles
from stack.model.mod_checks import (
    capacity_lengths,
    check_capacity,
    check_depth_routing,
    check_inference_capacity,
    check_mod_causal,
    check_router_gradient,
    check_skipped_identical,
    inference_routed,
    reset_inference_routed,
)
from stack.model.moe_checks import defined_terms
from tests.support.train_support import (
    differences,
    interrupted_copy,
    prepared,
    smoke_args,
    train,
    unjudged,
    verdicts,
)

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

SHAPE = {
    "vocab": 53,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "ffn_hidden": 40,
    "ctx": 24,
}
MOD_GATES = ("GATE-ARCH-008", "GATE-ARCH-009", "GATE-ARCH-010", "GATE-ARCH-011")


def mod_model(seed: int = 0, **changes: object) -> GPT:
    return GPT(ModelConfig(**{**SHAPE, "mod_every": 2, **changes}), seed=seed)


def routed_block(model: GPT) -> DepthRoutedBlock:
    block = model.layers[1]
    assert isinstance(block, DepthRoutedBlock)
    return block


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("mod-data"))


def test_off_by_default_changes_nothing() -> None:
    dense = ModelConfig(**SHAPE)
    assert not any(key.startswith("mod_") for key in dense.model_dump())
    assert not any(isinstance(layer, DepthRoutedBlock) for layer in GPT(dense, seed=0).layers)


def test_every_other_block_routes() -> None:
    model = mod_model(n_layers=4)
    assert [isinstance(layer, DepthRoutedBlock) for layer in model.layers] == [False, True, False, True]


@pytest.mark.parametrize("changes", [{}, {"diff_attn": True}, {"moe_experts": 2}])
def test_parameter_count_formula(changes: dict[str, object]) -> None:
    model = mod_model(**changes)
    assert model.num_params() == param_count_formula(model.config)


def test_config_refuses_inconsistent_keys() -> None:
    with pytest.raises(BadInput, match="mod_capacity only applies with mod_every > 0"):
        ModelConfig.from_dict({**SHAPE, "mod_capacity": 0.5})
    with pytest.raises(BadInput, match="mod_every 3 exceeds n_layers 2: no block would route"):
        ModelConfig.from_dict({**SHAPE, "mod_every": 3})
    with pytest.raises(BadInput, match="mod_every has no Triton kernel path"):
        ModelConfig.from_dict({**SHAPE, "mod_every": 2, "attention": "triton"})


@settings(max_examples=25)
@given(
    capacity=st.floats(min_value=0.05, max_value=1.0),  # ⌊C·ctx⌋ ≥ 1; shorter T may still route none
    length=st.integers(min_value=1, max_value=SHAPE["ctx"]),
    seed=st.integers(0, 1000),
)
def test_training_routes_floor_ct_and_skips_bit_for_bit(capacity: float, length: int, seed: int) -> None:
    """Any capacity and length: each row routes ⌊C·T⌋ tokens, and every other token is its input."""
    block = routed_block(mod_model(mod_capacity=capacity)).train()
    x = torch.randn(2, length, SHAPE["d_model"], generator=torch.Generator().manual_seed(seed))
    cos, sin = rope_angles(block_config(capacity), 0, length, x.device, x.dtype)
    with torch.no_grad():
        out = block(x, cos, sin)
    assert block.routed.sum(-1).tolist() == [capacity_tokens(capacity, length)] * 2
    assert torch.equal(out[~block.routed], x[~block.routed])


def block_config(capacity: float) -> ModelConfig:
    return ModelConfig(**{**SHAPE, "mod_every": 2, "mod_capacity": capacity})


def test_training_and_inference_agree_when_every_token_is_routed() -> None:
    """At capacity 1 with every score above the threshold both routings compute the same block."""
    model = mod_model(mod_capacity=1.0)
    block = routed_block(model)
    with torch.no_grad():
        block.route_threshold.fill_(float("-inf"))
    tokens = torch.randint(SHAPE["vocab"], (2, SHAPE["ctx"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = model.train()(tokens)[0]
        block.route_threshold.fill_(float("-inf"))  # the training forward moved it
        inferred = model.eval()(tokens)[0]
    assert block.routed.all()
    torch.testing.assert_close(inferred, trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("training", [True, False])
def test_routed_experts_run_under_autocast(dtype: torch.dtype, training: bool) -> None:
    """Depth routing with experts under autocast, in both routings: the routed feed-forward rows are
    written in the feed-forward's dtype (index_put crashed on the mixture's fp32 at the first
    evaluation of every bf16 or fp16 moe + mod run: train, sft, lora, distill)."""
    model = mod_model(moe_experts=4, moe_top_k=2).train(training)
    idx = torch.randint(SHAPE["vocab"], (2, SHAPE["ctx"] + 1), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=dtype):
        logits, loss = model(idx[:, :-1], idx[:, 1:])
    assert logits.dtype == dtype and torch.isfinite(loss)


@pytest.mark.parametrize("changes", [{}, {"diff_attn": True}])
def test_kv_cache_decoding_equals_one_forward(changes: dict[str, object]) -> None:
    """Inference routing reads each token alone, so decoding through the cache is one forward."""
    model = mod_model(seed=3, mod_capacity=0.5, **changes).eval()
    tokens = torch.randint(SHAPE["vocab"], (2, SHAPE["ctx"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(tokens)
        cache = KVCache(model.config, 2, tokens.device, torch.float32)
        steps = [model(tokens[:, :8], cache=cache)[0]]
        steps += [model(tokens[:, t : t + 1], cache=cache)[0] for t in range(8, SHAPE["ctx"])]
    routed = routed_block(model).routed
    assert cache.layers[1].routed is not None and cache.layers[1].routed.any()
    assert routed.shape == (2, 1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_save_and_load_round_trip_bit_for_bit(tmp_path: Path) -> None:
    saved, tokens = mod_model(seed=1).eval(), torch.randint(SHAPE["vocab"], (2, 16))
    with torch.no_grad():
        routed_block(saved).route_threshold.fill_(0.01)
    save_model(saved, str(tmp_path / "model.safetensors"))
    fresh = mod_model(seed=2).eval()
    load_model(fresh, str(tmp_path / "model.safetensors"))
    assert torch.equal(fresh(tokens)[0], saved(tokens)[0])
    assert {"layers.1.router.weight", "layers.1.route_threshold"} <= set(fresh.state_dict())


@pytest.mark.holds(*MOD_GATES)
@pytest.mark.parametrize("changes", [{}, {"diff_attn": True}, {"moe_experts": 2, "mod_capacity": 0.25}])
def test_start_up_checks_hold(changes: dict[str, object]) -> None:
    with recording(Ledger()) as ledger:
        check_depth_routing(mod_model(**changes))
    for gate_id in MOD_GATES:
        assert ledger.results[gate_id].verdict is Verdict.PASS


def _strict_select(self: DepthRoutedBlock, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Scores strictly above the k-th largest: the k-th itself is dropped, k − 1 per row."""
    kth = scores.topk(k, dim=-1).values[:, -1:]
    return (scores > kth).nonzero()[:, 1].view(scores.shape[0], -1)


@pytest.mark.gate("GATE-ARCH-008")
def test_falsifier_strict_comparison_routes_one_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DepthRoutedBlock, "select", _strict_select)
    with pytest.raises(GateViolation) as caught:
        check_capacity(mod_model())
    assert caught.value.gate_id == "GATE-ARCH-008"
    assert "routed 2 tokens of sequence 0, not ⌊0.125·24⌋ = 3" in caught.value.message


@pytest.mark.gate("GATE-ARCH-008")
@pytest.mark.parametrize("capacity", [0.125, 0.3])
def test_falsifier_a_capacity_rounded_up_fires_at_the_start_of_a_run(
    monkeypatch: pytest.MonkeyPatch, capacity: float
) -> None:
    """Planted: ⌈C·T⌉ tokens routed. At C·T whole (0.125 · 24 = 3) every rounding
    routes the same count, so the start-up checks probe a length where C·T is not whole too."""
    monkeypatch.setattr(depth_router_module, "capacity_tokens", lambda c, t: math.ceil(c * t))
    with pytest.raises(GateViolation) as caught:
        check_depth_routing(mod_model(mod_capacity=capacity))
    assert caught.value.gate_id == "GATE-ARCH-008"


@pytest.mark.holds("GATE-ARCH-008")
@given(capacity=st.floats(0.02, 1.0), ctx=st.integers(2, 200))
def test_the_probed_lengths_hold_the_run_s_own_and_a_fractional_one(capacity: float, ctx: int) -> None:
    lengths = capacity_lengths(capacity, ctx)
    assert ctx in lengths and all(1 <= t <= ctx for t in lengths)
    whole = [t for t in range(math.ceil(1 / capacity), ctx) if capacity * t == math.floor(capacity * t)]
    if len(whole) < ctx - math.ceil(1 / capacity):  # some length routes a token at a fractional C·T
        assert any(capacity * t != math.floor(capacity * t) for t in lengths if t < ctx)


@pytest.mark.gate("GATE-ARCH-008")
def test_falsifier_count_boundary() -> None:
    """⌊0.3·10⌋ = 3 exactly; one more or one fewer is beyond max_count_error 0."""
    assert load_spec().gate("GATE-ARCH-008").threshold_values["max_count_error"] == 0

    def counts(n: int) -> dict[str, object]:
        return {"capacity": 0.3, "length": 10, "routed": {"layers.1": [3, n]}}

    assert judge("GATE-ARCH-008", counts(3)) == []
    assert judge("GATE-ARCH-008", counts(2)) != []
    assert judge("GATE-ARCH-008", counts(4)) != []


@pytest.mark.gate("GATE-ARCH-009")
def test_falsifier_skip_path_through_a_cast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The skipped tokens go through a bf16 round trip (an autocast region around the merge)."""
    merge = DepthRoutedBlock.merge
    monkeypatch.setattr(
        DepthRoutedBlock,
        "merge",
        lambda self, x, rows, y: merge(self, x.to(torch.bfloat16).to(x.dtype), rows, y),
    )
    with pytest.raises(GateViolation) as caught:
        check_skipped_identical(mod_model())
    assert caught.value.gate_id == "GATE-ARCH-009"
    assert "(train routing)" in caught.value.message


@pytest.mark.gate("GATE-ARCH-009")
def test_falsifier_skipped_count_boundary() -> None:
    def changed(n: int) -> dict[str, object]:
        return {"changed": {"layers.1": {"train": n, "inference": 0}}}

    assert judge("GATE-ARCH-009", changed(0)) == []
    assert judge("GATE-ARCH-009", changed(1)) != []


@pytest.mark.gate("GATE-ARCH-010")
def test_falsifier_router_weight_detached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DepthRoutedBlock, "weight", lambda self, scores: torch.sigmoid(scores.detach()))
    with pytest.raises(GateViolation) as caught:
        check_router_gradient(mod_model())
    assert caught.value.gate_id == "GATE-ARCH-010"
    assert "layers.1.router received gradient 0" in caught.value.message


@pytest.mark.gate("GATE-ARCH-010")
def test_falsifier_gradient_boundary() -> None:
    floor = load_spec().gate("GATE-ARCH-010").threshold_values["min_router_grad"]
    assert judge("GATE-ARCH-010", {"grad_absmax": {"layers.1": floor + 1e-30}}) == []
    assert judge("GATE-ARCH-010", {"grad_absmax": {"layers.1": floor}}) != []


@pytest.mark.gate("GATE-ARCH-011")
def test_falsifier_inference_routes_by_top_k_over_the_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation that routes as training does: which tokens make the top k depends on later ones."""
    monkeypatch.setattr(
        DepthRoutedBlock,
        "forward",
        lambda self, x, cos, sin, cache=None, start=0, docs=None: self._forward_top_k(
            x, self.router(x).squeeze(-1), cos, sin, docs
        ),
    )
    with pytest.raises(GateViolation) as caught:
        check_mod_causal(mod_model(mod_capacity=0.25))
    assert caught.value.gate_id == "GATE-ARCH-011"


@pytest.mark.gate("GATE-ARCH-011")
def test_falsifier_causal_tolerance_boundary() -> None:
    atol = load_spec().gate("GATE-ARCH-011").threshold_values["causal_atol"]
    leak = {"ref_absmax": 1.0, "prefix": 12, "length": 24}
    assert judge("GATE-ARCH-011", {**leak, "max_abs_diff": 0.5 * atol}) == []
    assert judge("GATE-ARCH-011", {**leak, "max_abs_diff": 2 * atol}) != []


# -- inference capacity (GATE-ARCH-014) ---------------------------------------------------------


def test_the_threshold_splits_the_last_training_batch() -> None:
    """After a training forward, inference on the same tokens routes exactly ⌊C·N⌋ of its N tokens:
    the saved threshold is that batch's split (pooled over sequences), not a moving average."""
    model = mod_model(mod_capacity=0.25)
    tokens = torch.randint(SHAPE["vocab"], (4, SHAPE["ctx"]), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.train()(tokens)
        model.eval()(tokens)
    assert int(routed_block(model).routed.sum()) == capacity_tokens(0.25, tokens.numel())


@settings(max_examples=40)
@given(
    scores=st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=1, max_size=60),
    capacity=st.floats(min_value=0.01, max_value=1.0),
)
def test_the_split_score_is_exceeded_by_exactly_the_capacity(scores: list[float], capacity: float) -> None:
    """Distinct scores: exactly ⌊C·N⌋ exceed the split, whatever C and N (all of them at C = 1)."""
    values = torch.tensor(sorted(set(scores)))
    above = int((values > split_score(values, capacity)).sum())
    assert above == capacity_tokens(capacity, values.numel())


def test_no_token_of_the_batch_that_set_the_threshold_sits_on_it() -> None:
    """A routed first block scores a token by its embedding alone: had the threshold been one of
    the batch's own scores, every later occurrence of that token would sit on it, routed or not by
    one forward's rounding (a batch and a single decoding step disagreed). None of the batch's
    scores, computed again, equals it."""
    model = mod_model(mod_every=1, mod_capacity=0.25)
    first = model.layers[0]
    assert isinstance(first, DepthRoutedBlock)
    with torch.no_grad():
        torch.nn.init.normal_(first.router.weight, std=1.0)
        tokens = torch.randint(SHAPE["vocab"], (4, SHAPE["ctx"]), generator=torch.Generator().manual_seed(5))
        model.train()(tokens)
        scores = first.router(model.embed(tokens)).squeeze(-1)
    threshold = first.route_threshold
    assert bool((scores != threshold).all())


def _drifting(model: GPT, steps: int, shift: float, seed: int = 0) -> None:
    """Train-mode forwards on fresh batches, each followed by a step that raises every router score
    by about `shift` (the weight moved along the mean direction of the block's inputs), as a
    router does that learns to weight its routed tokens up."""
    block, generator = routed_block(model), torch.Generator().manual_seed(seed)
    seen: list[torch.Tensor] = []
    hook = block.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model.eval()(torch.randint(SHAPE["vocab"], (16, SHAPE["ctx"]), generator=generator))
        hook.remove()
        direction = seen[0].reshape(-1, SHAPE["d_model"]).mean(0)
        step = shift * direction / direction.square().sum()
        for _ in range(steps):
            model.train()(torch.randint(SHAPE["vocab"], (8, SHAPE["ctx"]), generator=generator))
            block.router.weight += step


def _heldout_capacity(model: GPT) -> Verdict:
    """GATE-ARCH-014's verdict on 8 held-out batches read in inference routing."""
    reset_inference_routed(model)
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for _ in range(8):
            model.eval()(torch.randint(SHAPE["vocab"], (8, SHAPE["ctx"]), generator=generator))
    with recording(Ledger()) as ledger:
        check_inference_capacity(inference_routed(model), model.config.mod_capacity, step=40)
    return ledger.results["GATE-ARCH-014"].verdict


@pytest.mark.holds("GATE-ARCH-014")
def test_a_drifting_router_still_routes_about_c_at_inference() -> None:
    model = mod_model(mod_capacity=0.25)
    _drifting(model, steps=40, shift=0.05)
    assert _heldout_capacity(model) is Verdict.PASS


@pytest.mark.gate("GATE-ARCH-014")
def test_falsifier_a_moving_average_threshold_lags_a_drifting_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug of the report: the saved threshold an exponential moving average (momentum 0.9) of
    the batches' splits, ten steps behind scores that rise each step, so inference routes far
    more than C of the held-out tokens."""
    average = torch.zeros(())

    def lagging(scores: torch.Tensor, capacity: float) -> torch.Tensor:
        average.lerp_(split_score(scores, capacity), 0.1)
        return average.clone()

    monkeypatch.setattr(depth_router_module, "split_score", lagging)
    model = mod_model(mod_capacity=0.25)
    _drifting(model, steps=40, shift=0.05)
    assert _heldout_capacity(model) is Verdict.WARN


@pytest.mark.gate("GATE-ARCH-014")
def test_falsifier_inference_capacity_boundary() -> None:
    rtol = load_spec().gate("GATE-ARCH-014").threshold_values["capacity_rtol"]
    seen = 1000

    def routed(fraction: float) -> dict[str, object]:
        return {"capacity": 0.2, "routed": {"layers.1": [round(fraction * seen), seen]}}

    assert judge("GATE-ARCH-014", routed(0.2 * (1 + 0.9 * rtol))) == []
    assert judge("GATE-ARCH-014", routed(0.2 * (1 - 0.9 * rtol))) == []
    assert judge("GATE-ARCH-014", routed(0.2 * (1 + 1.1 * rtol))) != []
    assert judge("GATE-ARCH-014", routed(0.2 * (1 - 1.1 * rtol))) != []


def test_a_capacity_that_routes_no_token_of_ctx_is_refused_naming_it() -> None:
    """⌊C·ctx⌋ = 0 routes nothing, and the router could learn nothing: refused in one line that
    names mod_capacity, and the router-gradient gate, judged on such a probe, says the capacity
    routes no token rather than only that the gradient is zero."""
    with pytest.raises(ValueError, match=r"mod_capacity 0.04 routes ⌊C·ctx⌋ = ⌊0.04·24⌋ = 0 tokens"):
        ModelConfig(**{**SHAPE, "mod_every": 2, "mod_capacity": 0.04})
    message = judge("GATE-ARCH-010", {"capacity": 0.02, "length": 40, "grad_absmax": {"layers.1": 0.0}})
    assert "routes ⌊0.02·40⌋ = 0 of the probe's 40 tokens" in message[0]


@pytest.mark.parametrize("training", [True, False], ids=["top-k", "threshold"])
def test_a_mixture_no_token_reaches_adds_terms_of_zero_on_the_router(training: bool) -> None:
    """A mixture inside a depth-routed block that routes none of the batch's tokens (⌊C·T⌋ = 0 of a
    sequence shorter than 1/C, as a preference pair's row can be; or no score above the threshold)
    reports its auxiliary terms of this forward as 0, with the router's gradient of 0, and the terms
    as GATE-ARCH-001 defines them agree: a mean over no token would make the whole loss NaN and
    halt a DPO run of such a model at GATE-ARCH-001."""
    model = mod_model(moe_experts=4, moe_top_k=2, mod_capacity=0.125).train(training)
    block = routed_block(model)
    block.route_threshold.fill_(math.inf)  # no score exceeds it
    model.train()(torch.zeros(1, 16, dtype=torch.long))  # earlier terms the next forward must replace
    model.train(training)
    _, loss = model(torch.zeros(1, 5, dtype=torch.long), targets=torch.zeros(1, 5, dtype=torch.long))
    terms = {name: float(value.detach()) for name, value in block.feed_forward.aux.items()}
    assert terms == {"load_balance": 0.0, "router_z": 0.0} and block.feed_forward.router_logits.shape[0] == 0
    total = loss + sum(coef * term for coef, term in model.aux_losses().values())
    assert torch.isfinite(total)
    total.backward()
    assert float(block.feed_forward.router.weight.grad.abs().max()) == 0.0
    assert defined_terms([block.feed_forward]).tolist() == [0.0, 0.0]


@pytest.mark.holds("GATE-ARCH-010")
def test_a_small_capacity_gets_a_probe_long_enough_to_route_a_token() -> None:
    """C = 1/30 on ctx 32: the configuration routes ⌊32/30⌋ = 1 token, and the start-up probe (40
    tokens unless C needs more) routes at least one too, so the router receives gradient."""
    check_router_gradient(mod_model(ctx=32, mod_capacity=1 / 30))


BOTH = ("model.n_layers=2", "model.diff_attn=true", "model.mod_every=2", "model.mod_capacity=0.25")


@pytest.mark.slow
@pytest.mark.holds(*MOD_GATES)
def test_workflow_both_options_train_sample_eval_inspect_trace(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Differential attention and mixture of depths together, trained and used with every tool."""
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *BOTH)) == 0
    got = verdicts(run)
    assert {got[g] for g in (*MOD_GATES, "GATE-ARCH-005", "GATE-ARCH-006", "GATE-ARCH-007")} == {"PASS"}
    assert unjudged(run) == {}  # the kind's gates and those its diff_attn and mod_every options turn on
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "gate", "--tokens", "8"]) == 0
    assert main(["eval", str(run), "--split", "val"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "--json"]) == 0
    names = {t["name"] for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert {"layers.1.router.weight", "layers.1.route_threshold", "layers.0.attn.lambda_q1"} <= names
    assert main(["trace", str(run), "--prompt", "gate"]) == 0
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    assert "diff_attn=true cannot be exported as a Hugging Face Llama" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_with_both_options_is_bit_exact(data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Router threshold buffers, λ vectors and the rest come back: the resumed run is the straight one."""
    straight = tmp_path_factory.mktemp("mod-straight") / "run"
    sets = (*BOTH, "train.steps=6", "ckpt.every=2", "ckpt.keep_last=6", "eval.every=6")
    assert train(smoke_args(data, straight, *sets)) == 0
    run = interrupted_copy(straight, tmp_path_factory.mktemp("mod-resumed"), at_step=2)
    assert train(["train", "--resume", str(run)]) == 0
    assert differences(straight, run) == []


def test_inspect_counts_the_parameters_training_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A routed block's threshold is a buffer saved with the weights: `stack inspect` lists it and
    counts the parameters the training record counts."""
    run = tmp_path / "run"
    assert train(smoke_args(prepared(tmp_path), run, "model.n_layers=2", "model.mod_every=2")) == 0
    capsys.readouterr()
    assert main(["inspect", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert any(t["buffer"] and t["name"].endswith("route_threshold") for t in shown["tensors"])
    assert shown["parameters"] == json.loads((run / "metadata.json").read_text())["metrics"]["parameters"]
