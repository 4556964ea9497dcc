"""LoRA adapters: identity at init, merge against unmerged, unmerge back to the base, trained
adapters, strict loads onto their own base, and the tied embedding a merge must not touch.

Falsifiers plant each bug in the stack's own objects: a B that is not zero at init, a merge that
scales Δ wrongly or adds it twice, an unmerge by subtraction, an adapter that never trained or a
base that moved, an adapter file with a key too few or too many or on another base, and an
adapter on a tied head. Thresholded judges are tried just beyond and just inside the threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from contracts.errors import BadInput, GateViolation
from contracts.evidence import sha256_file
from contracts.gates import measure
from contracts.judges import judge
from contracts.spec import load_spec
from stack.model import lora
from stack.model.adapters import MANIFEST, WEIGHTS, load_adapter, save_adapter
from stack.model.lora import LoRALinear, apply_lora, base_sha256, merge
from stack.model.lora_checks import (
    check_identity,
    check_trained,
    check_unmerged,
    checked_merge,
    identity_measured,
    logits_of,
    probe_ids,
    trained_measured,
    unmerge_measured,
)
from tests.support.trace_support import tiny_model


def _trained_like(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> None:
    """Give every B the values a few training steps would: small, random, non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, wrapper in lora.adapters(model):
            wrapper.lora_B.copy_(torch.randn(wrapper.lora_B.shape, generator=generator) * std)


def _adapted(targets: str = "q,v,ffn_*", **changes: object) -> torch.nn.Module:
    model = tiny_model(**changes)
    apply_lora(model, targets, r=4, alpha=8.0, generator=torch.Generator().manual_seed(0))
    return model


# -- GATE-LORA-001: at init the adapted model is its base ---------------------------------


@pytest.mark.holds("GATE-LORA-001")
@settings(max_examples=12)
@given(
    r=st.integers(1, 8),
    alpha=st.floats(0.5, 64.0),
    rslora=st.booleans(),
    targets=st.sampled_from(["q", "q,v", "k,attn_out", "ffn_*", "*"]),
    seed=st.integers(0, 2**16),
)
def test_fresh_adapters_leave_the_logits_bit_for_bit(
    r: int, alpha: float, rslora: bool, targets: str, seed: int
) -> None:
    model = tiny_model(seed=seed % 4, tie_embeddings=False)
    ids = probe_ids(model)
    before = logits_of(model, ids)
    names = apply_lora(model, targets, r, alpha, rslora=rslora, generator=torch.Generator().manual_seed(seed))
    assert names and torch.equal(logits_of(model, ids), before)
    check_identity(identity_measured(model))


@pytest.mark.gate("GATE-LORA-001")
def test_an_adapter_whose_b_is_not_zero_at_init_fires() -> None:
    model = _adapted()
    with torch.no_grad():
        lora.adapters(model)[0][1].lora_B[0, 0] = 1e-3  # the planted init: B drawn, not zeroed
    with pytest.raises(GateViolation, match="GATE-LORA-001"):
        check_identity(identity_measured(model))


# -- GATE-LORA-002: merged computes what unmerged does, Δ once ----------------------------


@pytest.mark.holds("GATE-LORA-002", "GATE-LORA-006")
@pytest.mark.parametrize("rslora", [False, True])
def test_a_merge_computes_what_the_adapters_did(rslora: bool) -> None:
    model = tiny_model(tie_embeddings=False)
    apply_lora(model, "q,v,attn_out,ffn_*,logits", 4, 8.0, rslora=rslora)
    _trained_like(model)
    ids = probe_ids(model)
    measured = checked_merge(model)  # judged by GATE-LORA-002 and -006 on the way
    assert set(measured["parity"]["mismatched_elements"].values()) == {0}
    assert measured["parity"]["adapters"] == 6 * 3 + 1  # q, v, attn_out, ffn_* in 3 blocks, logits
    assert not torch.equal(logits_of(model, ids), logits_of(tiny_model(tie_embeddings=False), ids))


@pytest.mark.gate("GATE-LORA-002")
def test_a_merge_with_the_wrong_scale_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _adapted()
    _trained_like(model)
    delta = LoRALinear.delta
    monkeypatch.setattr(LoRALinear, "delta", lambda self: delta(self) * 2**0.5)  # alpha/√r for alpha/r
    with pytest.raises(GateViolation, match="GATE-LORA-002"):
        checked_merge(model)


