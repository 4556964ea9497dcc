"""GATE-TRACE-003's anomaly rule on healthy models, and on the same models with faults planted.

A trace that calls a healthy model broken sends its reader after a bug that is not there: a
healthy 110 M run traced as an anomaly at layers.0.ffn_out (13.2 times the median of the other
layers by std), a healthy two-layer `tiny` one at layers.0.attn_out (12.3 times), a healthy
`demo`-shaped one at layers.1.ffn_out (14.1 times), a LoRA fine-tune of one at its last block's
output (18.9 times). The sites a block computes by its weights are judged by their gains over the
sites they read, layer 0's as every layer's; a mixture's layer-0 write and the last block's output
have roles of their own (contracts.trace_anomaly). The suite
trains each CPU preset's shape (smoke, tiny, demo) for a few steps on the standard library, traces
its early, middle and late checkpoints, and holds them to no anomaly; the same checkpoints with a
weight scaled still name the planted site first. The `small`, `base` and `gpt2` shapes, too slow to
train here, the `base` reference run, trained on a GPU, and fine-tunes of a `demo`-shaped model,
whole and through LoRA adapters, are held to the same rule from their statistics.
"""

from __future__ import annotations

import json

import pytest
import torch

from contracts.judges import judge
from contracts.spec import load_spec
from contracts.trace_anomaly import (
    BLOCK_INPUT,
    FIRST_ATTENTION_SINCE,
    FIRST_MLP,
    GAIN_READS,
    GAINS_SINCE,
    LAST_OUTPUT,
    anomalies,
    not_judged,
    read_site,
    site_baselines,
)
from stack.model import GPT, ModelConfig
from stack.trace.anomaly import find_anomalies, judged_sites, site_stats
from stack.trace.sites import site_names
from stack.trace.tracer import trace_forward
from tests.support.healthy import (
    SLOW_SHAPES,
    STEPS,
    corpus,
    fixture_path,
    planted,
    prompt_of,
    trained,
)
from tests.support.ledger_support import RECORDS
from tests.support.paths import TESTS

# The `stack trace` record of the `base` reference run, a fixture (tests/fixtures/records).
BASE_REFERENCE_TRACE = "trace-20261127T153158"
# The block sites' statistics of a healthy `demo`-shaped model whose first two blocks write large
# (trained as tests.support.healthy.trained trains, 100 steps on this repository's docs/*.md of
# commit 5d82828, traced on bytes 1000-1063 of them), and of the same model with one weight scaled
# 16-fold, by the site the fault acts at: by std its second MLP write was an anomaly (14.1x), the
# layer-2 down projection went unnamed and the layer-3 value projection was named second.
EARLY_WRITERS = json.loads((TESTS / "fixtures" / "early_writers.json").read_text(encoding="utf-8"))
# The block sites' statistics of a healthy `demo`-shaped mixture of 4 experts (top 2), trained as
# `trained` trains with moe_experts=4 on the same text and traced on the same prompt, at steps 30
# and 100, and at step 100 with expert 0 of layer 2 scaled 16-fold (its down projection): its
# layer-0 experts write as large as its moe_out (12.6 and 27.7 times by std).
MIXTURE = json.loads((TESTS / "fixtures" / "healthy_mixture.json").read_text(encoding="utf-8"))
# The block sites' statistics of a healthy `demo`-shaped model with a mixture-of-depths block every
# second block (routers in layers 1 and 3), trained 150 steps of a 400-step `stack train` run on
# `stack prepare --default`'s corpus and traced on "        x = y + 1", and of the same model with
# layer 3's router weight scaled 16-fold: by std its layer-3 router stood at 8.11 times layer 1's.
ROUTERS = json.loads((TESTS / "fixtures" / "healthy_routers.json").read_text(encoding="utf-8"))
# The block sites' statistics of a healthy `demo`-shaped model with differential attention (its q2,
# k2 and attn_head_norm sites besides the dense model's), trained by AdamW at 2e-3 (weight decay
# 0.1, gradients clipped at 1) on batches of 8 × 128 bytes of this repository's docs at commit
# 31c59ab, traced on bytes 5000-5127 of them at steps 150 and 400, and at step 400 with one weight
# scaled 16-fold, by the site it writes: layer 1's q2, layer 2's k2 and o projection, layer 3's v.
DIFF_ATTENTION = json.loads((TESTS / "fixtures" / "healthy_diff_attention.json").read_text(encoding="utf-8"))
# The block sites' statistics of three fine-tunes of one healthy `demo`-shaped model (`stack train
# --preset demo --set train.steps=300` on `stack prepare --default`'s corpus), each on 500 chat
# examples (a user's "What does M.F do?" and the first line of F's docstring as the assistant's
# answer, for the functions of os, json, random, textwrap and inspect; `stack prepare --format
# chat --tokenizer` the base): `stack sft --preset demo` whole ("full-1200": 1,200 steps), and with
# LoRA adapters (r 8, targets q,k,v,ffn_*) for 1,200 and 3,000 steps; each traced by `stack trace
# RUN --prompt P`, keyed "<fine-tune> <P>". The LoRA fine-tune's last block writes large: its
# output stood at 18.9 times the other blocks' by std on "What does os.path do?".
FINETUNED = json.loads((TESTS / "fixtures" / "healthy_finetuned.json").read_text(encoding="utf-8"))
# The block sites' statistics of the presets' shapes that train too slowly for the suite
# (tests.support.healthy writes them): `small` (6 × 384) healthy at steps 10 to 1,000, `base`
# (10 × 512) to 300 and `gpt2` (12 × 768) to 100, and each one's last checkpoint with each of
# `faults` planted at twice gain_std_multiple, by the site the weight writes.
SLOW = {preset: json.loads(fixture_path(preset).read_text(encoding="utf-8")) for preset in SLOW_SHAPES}
K = float(load_spec().threshold("GATE-TRACE-003", "anomaly_std_multiple"))
FIRST_MLP_K = float(load_spec().threshold("GATE-TRACE-003", "first_mlp_std_multiple"))
GAIN_K = float(load_spec().threshold("GATE-TRACE-003", "gain_std_multiple"))
ROUTER_K = float(load_spec().threshold("GATE-TRACE-003", "router_gain_std_multiple"))
LAST_OUTPUT_K = float(load_spec().threshold("GATE-TRACE-003", "last_output_std_multiple"))


