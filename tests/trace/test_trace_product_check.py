"""GATE-TRACE-002's product check (rev 7): a linear site's sampled rows against its read, projected.

Outside `stack trace --verify` a sampled row of a plain nn.Linear's output is checked as y·r against
x·(Wᵀr) + b·r on identity_probes seeded vectors r, with Wᵀr kept while the weights are unchanged.
The revision states per fault class the probability that this catches it: a scaled module, 1;
another tensor or a row off by its own size, missed with probability below 1e-10 per sampled row;
NaN/Inf held to the same places as by recomputation. The tests plant each on sites the product
check covers (the head above all, whose weight it does not read) and the benign case inside. A
prompt of no more tokens than the sample is a sample of itself, every row product-checked, and its
record says so (`probes`). Every affine site is product-checked: a LoRA-wrapped projection
(against (W + s·B·A)ᵀr, merged or not) and a mixture's router as well, and an expert through its
parts (gate, up, the SwiGLU product, the down projection).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import GateViolation
from contracts.evidence import EVIDENCE_FILE
from contracts.spec import load_spec
from stack.cli import main
from stack.kernels import host_checks
from stack.model.lora import LoRALinear, apply_lora, merge
from stack.trace import site_identity
from stack.trace.site_identity import Identity, SiteIdentities, affine, identities, probes, sampled_rows
from stack.trace.sites import layout_for
from stack.trace.tracer import trace_forward
from tests.support.ledger_support import findings
from tests.support.trace_support import save_run, seen_as, tiny_model

BATCH, LENGTH = 4, 30  # 120 rows: more than identity_sample_rows, so rows are sampled
SAMPLE = int(load_spec().threshold("GATE-TRACE-002", "identity_sample_rows"))
PROBES = int(load_spec().threshold("GATE-TRACE-002", "identity_probes"))
RTOL = float(load_spec().threshold("GATE-TRACE-002", "site_identity_rtol"))


@pytest.fixture(params=["host", "host, torch ops", "accelerator"])
def checked_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the product check runs: on the host, by the C kernel (stack.kernels.host_checks) or,
    where it cannot be built, by the torch ops; or as on an accelerator, where reading whether a
    projection is finite would wait for the whole forward (site_identity.on_host false: the masked
    paths run, and the projections' finiteness is read with the trace's one transfer, after which
    the sites whose were not finite are measured again)."""
    if request.param == "host, torch ops":
        monkeypatch.setattr(host_checks, "_kernel", lambda: None)
    if request.param == "accelerator":
        monkeypatch.setattr(site_identity, "on_host", lambda _tensor: False)
    return request.param


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(257, (BATCH, LENGTH), generator=torch.Generator().manual_seed(seed))


# A prompt of no more tokens than identity_sample_rows is a sample of itself, every row product-checked.
SHORT = 12  # a dozen tokens: fewer rows than identity_sample_rows
LINEAR = ("q", "k", "v", "ffn_gate", "ffn_up", "ffn_out")


def short_prompt(seed: int = 0) -> torch.Tensor:
    return torch.randint(257, (1, SHORT), generator=torch.Generator().manual_seed(seed))


def _scaled(times: float) -> Any:
    return lambda output: output * (1 + times * RTOL)


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
@pytest.mark.parametrize("short", [False, True], ids=["sampled rows", "every row of a short prompt"])
def test_a_scaled_head_is_caught_by_the_product_check_with_probability_1(
    monkeypatch: pytest.MonkeyPatch, times: float, fires: bool, short: bool
) -> None:
    """Fault class 'module off by a scale': every projection of a row is off by the same fraction,
    so the largest is, whatever r was drawn; just beyond site_identity_rtol fires, inside holds,
    on the sample of a batch and on every row of a short prompt (rev 9) alike."""
    seen_as(monkeypatch, "logits", _scaled(times))
    idx = short_prompt() if short else batch()
    if fires:
        with pytest.raises(GateViolation, match=r"logits differs"):
            trace_forward(tiny_model(), idx)
        return
    measured = trace_forward(tiny_model(), idx)[0].completeness().measured["identities"]["logits"]
    assert measured["max_abs_diff"] == pytest.approx(times * RTOL * measured["ref_absmax"], rel=0.01)
    assert (measured["rows_checked"], measured["probes"]) == ((SHORT if short else SAMPLE), PROBES)