@pytest.mark.gate("GATE-LORA-002")
def test_a_delta_merged_twice_fires() -> None:
    model = _adapted()
    _trained_like(model)
    wrapper = lora.adapters(model)[0][1]
    wrapper.merge()
    wrapper.merges = 0  # the planted bug: a merged flag lost, so the next merge adds Δ again
    with pytest.raises(GateViolation, match=r"GATE-LORA-002.*the delta once"):
        checked_merge(model)


def test_a_second_merge_is_refused() -> None:
    model = _adapted()
    merge(model)
    with pytest.raises(BadInput, match="already merged"):
        merge(model)


@pytest.mark.gate("GATE-LORA-002")
def test_a_difference_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    t = load_spec().gate("GATE-LORA-002").threshold_values
    largest = 10.0
    allowed = t["logits_atol"] + t["logits_rtol"] * largest

    def row(diff: float) -> dict[str, object]:
        return {
            "adapters": 1,
            "max_abs_diff": diff,
            "max_abs_logit": largest,
            "mismatched_elements": {"q": 0},
        }

    assert measure("GATE-LORA-002", row(allowed * 0.99)).ok
    assert not measure("GATE-LORA-002", row(allowed * 1.01)).ok


# -- GATE-LORA-003: unmerge restores the base bit for bit --------------------------------


@pytest.mark.holds("GATE-LORA-003")
@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), std=st.floats(1e-4, 1.0))
def test_unmerge_restores_the_base_bit_for_bit(seed: int, std: float) -> None:
    model = _adapted()
    base = base_sha256(model)
    _trained_like(model, seed, std)
    merge(model)
    check_unmerged(unmerge_measured(model))
    assert base_sha256(model) == base


@pytest.mark.gate("GATE-LORA-003")
def test_an_unmerge_by_subtraction_fires() -> None:
    model = _adapted()
    _trained_like(model, std=0.5)
    merge(model)
    for _, wrapper in lora.adapters(model):  # the planted unmerge: W + Δ − Δ, not the kept base
        wrapper._base_copy = (wrapper.weight.detach().double() - wrapper.delta()).float()
    with pytest.raises(GateViolation, match="GATE-LORA-003"):
        check_unmerged(unmerge_measured(model))


# -- GATE-LORA-004: after training the base stayed and every adapter trained --------------


@pytest.mark.gate("GATE-LORA-004")
def test_an_adapter_that_never_trained_fires() -> None:
    model = _adapted()
    _trained_like(model)
    with torch.no_grad():
        lora.adapters(model)[-1][1].lora_B.zero_()  # its gradient never arrived
    with pytest.raises(GateViolation, match=r"GATE-LORA-004.*never trained"):
        check_trained(trained_measured(model))