@pytest.fixture(scope="module")
def healthy() -> dict[tuple[str, int], GPT]:
    """Every CPU preset's shape, trained, at its early, middle and late checkpoints."""
    data = corpus()
    return {
        (preset, step): model
        for preset in ("smoke", "tiny", "demo")
        for step, model in trained(preset, data).items()
    }


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return prompt_of(corpus())


def _trace(model: GPT, prompt: torch.Tensor) -> tuple[list[str], object]:
    trace, _ = trace_forward(model, prompt)
    return site_names(model.config.n_layers), trace


@pytest.mark.holds("GATE-TRACE-003")
def test_no_healthy_checkpoint_has_an_anomaly(
    healthy: dict[tuple[str, int], GPT], prompt: torch.Tensor
) -> None:
    for (preset, step), model in healthy.items():
        names, trace = _trace(model, prompt)
        found = find_anomalies(trace, names)
        assert found == [], f"{preset} at step {step}: {[(a.name, round(a.ratio, 1)) for a in found]}"


def _named_by_the_judge(stats: dict[str, dict[str, float]]) -> list[str]:
    """The anomalies GATE-TRACE-003's judge names from a trace's block-site statistics, in order."""
    found = anomalies(stats, list(stats), lambda b: bool(judge("GATE-TRACE-003", b.measured())))
    return [a.name for a in found]


@pytest.mark.holds("GATE-TRACE-003")
def test_a_healthy_model_whose_early_blocks_write_large_has_no_anomaly() -> None:
    """Its second block's MLP write stands at 14.1 times the last two blocks' by std, and its gain
    at about twice theirs: no anomaly."""
    stats = EARLY_WRITERS["healthy"]
    by_std = [
        b for b in site_baselines(stats, list(stats), FIRST_ATTENTION_SINCE) if b.name == "layers.1.ffn_out"
    ]
    assert by_std[0].ratio > K
    assert _named_by_the_judge(stats) == []