@pytest.mark.gate("GATE-TRACE-002")
def test_a_head_that_shows_another_tensor_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault class 'another tensor': the logits site shows the logits of the rows in reverse order
    (the same values, each on another token's row), which every statistic keeps."""
    seen_as(monkeypatch, "logits", lambda output: output.flip(1))
    with pytest.raises(GateViolation, match=r"logits differs"):
        trace_forward(tiny_model(), batch())


def _caught(traced: torch.Tensor, read: torch.Tensor, linear: torch.nn.Linear) -> bool:
    """Whether SiteIdentities' product check flags `traced` as not `linear` of `read`."""
    checked = SiteIdentities(
        {"out": Identity(("in",), linear.forward, linear)}, {}, frozenset(), SAMPLE, PROBES
    )
    checked.visit("in", read)
    checked.visit("out", traced)
    diff, scale, _ = checked.deviations()["out"].tolist()
    return diff > RTOL * scale


def test_a_row_off_by_its_own_size_is_caught_on_every_draw() -> None:
    """Fault class 'one row' at a sampled row: a difference as large as the row, in 300 random
    directions, is caught every time (the revision: missed with probability below 1e-10); a
    rounding-sized difference (1e-3 of the row) never fires."""
    linear = torch.nn.Linear(48, 40)
    x = torch.randn(120, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = linear(x)
    row = int(sampled_rows(120, SAMPLE)[5])
    draws = torch.Generator().manual_seed(1)
    for _ in range(300):
        direction = torch.randn(40, generator=draws)
        direction /= direction.norm()
        for size, fires in ((1.0, True), (1e-3, False)):
            traced = y.clone()
            traced[row] += size * y[row].norm() * direction
            assert _caught(traced, x, linear) is fires


@pytest.mark.gate("GATE-TRACE-002")
def test_a_nan_the_module_does_not_make_is_caught(monkeypatch: pytest.MonkeyPatch, checked_on: str) -> None:
    """A NaN in a sampled row of a linear site whose read is finite: the projections are not all
    finite, the module is recomputed on the rows, and NaN stands on one side only."""
    first = int(sampled_rows(BATCH * LENGTH, SAMPLE)[2])

    def plant(output: torch.Tensor) -> torch.Tensor:
        seen = output.clone().reshape(-1, output.shape[-1])
        seen[first, 0] = float("nan")
        return seen.reshape(output.shape)

    seen_as(monkeypatch, "layers.1.ffn_up", plant)
    with pytest.raises(GateViolation, match=r"layers\.1\.ffn_up differs"):
        trace_forward(tiny_model(), batch())


@pytest.mark.holds("GATE-TRACE-002")
def test_a_model_that_makes_nan_traces_with_nan_at_the_same_places(checked_on: str) -> None:
    """A token whose embedding is NaN makes NaN wherever attention carries it: every linear site's
    projections are NaN, the module recomputed agrees, and the trace stands."""
    model = tiny_model()
    idx = batch()
    with torch.no_grad():
        model.embed.weight[int(idx[0, 3])] = float("nan")
    trace, _ = trace_forward(model, idx)
    assert trace.completeness().ok
    assert trace.sites["logits"].stats["nan"] > 0


@pytest.mark.holds("GATE-TRACE-002")
def test_the_probes_follow_the_weights() -> None:
    """Wᵀr is kept per module while its weights are unchanged and made again when an in-place
    update (an optimizer step, a load) changes them: the trace after the update still holds, which
    a stale Wᵀr would refuse."""
    model = tiny_model()
    head = model.lm_head
    before = probes(head, PROBES)
    assert probes(head, PROBES) is before
    trace_forward(model, batch())
    with torch.no_grad():
        head.weight.mul_(1.5)
    after = probes(head, PROBES)
    assert after is not before and torch.allclose(after.inputs, 1.5 * before.inputs)
    assert trace_forward(model, batch())[0].completeness().ok


@pytest.mark.holds("GATE-TRACE-002")
def test_a_healthy_trace_under_bf16_autocast_holds_on_the_projections() -> None:
    """Under autocast the forward multiplies bf16-rounded weights; Wᵀr is taken from the float32
    ones: the difference is a bf16 rounding of each term, far inside site_identity_rtol."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trace, _ = trace_forward(tiny_model(), batch())
    worst = max(i["max_abs_diff"] / i["ref_absmax"] for i in trace.identities.values() if i["ref_absmax"])
    assert worst < RTOL / 4


@pytest.mark.holds("GATE-TRACE-002")
def test_a_projection_that_overflows_is_held_to_the_module_not_to_its_projection(checked_on: str) -> None:
    """A head row of 1e38 overflows that logit to ±Inf on the rows whose normed input sums beyond
    3.4, while x·(Wᵀr), of a finite Wᵀr, stays finite: held to the projections the Inf would stand
    on one side only. The rows' projections are not all finite, so the module is recomputed on
    them, its Inf stands where the traced one does, and the trace holds."""
    model = tiny_model(tie_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight[0] = 1e38
    trace, _ = trace_forward(model, batch())
    assert trace.sites["logits"].stats["inf"] > 0
    assert trace.completeness().ok


def _product_checked(name: str) -> bool:
    return name == "logits" or name.rpartition(".")[2] in LINEAR


@pytest.mark.holds("GATE-TRACE-002")
def test_a_short_prompt_is_a_sample_of_itself(checked_on: str) -> None:
    """Every identity of a 12-token trace is checked on its 12 rows; a plain linear site's by the
    product check, which it states (`probes`), instead of its module recomputed whole (which read
    the head's whole weight again); a norm's and the SwiGLU product's by their modules on the rows."""
    identities = trace_forward(tiny_model(), short_prompt())[0].identities
    assert all((i["rows"], i["rows_checked"]) == (SHORT, SHORT) for i in identities.values())
    assert {name for name, i in identities.items() if "probes" in i} == set(
        filter(_product_checked, identities)
    )
    assert all(i["probes"] == PROBES for i in identities.values() if "probes" in i)


@pytest.mark.holds("GATE-TRACE-002")
def test_verify_recomputes_a_short_prompts_sites_whole() -> None:
    """`--verify` keeps the exhaustive check: every site recomputed by its module, no probe."""
    identities = trace_forward(tiny_model(), short_prompt(), exhaustive=True)[0].identities
    assert not any("probes" in i for i in identities.values())
    assert all(i["rows_checked"] == i["rows"] == SHORT for i in identities.values())


@pytest.mark.gate("GATE-TRACE-002")
@pytest.mark.parametrize("row", [0, 5, SHORT - 1])
def test_one_row_of_a_short_site_showing_another_rows_output_is_caught(
    monkeypatch: pytest.MonkeyPatch, checked_on: str, row: int
) -> None:
    """Fault class 'a row off by its own size' on one of a short site's rows, each of which the
    sample checks: the row shows its neighbour's output, and the product check catches it (the
    revision: missed with probability below 1e-10)."""

    def plant(output: torch.Tensor) -> torch.Tensor:
        seen = output.clone().reshape(-1, output.shape[-1])
        seen[row] = seen[(row + 1) % SHORT]
        return seen.reshape(output.shape)

    seen_as(monkeypatch, "layers.1.ffn_up", plant)
    with pytest.raises(GateViolation, match=r"layers\.1\.ffn_up differs"):
        trace_forward(tiny_model(), short_prompt())


@pytest.mark.parametrize(
    ("stated", "fires"),
    [
        pytest.param(PROBES - 1, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(PROBES, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
def test_an_identity_product_checked_on_fewer_probes_than_the_spec_fires(stated: int, fires: bool) -> None:
    """Fewer probes hide a row with a larger probability than the revision states."""
    from contracts.judges import judge

    identity = {
        "max_abs_diff": 0.0,
        "ref_absmax": 1.0,
        "rows": SHORT,
        "rows_checked": SHORT,
        "probes": stated,
    }
    problems = judge("GATE-TRACE-002", {"identities": {"logits": identity}})
    assert bool(problems) is fires


def test_a_short_prompts_record_holds_and_its_probes_bound_ref_absmax_one_sidedly(tmp_path: Path) -> None:
    """`stack trace` of a 12-byte prompt: the record holds under the integrity check, its linear
    identities stating their probes. Their ref_absmax is the projections' largest magnitude, below
    the site's absmax; a record that drops `probes` claims a whole recomputation, whose ref_absmax
    would be the site's, and the checker names it."""
    run = save_run(tmp_path / "run", tiny_model())
    out = tmp_path / "rec"
    assert main(["trace", str(run), "--prompt", "x" * SHORT, "--out", str(out)]) == 0
    assert findings(out) == []
    record = json.loads((out / EVIDENCE_FILE).read_text(encoding="utf-8"))
    (gate,) = [g for g in record["gates"] if g["id"] == "GATE-TRACE-002"]
    logits = gate["measured"]["identities"]["logits"]
    assert (logits["rows_checked"], logits["probes"]) == (SHORT, PROBES)
    del logits["probes"]
    (out / EVIDENCE_FILE).write_text(json.dumps(record), encoding="utf-8")
    assert any("identities.logits.ref_absmax" in line for line in findings(out))


@pytest.mark.parametrize("fault", [False, True])
def test_sites_of_two_row_counts_are_product_checked_apart(checked_on: str, fault: bool) -> None:
    """A forward whose linear sites have two numbers of rows (a routed block's few tokens beside a
    batch's sample) checks each count's sites together, every one measured by its probes; a row
    of the short site showing another row's output is caught there."""
    linear = torch.nn.Linear(24, 20)
    draws = torch.Generator().manual_seed(0)
    wide, narrow = torch.randn(120, 24, generator=draws), torch.randn(SHORT, 24, generator=draws)
    with torch.no_grad():
        shown = linear(narrow)
    if fault:
        shown[3] = shown[4]
    table = {site: Identity((read,), linear.forward, linear) for site, read in (("all", "x"), ("few", "z"))}
    checked = SiteIdentities(table, {}, frozenset(), SAMPLE, PROBES)
    with torch.no_grad():
        for read, site, rows in (("x", "all", wide), ("z", "few", narrow)):
            checked.visit(read, rows)
            checked.visit(site, linear(rows) if site == "all" else shown)
        measured = {name: row.tolist() for name, row in checked.deviations().items()}
    if checked.projections_finite is not None:  # the accelerator's path: both counts' flags, in order
        assert [name for name, *_ in checked.projected] == ["all", "few"]
        assert checked.projections_finite.tolist() == [True, True]
    assert checked.probed == {"all": PROBES, "few": PROBES}
    assert checked.counted == [(120, SAMPLE), (SHORT, SHORT)]
    diff, scale, _ = measured["few"]
    assert (diff > RTOL * scale) is fault
    assert measured["all"][0] <= RTOL * measured["all"][1]


# Every affine site is product-checked, not only a plain nn.Linear: a LoRA-wrapped projection and a
# mixture's router; and a mixture's experts are checked through their parts.
ADAPTED = ("q", "v", "ffn_up")


def adapted_model(dropout: float = 0.0) -> torch.nn.Module:
    """tiny_model with adapters on q, v and ffn_up whose B is far from zero, so that each adapted
    site is off its base projection by about its own size: probes that left out Δ = s·B·A would
    refuse every healthy trace of it."""
    model = tiny_model()
    apply_lora(model, ",".join(ADAPTED), 2, 4.0, dropout=dropout)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


def _adapted(name: str) -> bool:
    return name.rpartition(".")[2] in ADAPTED


@pytest.mark.holds("GATE-TRACE-002")
@pytest.mark.parametrize("merged", [False, True], ids=["adapter apart", "adapter merged"])
def test_an_adapted_projection_is_product_checked_with_its_adapter(checked_on: str, merged: bool) -> None:
    """Each adapted site states its probes and holds: its rows against (W + Δ)ᵀr, or the merged
    weight's Wᵀr; the unadapted linear sites against their own weights' probes."""
    model = adapted_model()
    if merged:
        merge(model)
    trace, _ = trace_forward(model, batch())
    assert trace.completeness().ok
    probed = {name for name, i in trace.identities.items() if "probes" in i}
    assert {name for name in trace.identities if _adapted(name)} <= probed
    assert probed == set(filter(_product_checked, trace.identities))


@pytest.mark.gate("GATE-TRACE-002")
def test_an_adapted_site_showing_its_base_alone_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault class 'another tensor': the adapted q site shows what its base weight alone makes of
    the same input (the adapter's term lost on the way to the trace), which a hook on the base
    module would show."""
    model = adapted_model()
    wrapper = model.layers[2].attn.q
    assert isinstance(wrapper, LoRALinear)
    normed: dict[str, torch.Tensor] = {}
    model.layers[2].attn_norm.register_forward_hook(lambda _m, _a, out: normed.update(x=out))
    seen_as(monkeypatch, "layers.2.q", lambda output: output - wrapper.adapter(normed["x"]))
    with pytest.raises(GateViolation, match=r"layers\.2\.q differs"):
        trace_forward(model, batch())


@pytest.mark.holds("GATE-TRACE-002")
def test_the_probes_follow_the_adapter() -> None:
    """(W + Δ)ᵀr is kept while the adapter is unchanged and made again when B is stepped, when Δ is
    merged and when it is taken out: each trace after a change holds, which stale probes would
    refuse."""
    model = adapted_model()
    wrapper = model.layers[0].attn.q
    before = probes(wrapper, PROBES)
    assert probes(wrapper, PROBES) is before
    with torch.no_grad():
        wrapper.lora_B.mul_(-2.0)
    stepped = probes(wrapper, PROBES)
    assert stepped is not before
    assert trace_forward(model, batch())[0].completeness().ok
    merge(model)
    assert probes(wrapper, PROBES) is not stepped
    assert torch.allclose(probes(wrapper, PROBES).inputs, stepped.inputs, atol=1e-5)
    assert trace_forward(model, batch())[0].completeness().ok


def test_an_adapter_whose_dropout_is_active_is_recomputed_not_product_checked() -> None:
    """In train mode an adapter with dropout > 0 draws a new mask every call, so its output is no
    fixed map of its input: no probe stands in for it. In eval mode, or at p = 0, it is affine."""
    model = adapted_model(dropout=0.1)
    wrapper = model.layers[0].attn.q
    assert affine(wrapper) is wrapper
    model.train()
    assert affine(wrapper) is None
    table = identities(model, layout_for(model.config))
    assert table["layers.0.q"].linear is None and table["layers.0.k"].linear is model.layers[0].attn.k
    wrapper.lora_dropout.p = 0.0
    assert affine(wrapper) is wrapper


@settings(max_examples=40, deadline=None)
@given(
    widths=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    rank=st.integers(1, 4),
    alpha=st.floats(0.25, 16.0),
    bias=st.booleans(),
    merged=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_product_identity_holds_for_every_adapted_projection(
    widths: tuple[int, int], rank: int, alpha: float, bias: bool, merged: bool, seed: int
) -> None:
    """For any adapted projection and rows x, its output y satisfies R·yᵀ = inputs·xᵀ + offset on its
    probes, up to float32 rounding: the identity the check relies on."""
    draws = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(*widths, bias=bias)
    wrapper = LoRALinear(base, rank, alpha, 0.0, False, draws).eval()
    with torch.no_grad():
        wrapper.lora_B.normal_(generator=draws)
        if merged:
            wrapper.merge()
        x = torch.randn(SAMPLE, widths[0], generator=draws)
        y = wrapper(x)
    made = probes(wrapper, PROBES)
    projected = made.outputs @ y.T
    expected = made.inputs @ x.T + made.offset
    assert torch.allclose(projected, expected, atol=1e-4 * (1 + float(y.abs().max())))


def _moe_model() -> torch.nn.Module:
    return tiny_model(moe_experts=4, moe_top_k=2)


@pytest.mark.holds("GATE-TRACE-002")
def test_a_mixtures_router_is_product_checked(checked_on: str) -> None:
    """A mixture's router, a plain nn.Linear of the tokens' rows, states its probes and holds."""
    trace, _ = trace_forward(_moe_model(), batch())
    assert trace.completeness().ok
    routers = {name: i for name, i in trace.identities.items() if name.endswith("moe.router")}
    assert len(routers) == 3 and all(i["probes"] == PROBES for i in routers.values())


def _expert_parts(name: str) -> list[str]:
    return [f"{name}.{part}" for part in ("gate", "up", "swiglu")]


@pytest.mark.holds("GATE-TRACE-002")
def test_an_expert_is_checked_through_its_parts(checked_on: str) -> None:
    """Each expert and the shared expert: its gate's and up's rows product-checked against its
    input's, the SwiGLU product recomputed from them against what its down projection read, and its
    site's rows product-checked as the down projection of that; each part an identity of its own."""
    model = tiny_model(moe_experts=4, moe_top_k=2, moe_shared_expert=True)
    trace, _ = trace_forward(model, batch())
    assert trace.completeness().ok
    experts = [f"layers.{i}.moe.expert{e}" for i in range(3) for e in range(4)]
    for name in [*experts, "layers.1.moe.shared"]:
        identities = {part: trace.identities[part] for part in [name, *_expert_parts(name)]}
        assert [("probes" in i) for i in identities.values()] == [True, True, True, False], name
        assert len({(i["rows"], i["rows_checked"]) for i in identities.values()}) == 1


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
@pytest.mark.parametrize(
    ("site", "model"),
    [
        ("layers.1.v", adapted_model),
        ("layers.1.moe.router", _moe_model),
        ("layers.2.moe.expert1", _moe_model),
    ],
    ids=["adapted projection", "router", "expert"],
)
def test_a_scaled_adapted_router_or_expert_site_is_caught_with_probability_1(
    monkeypatch: pytest.MonkeyPatch, checked_on: str, site: str, model: Any, times: float, fires: bool
) -> None:
    """Fault class 'module off by a scale' on each kind of site product-checked beside the plain
    projections (an adapted projection, whose probes carry the adapter's term; a router; an
    expert, by its down projection's check against what that read): just beyond
    site_identity_rtol fires, inside holds with the scale's deviation."""
    seen_as(monkeypatch, site, _scaled(times))
    if fires:
        with pytest.raises(GateViolation, match=rf"{re.escape(site)} differs"):
            trace_forward(model(), batch())
        return
    measured = trace_forward(model(), batch())[0].completeness().measured["identities"][site]
    assert measured["max_abs_diff"] == pytest.approx(times * RTOL * measured["ref_absmax"], rel=0.01)
    assert measured["probes"] == PROBES


@pytest.mark.gate("GATE-TRACE-002")
def test_an_expert_showing_another_experts_output_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault class 'another tensor': expert 0's site shows expert 1's output on the same tokens (a
    hook on the wrong expert), the same size and kind of values."""
    model = _moe_model()
    other = model.layers[1].feed_forward.experts[1]
    routed: dict[str, torch.Tensor] = {}
    model.layers[1].feed_forward.experts[0].register_forward_pre_hook(lambda _m, a: routed.update(x=a[0]))
    seen_as(monkeypatch, "layers.1.moe.expert0", lambda _output: other.forward(routed["x"]))
    with pytest.raises(GateViolation, match=r"layers\.1\.moe\.expert0 differs"):
        trace_forward(model, batch())


@pytest.mark.holds("GATE-TRACE-002")
def test_an_expert_whose_parts_were_not_shown_is_recomputed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the forward did not show every part (an expert that computes otherwise), the expert is
    recomputed by its module on its sampled rows, and holds; `--verify` recomputes every expert whole."""
    real = SiteIdentities._tap

    def without_up(self: SiteIdentities, name: str, part: str, read: str) -> Any:
        return (lambda *_: None) if part == "up" else real(self, name, part, read)

    monkeypatch.setattr(SiteIdentities, "_tap", without_up)
    trace, _ = trace_forward(_moe_model(), batch())
    assert trace.completeness().ok
    expert = trace.identities["layers.0.moe.expert0"]
    assert "probes" not in expert and expert["rows_checked"] == min(expert["rows"], SAMPLE)
    assert not any(name.endswith(".swiglu") for name in trace.identities)
    monkeypatch.undo()
    verified, _ = trace_forward(_moe_model(), batch(), exhaustive=True)
    assert not any(name.endswith((".gate", ".up", ".swiglu")) for name in verified.identities)


def test_a_mixtures_record_holds_with_its_experts_parts(tmp_path: Path) -> None:
    """`stack trace` of a mixture's run: the record, whose identities include the experts' parts
    (no sites of their own), holds under the integrity check."""
    run = save_run(tmp_path / "run", tiny_model(moe_experts=4, moe_top_k=2, moe_shared_expert=True))
    out = tmp_path / "rec"
    assert main(["trace", str(run), "--prompt", "x" * 30, "--out", str(out)]) == 0
    assert findings(out) == []
    record = json.loads((out / EVIDENCE_FILE).read_text(encoding="utf-8"))
    (gate,) = [g for g in record["gates"] if g["id"] == "GATE-TRACE-002"]
    assert "layers.0.moe.shared.swiglu" in gate["measured"]["identities"]