@pytest.mark.holds("GATE-LORA-004")
def test_an_expert_no_token_reached_may_keep_b_zero() -> None:
    """Routing sent every token of the training step to expert 0: expert 1's adapters computed
    nothing and rightly keep B = 0 (the gate fired on them, a false alarm in the options matrix)."""
    model = tiny_model(n_layers=1, moe_experts=2, moe_top_k=1)
    apply_lora(model, "moe.expert*,q,v", r=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    moe = model.layers[0].moe
    ids = probe_ids(model)
    seen: list[torch.Tensor] = []
    hook = moe.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():  # a direction every token's mixture input scores +1 on (B = 0: the base's)
        model.train()(ids[:, :-1])
        hook.remove()
        tokens = seen[0].reshape(-1, moe.router.in_features)
        direction = torch.linalg.pinv(tokens.double()) @ torch.ones(tokens.shape[0], dtype=torch.float64)
        moe.router.weight[0] = 100 * direction.float()  # expert 0 wins every token by 200 logits
        moe.router.weight[1] = -100 * direction.float()
    moe.reset_routed()  # count the training step's assignments alone (no_grad fed no adapter)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model.train()(ids[:, :-1], ids[:, 1:])[1]
    assert loss is not None
    loss.backward()
    optimizer.step()
    measured = trained_measured(model)
    starved = {"layers.0.moe.expert1.gate", "layers.0.moe.expert1.up", "layers.0.moe.expert1.down"}
    assert starved <= set(measured["unfed"]) and starved <= set(measured["zero_b"])
    assert moe.routed.tolist()[1] == 0  # the case, as built
    check_trained(measured)


@pytest.mark.gate("GATE-LORA-004")
def test_an_untrained_adapter_is_excused_only_inside_an_expert_no_token_reached() -> None:
    """B = 0 with input (the gradient was lost) fires; so does B = 0 without input outside an
    expert (a projection every token passes cannot have been starved by routing)."""
    names = ["layers.0.moe.expert1.up", "layers.0.attn.q"]
    fed_expert = {"adapters": 2, "base_moved": [], "trainable_base": [], "zero_b": names[:1], "unfed": []}
    assert judge("GATE-LORA-004", fed_expert)
    unfed_projection = {**fed_expert, "zero_b": names[1:], "unfed": names[1:]}
    assert judge("GATE-LORA-004", unfed_projection)
    assert not judge("GATE-LORA-004", {**fed_expert, "unfed": names[:1]})


@pytest.mark.gate("GATE-LORA-004")
def test_a_base_that_moved_or_was_left_trainable_fires() -> None:
    model = _adapted()
    _trained_like(model)
    with torch.no_grad():
        lora.adapters(model)[0][1].weight[0, 0] += 1e-6
    with pytest.raises(GateViolation, match=r"GATE-LORA-004.*moved"):
        check_trained(trained_measured(model))
    thawed = _adapted()
    _trained_like(thawed)
    thawed.final_norm.weight.requires_grad_(True)
    with pytest.raises(GateViolation, match=r"GATE-LORA-004.*trainable"):
        check_trained(trained_measured(thawed))


# -- GATE-LORA-005: strict loads onto the adapter's own base ------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """An adapter with trained-like B saved from the tiny model of seed 0."""
    model = _adapted()
    _trained_like(model)
    directory = tmp_path / "adapter"
    save_adapter(model, directory, base_sha256(model), "q,v,ffn_*")
    return directory, model


@pytest.mark.holds("GATE-LORA-005")
def test_an_adapter_round_trips_onto_its_base(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, original = saved
    model = tiny_model()
    manifest = load_adapter(model, directory, base_sha256(model))
    assert manifest["r"] == 4
    ids = probe_ids(model)
    assert torch.equal(logits_of(model, ids), logits_of(original, ids))


def _reseal(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Rewrite the adapter's weights and the manifest's hash of them: a consistent but wrong file."""
    save_file(tensors, str(directory / WEIGHTS))
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["weights_sha256"] = sha256_file(directory / WEIGHTS)
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.gate("GATE-LORA-005")
@pytest.mark.parametrize("plant", ["missing", "unexpected", "mismatched"])
def test_an_adapter_file_with_a_wrong_key_fires(saved: tuple[Path, torch.nn.Module], plant: str) -> None:
    directory, _ = saved
    tensors = load_file(str(directory / WEIGHTS))
    key = sorted(tensors)[0]
    if plant == "missing":
        del tensors[key]
    elif plant == "unexpected":
        tensors["layers.9.attn.q.lora_A"] = tensors[key].clone()
    else:
        tensors[key] = tensors[key][:, :-1].contiguous()
    _reseal(directory, tensors)
    model = tiny_model()
    with pytest.raises(GateViolation, match=f"GATE-LORA-005.*{key if plant != 'unexpected' else 'layers.9'}"):
        load_adapter(model, directory, base_sha256(model))


@pytest.mark.gate("GATE-LORA-005")
def test_an_adapter_on_another_base_fires(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    other = tiny_model(seed=1)
    with pytest.raises(GateViolation, match=r"GATE-LORA-005.*belongs to base"):
        load_adapter(other, directory, base_sha256(other))


def test_a_base_sha256_the_model_does_not_have_is_bad_input(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    with pytest.raises(BadInput, match="base sha256"):
        load_adapter(tiny_model(), directory, "0" * 64)


def test_saving_into_a_directory_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"notes\.txt"):
        save_adapter(_adapted(), tmp_path, "0" * 64)


# -- GATE-LORA-006: the input embedding survives a merge ----------------------------------


def test_lora_on_a_tied_head_is_refused() -> None:
    with pytest.raises(BadInput, match="tied embeddings"):
        apply_lora(tiny_model(), "logits", 4, 8.0)
    with pytest.raises(BadInput, match="embedding, not a projection"):
        apply_lora(tiny_model(), "embed", 4, 8.0)


@pytest.mark.holds("GATE-LORA-006")
def test_a_merge_on_a_tied_model_keeps_the_head_tied() -> None:
    model = _adapted("*_out,q")
    _trained_like(model)
    embedding = model.embed.weight.detach().clone()
    assert checked_merge(model)["embedding"]["head_is_embed"]
    assert torch.equal(model.embed.weight, embedding)


@pytest.mark.gate("GATE-LORA-006")
def test_an_adapter_planted_on_a_tied_head_fires() -> None:
    model = _adapted()
    model.lm_head = LoRALinear(model.lm_head, 4, 8.0, 0.0, False)  # past apply_lora's refusal
    _trained_like(model)
    with pytest.raises(GateViolation, match="GATE-LORA-006"):
        checked_merge(model)


# -- the model stays a model ----------------------------------------------------------------


def test_fold_leaves_a_plain_model_with_the_base_keys_and_the_merged_logits() -> None:
    model = _adapted()
    _trained_like(model)
    keys = set(tiny_model().state_dict())
    checked_merge(model)
    merged = logits_of(model, probe_ids(model))
    lora.fold(model)
    assert set(model.state_dict()) == keys and not lora.has_lora(model)
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(logits_of(model, probe_ids(model)), merged)


def test_trace_sites_still_see_the_wrapped_projection() -> None:
    model = _adapted()
    _trained_like(model)
    seen: dict[str, torch.Tensor] = {}
    module = model.get_submodule("layers.0.attn.q")
    module.register_forward_hook(lambda _m, _i, out: seen.setdefault("q", out))
    logits_of(model, probe_ids(model))
    with lora.without_adapters(model):
        base_q: dict[str, torch.Tensor] = {}
        model.get_submodule("layers.0.attn.q").register_forward_hook(
            lambda _m, _i, o: base_q.setdefault("q", o)
        )
        logits_of(model, probe_ids(model))
    assert not torch.equal(seen["q"], base_q["q"])  # the hook sees the adapter's term


# -- every option's projections ----------------------------------------------------------------


def _options_model() -> torch.nn.Module:
    """Two blocks with experts (and a shared one), differential attention and routed depth."""
    options = {"moe_experts": 2, "moe_shared_expert": True, "diff_attn": True, "mod_every": 1}
    return tiny_model(n_layers=2, mod_capacity=0.5, **options)


@pytest.mark.holds("GATE-LORA-001", "GATE-LORA-002", "GATE-LORA-003")
def test_every_projection_of_every_option_carries_an_adapter() -> None:
    """'*' wraps every expert, both routers and q2/k2 (not only the dense names, silently), leaves
    out the embedding and the tied head with their reasons, and the adapted model
    is its base, merges and unmerges: the 0-dim route_threshold hashes like any tensor."""
    model = _options_model()
    selection = lora.lora_selection(model, "*")
    assert [(s.name, s.reason.split(";")[0]) for s in selection.skipped] == [
        ("embed", "LoRA wraps linear projections"),
        ("logits", "tied: the same tensor as embed"),
    ]
    names = apply_lora(model, "*", r=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    expected = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert set(names) == expected and len(names) == len(selection.targets)
    assert {"layers.1.moe.expert1.down", "layers.1.moe.router", "layers.1.router", "layers.0.attn.k2"} <= set(
        names
    )
    check_identity(identity_measured(model))
    base = base_sha256(model)
    _trained_like(model)
    checked_merge(model)
    check_unmerged(unmerge_measured(model))
    assert base_sha256(model) == base


@settings(max_examples=30)
@given(
    shape=st.lists(st.integers(0, 3), min_size=0, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.uint8]),
)
def test_a_tensor_of_any_rank_hashes_by_its_dtype_shape_and_bytes(
    shape: list[int], dtype: torch.dtype
) -> None:
    tensor = torch.zeros(shape, dtype=dtype)
    digest = lora.tensor_sha256(tensor)
    assert digest == lora.tensor_sha256(tensor.clone())
    assert digest != lora.tensor_sha256(tensor.reshape(1, *shape))  # the shape is hashed
    if tensor.numel():
        changed = tensor.clone()
        changed.view(-1)[-1] = 1
        assert lora.tensor_sha256(changed) != digest