# The faults planted in the healthy models the fixtures keep, each as (its model's block-site
# statistics with the fault, the site whose weight was scaled 16-fold): in the model whose early
# blocks write large a down projection in layer 2, an up projection in layer 2 and a value
# projection in layer 3; in the mixture expert 0 of layer 2 (its down projection, at step 100); in
# the mixture-of-depths model layer 3's router; in each slow shape's last checkpoint each of its
# `faults`.
PLANTED = {
    **{
        f"early-writers-{site}": (EARLY_WRITERS[site], site)
        for site in sorted(set(EARLY_WRITERS) - {"healthy"})
    },
    "mixture-expert": (MIXTURE["layers.2.moe.expert0"], "layers.2.moe.expert0"),
    "depth-router": (ROUTERS["layers.3.router"], "layers.3.router"),
    **{
        f"diff-attention-{site}": (DIFF_ATTENTION[site], site)
        for site in sorted(DIFF_ATTENTION)
        if not site.startswith("healthy")
    },
    **{
        f"{preset}-{site}": (stats, site)
        for preset, kept in SLOW.items()
        for site, stats in kept.items()
        if not site.startswith("healthy")
    },
}


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_weight_scaled_in_a_healthy_models_statistics_is_named_first(planted: str) -> None:
    """Each fault of PLANTED is named first, at the site whose weight it is."""
    stats, site = PLANTED[planted]
    assert _named_by_the_judge(stats)[:1] == [site]


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize("step", ["healthy-30", "healthy-100"])
def test_a_healthy_mixtures_layer_0_experts_are_judged_by_their_role(step: str) -> None:
    """Each expert's output in layer 0 shares moe_out's role: no anomaly, where judging them at the
    common multiple (as revision 9 did) called the layer-0 experts anomalies."""
    stats = MIXTURE[step]
    before = [b.name for b in site_baselines(stats, list(stats), FIRST_ATTENTION_SINCE) if b.ratio > K]
    assert any(name.startswith("layers.0.moe.expert") for name in before)
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert judged["layers.0.moe.expert0"].role is FIRST_MLP
    assert _named_by_the_judge(stats) == []


@pytest.mark.holds("GATE-TRACE-003")
def test_a_healthy_routers_gain_over_the_residual_stream_it_reads_is_no_anomaly() -> None:
    """The layer-3 router reads a larger stream than layer 1's: by std (revision 10) an anomaly, by
    its gain over the block's input (layer 2's output) within router_gain_std_multiple."""
    stats = ROUTERS["healthy"]
    by_std = {b.name: b for b in site_baselines(stats, list(stats), GAINS_SINCE)}
    assert by_std["layers.3.router"].ratio > K
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert judged["layers.3.router"].reads == (BLOCK_INPUT,) and judged["layers.3.router"].ratio < ROUTER_K
    assert _named_by_the_judge(stats) == []


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize("step", ["healthy-150", "healthy-400"])
def test_a_healthy_differential_attention_model_has_no_anomaly(step: str) -> None:
    """Its second query and key projections are judged by their gains over attn_norm, as q and k
    are, and its head norm by its std: no anomaly at either step."""
    stats = DIFF_ATTENTION[step]
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    for layer in range(4):
        for kind in ("q2", "k2"):
            assert judged[f"layers.{layer}.{kind}"].reads == GAIN_READS[kind]
        assert judged[f"layers.{layer}.attn_head_norm"].measure == "std"
    assert _named_by_the_judge(stats) == []


@pytest.mark.holds("GATE-TRACE-003")
def test_the_base_reference_runs_trace_has_no_anomaly_under_the_current_rule() -> None:
    """The `base` preset's reference run (10 × 512, 46 M parameters, 1,500 steps and 98 M tokens on a
    GPU with every gate live; the fixture copy of its `stack trace` record on 'def main():', judged
    under an earlier rule): the per-site statistics its trace.json keeps, judged again by the
    current rule, name no anomaly, and layer 0's feed-forward write is judged by its gain."""
    trace = json.loads((RECORDS / BASE_REFERENCE_TRACE / "trace.json").read_text(encoding="utf-8"))
    stats = trace["site_stats"]
    names = list(stats)
    assert {name.split(".")[1] for name in names if name.startswith("layers.")} == {str(i) for i in range(10)}
    found = anomalies(stats, names, lambda b: bool(judge("GATE-TRACE-003", b.measured())))
    assert found == [], [(a.name, round(a.ratio, 1)) for a in found]
    judged = {b.name: b for b in site_baselines(stats, names)}
    assert judged["layers.0.ffn_out"].role is None and judged["layers.0.ffn_out"].reads == ("ffn_swiglu",)


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize(
    ("preset", "step"), [(preset, step) for preset, steps in SLOW_SHAPES.items() for step in steps]
)
def test_the_slow_shapes_healthy_checkpoints_have_no_anomaly(preset: str, step: int) -> None:
    """The `small`, `base` and `gpt2` presets' shapes, trained as the suite trains the others."""
    assert _named_by_the_judge(SLOW[preset][f"healthy-{step}"]) == []


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize("traced", sorted(FINETUNED))
def test_healthy_fine_tunes_have_no_anomaly(traced: str) -> None:
    """A fine-tuned model is one of its family: whole or through LoRA adapters, early or late, on
    each prompt, no anomaly, the last block's output judged in its role."""
    stats = FINETUNED[traced]
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert judged["layers.3.output"].role is LAST_OUTPUT
    assert _named_by_the_judge(stats) == []


