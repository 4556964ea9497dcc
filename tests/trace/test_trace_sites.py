"""Site names are stable, parse back, and select as documented; anomaly mode finds a layer that stands out."""

from __future__ import annotations

import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.spec import load_spec
from stack.model.names import parse_layers
from stack.trace.anomaly import find_anomalies
from stack.trace.sites import LAYER_SITES, block_input, inputs_of, select, site_names, split
from stack.trace.tracer import trace_forward
from tests.support.trace_support import tiny_model, tokens


def test_names_are_the_documented_vocabulary() -> None:
    names = site_names(2)
    assert names[:3] == ["embed", "layers.0.attn_norm", "layers.0.q"]
    assert names[-3:] == ["layers.1.output", "final_norm", "logits"]
    assert "layers.1.ffn_swiglu" in names and len(names) == 2 * len(LAYER_SITES) + 3


@settings(max_examples=30)
@given(n_layers=st.integers(1, 40))
def test_every_name_splits_back_and_reads_only_earlier_sites(n_layers: int) -> None:
    names = site_names(n_layers)
    position = {name: i for i, name in enumerate(names)}
    for name in names:
        layer, site = split(name)
        assert (name == site) if layer is None else (name == f"layers.{layer}.{site}")
        assert all(position[source] < position[name] for source in inputs_of(name, n_layers))
    assert inputs_of("final_norm", n_layers) == (block_input(n_layers),)


@pytest.mark.parametrize("text", ["layers.x.q", "layers.1.qq", "ffn", ""])
def test_a_malformed_name_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="not a trace site"):
        split(text)


def test_selection_by_layers_and_glob() -> None:
    names = site_names(4)
    assert select(names, parse_layers("2-3", 4), "ffn_s*") == [
        "layers.2.ffn_silu", "layers.2.ffn_swiglu", "layers.3.ffn_silu", "layers.3.ffn_swiglu",
    ]  # fmt: skip
    assert select(names, parse_layers("1", 4), None)[:2] == ["embed", "layers.1.attn_norm"]
    assert select(names, None, "layers.0.*") == [n for n in names if n.startswith("layers.0.")]


@pytest.mark.parametrize(("text", "needle"), [("5", "outside"), ("2-1", "reversed"), ("a-b", "not a layer")])
def test_bad_layer_ranges_are_bad_input(text: str, needle: str) -> None:
    with pytest.raises(BadInput, match=needle):
        parse_layers(text, 4)


def test_a_glob_that_matches_nothing_is_bad_input() -> None:
    with pytest.raises(BadInput, match="matches no site"):
        select(site_names(2), None, "ffn_nope*")


@pytest.mark.gate("GATE-TRACE-003")
@settings(max_examples=6)
@given(layer=st.integers(0, 3), site=st.sampled_from(["ffn_up", "v", "ffn_gate"]))
def test_anomaly_mode_names_the_layer_that_stands_out(layer: int, site: str) -> None:
    model = tiny_model(n_layers=4)
    names = site_names(4)
    trace, _ = trace_forward(model, tokens())
    assert find_anomalies(trace, names) == []
    k = load_spec().threshold("GATE-TRACE-003", "gain_std_multiple")
    linear = {"ffn_up": model.layers[layer].ffn.up, "v": model.layers[layer].attn.v}.get(
        site, model.layers[layer].ffn.gate
    )
    with torch.no_grad():
        linear.weight *= 2 * k  # a layer whose weights blew up
    found = find_anomalies(trace_forward(model, tokens())[0], names)
    first = found[0]
    assert first.name == f"layers.{layer}.{site}"
    assert first.ratio > k and first.baseline_layers == tuple(j for j in range(4) if j != layer)


def _measure(trace: object, layer: int, site: str) -> float:
    """What the rule compares `site` of `layer` by: ffn_up its gain over ffn_norm, ffn_norm its std."""
    std = trace.stat(f"layers.{layer}.{site}", "std")
    return std / trace.stat(f"layers.{layer}.ffn_norm", "std") if site == "ffn_up" else std


def _flagged_at(site: str, multiple: float) -> bool:
    """Whether anomaly mode flags the last layer's `site` at `multiple` × the other layers' median.

    ffn_up is a linear of a normed input and ffn_norm a norm, so each one's measure scales exactly
    with its weight; in the last layer the plant changes no other layer's statistics, so the median
    stays where it was measured.
    """
    model = tiny_model(n_layers=4)
    clean, _ = trace_forward(model, tokens())
    median = statistics.median(_measure(clean, j, site) for j in range(3))
    module = model.layers[3].ffn.up if site == "ffn_up" else model.layers[3].ffn_norm
    with torch.no_grad():
        module.weight *= multiple * median / _measure(clean, 3, site)
    found = find_anomalies(trace_forward(model, tokens())[0], site_names(4))
    return f"layers.3.{site}" in {anomaly.name for anomaly in found}


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize("site", ["ffn_up", "ffn_norm"])
def test_a_site_at_12_times_the_median_is_an_anomaly_and_one_at_6_is_not(site: str) -> None:
    """gain_std_multiple (a projection, by its gain) and anomaly_std_multiple (a norm, by its std) are
    8; 12 and 6 lie strictly inside its double and its half.

    So a multiple widened or narrowed twofold (or set to 1000) turns this red.
    """
    assert _flagged_at(site, 12.0)
    assert not _flagged_at(site, 6.0)


def test_a_nonfinite_site_is_an_anomaly_whatever_its_std() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.layers[2].ffn.down.weight[0, 0] = float("nan")
    found = find_anomalies(trace_forward(model, tokens())[0], site_names(3))
    assert found[0].name == "layers.2.ffn_out" and found[0].nonfinite