def test_a_lora_fine_tunes_last_block_writes_beyond_the_pretrained_references() -> None:
    """What the role's multiple is calibrated on: the LoRA fine-tune's last block's output by std
    beyond twice anomaly_std_multiple, far past every pretrained reference (at most 4.4), while every
    sub-operation's gain stays within gain_std_multiple of its baseline."""
    stats = FINETUNED["lora-3000 What does os.path do?"]
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert 2 * K < judged["layers.3.output"].ratio < LAST_OUTPUT_K
    gains = [b for b in judged.values() if b.measure == "gain"]
    assert gains and max(b.ratio for b in gains) < GAIN_K


def test_the_layer_0_writes_of_healthy_checkpoints_are_judged_by_their_gains(
    healthy: dict[tuple[str, int], GPT], prompt: torch.Tensor
) -> None:
    """Layer 0's attention and MLP writes of every healthy checkpoint are judged as every layer's
    are, by their gains over the sites they read, with no role, and lie within gain_std_multiple."""
    ratios = {}
    for (preset, step), model in healthy.items():
        names, trace = _trace(model, prompt)
        for site in judged_sites(trace, names):
            if site.layer == 0 and site.site in ("attn_out", "ffn_swiglu", "ffn_out"):
                assert site.role is None and site.reads == GAIN_READS[site.site]
                ratios[(preset, step, site.name)] = site.ratio
    assert ratios and max(ratios.values()) < GAIN_K


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize(
    ("where", "layer", "times"),
    [
        ("ffn_up", 0, 2 * GAIN_K),
        ("ffn_up", 2, 2 * GAIN_K),
        ("ffn_gate", 0, 2 * GAIN_K),
        ("v", 3, 2 * GAIN_K),
        ("ffn_out", 0, 2 * GAIN_K),
        ("ffn_out", 2, 2 * GAIN_K),
    ],
)
def test_a_fault_planted_in_a_healthy_checkpoint_is_named(
    healthy: dict[tuple[str, int], GPT], prompt: torch.Tensor, where: str, layer: int, times: float
) -> None:
    """A projection's weight blown up is named first at its own site, in layer 0 as in any other:
    its gain alone moves, and the sites that read it keep theirs."""
    for step in STEPS:
        names, trace = _trace(planted(healthy[("demo", step)], where, layer, times), prompt)
        found = find_anomalies(trace, names)
        assert found and found[0].name == f"layers.{layer}.{where}", f"demo at step {step}: {found[:2]}"


def _stats(std: float, site: str, layer: int = 0) -> dict[str, dict[str, float]]:
    """Four layers' statistics of `site`, each at std 1 but `layer`'s, at `std`."""
    stds = [std if i == layer else 1.0 for i in range(4)]
    return {
        f"layers.{i}.{site}": {"count": 10.0, "std": x, "nan": 0.0, "inf": 0.0} for i, x in enumerate(stds)
    }


def _flagged(stats: dict[str, dict[str, float]]) -> list[str]:
    found = anomalies(stats, list(stats), lambda b: bool(judge("GATE-TRACE-003", b.measured())))
    return [a.name for a in found]


# A site judged by its std in a role, its block in a four-block model, and its role's multiple.
ROLE_SITES = {
    "a mixture's layer-0 write": ("moe_out", 0, FIRST_MLP_K),
    "the last block's output": ("output", 3, LAST_OUTPUT_K),
}


@pytest.mark.parametrize(
    ("multiple", "fires"),
    [
        pytest.param(1.5, True, marks=pytest.mark.gate("GATE-TRACE-003")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-TRACE-003")),
    ],
)
@pytest.mark.parametrize("role", sorted(ROLE_SITES))
def test_a_role_site_just_beyond_its_role_multiple_fires_and_just_inside_holds(
    role: str, multiple: float, fires: bool
) -> None:
    """A site judged by its std in its role (a mixture's layer-0 write, moe_out, at
    first_mlp_std_multiple; the last block's output at last_output_std_multiple) at 1.5 × its
    multiple is an anomaly, at 0.5 × (still beyond k) it is not."""
    site, layer, k = ROLE_SITES[role]
    assert 0.5 * k > K
    assert _flagged(_stats(multiple * k, site, layer)) == ([f"layers.{layer}.{site}"] if fires else [])


# A site judged by a gain, the read its gain is over (of block i: `read_site(i, read)`), its multiple.
GAINS = {
    "ffn_out": ("ffn_swiglu", GAIN_K),
    "router": (BLOCK_INPUT, ROUTER_K),
    "moe.router": ("ffn_norm", ROUTER_K),
}


@pytest.mark.parametrize(
    ("multiple", "fires"),
    [
        pytest.param(1.25, True, marks=pytest.mark.gate("GATE-TRACE-003")),
        pytest.param(0.8, False, marks=pytest.mark.holds("GATE-TRACE-003")),
    ],
)
@pytest.mark.parametrize("layer", [0, 2])
@pytest.mark.parametrize("site", sorted(GAINS))
def test_a_gain_just_beyond_its_multiple_fires_and_just_inside_holds(
    site: str, layer: int, multiple: float, fires: bool
) -> None:
    """A down projection's write (ffn_out over ffn_swiglu, at gain_std_multiple), or a router (at
    router_gain_std_multiple: a mixture-of-depths block's in every block, over its block's input,
    the embedding for block 0; a mixture of experts', over ffn_norm), whose gain is 1.25 × its
    multiple × the other layers' is an anomaly,
    in layer 0 as in a later one; at 0.8 × it is not, while its std stands at 100 × the other
    layers' (its read is as large: the early blocks' MLP writes of a healthy model, whichever blocks
    they are; the residual stream a deeper router reads)."""
    read, k = GAINS[site]
    stats = {}
    for i in range(4):
        std = 100.0 if i == layer else 1.0
        scale = std / (multiple * k) if i == layer else 1.0
        stats[read_site(i, read)] = {"count": 10.0, "std": scale, "nan": 0.0, "inf": 0.0}
        stats[f"layers.{i}.{site}"] = {"count": 10.0, "std": std, "nan": 0.0, "inf": 0.0}
    flagged = [n for n in _flagged(stats) if n.endswith(site)]
    assert flagged == ([f"layers.{layer}.{site}"] if fires else [])


def test_a_block_0_routers_gain_reads_the_embedding_which_the_report_keeps() -> None:
    """A mixture-of-depths block 0 reads the embedding: the statistics the report keeps hold it, and
    the router is judged by its gain over it."""
    shape = {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 64, "ctx": 32}
    model = GPT(ModelConfig(vocab=256, mod_every=1, **shape), seed=0).eval()
    trace, _ = trace_forward(model, torch.arange(32).unsqueeze(0))
    stats = site_stats(trace)
    assert "embed" in stats and "logits" not in stats
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert judged["layers.0.router"].reads == (BLOCK_INPUT,)
    assert judged["layers.0.router"].gain == stats["layers.0.router"]["std"] / stats["embed"]["std"]


def test_a_role_site_is_no_baseline_and_the_report_says_why_a_site_is_not_judged() -> None:
    """Two layers: layer 1's moe_out would be set against a mixture's layer-0 write alone, whose scale
    is its role's; it is not judged, and the reason is given. A gain site whose read is not traced
    is not judged either, and says which read."""
    stats = {
        f"layers.{i}.moe_out": {"count": 10.0, "std": s, "nan": 0.0, "inf": 0.0}
        for i, s in ((0, 20.0), (1, 1.0))
    }
    judged = {b.name: b for b in site_baselines(stats, list(stats))}
    assert set(judged) == {"layers.0.moe_out"} and judged["layers.0.moe_out"].role is FIRST_MLP
    assert "roles of their own" in not_judged(stats, list(stats))["layers.1.moe_out"]
    alone = _stats(1.0, "ffn_out")
    assert "ffn_swiglu" in not_judged(alone, list(alone))["layers.0.ffn_out"]
