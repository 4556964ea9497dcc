"""`stack trace` end to end on checkpoints on disk: exit codes, outputs, evidence, bad input."""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.derive import Artifacts, Inputs, derive
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from contracts.trace_anomaly import SiteBaseline, site_baselines
from stack.cli import main
from stack.trace import modes
from stack.trace.anomaly import is_anomaly, judged_sites, site_stats
from stack.trace.sites import TRACE_SCHEMA_VERSION, layout_for
from stack.trace.tracer import Trace
from tests.support.ledger_support import assert_caught, edited, gate
from tests.support.trace_support import save_run, swap_sites, tiny_model
from tools.integrity.models.trace_tokens import trace_token_problems

PROMPT = "the gate fired at layer one"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run, a run with ffn.up of layer 1 edited, one whose layer 2 makes an Inf, a two-layer
    run whose layer 1 ffn.up is 30 times its trained size, and a two-layer run whose FFNs both
    write ten times more than they did (as a trained model's first FFN outweighs its embedding)."""
    root = tmp_path_factory.mktemp("runs")
    model = tiny_model()
    save_run(root / "good", model)
    with torch.no_grad():
        model.layers[1].ffn.up.weight[7] *= 30
    save_run(root / "edited", model)
    with torch.no_grad():
        model.layers[2].ffn.gate.weight[0] = float("inf")
    save_run(root / "inf", model)
    blown = tiny_model(n_layers=2)
    with torch.no_grad():
        blown.layers[1].ffn.up.weight *= 30  # two layers, one blown up
    save_run(root / "blown", blown)
    heavy = tiny_model(n_layers=2)
    with torch.no_grad():  # a trained two-layer model's shape: FFNs that write far more than the embedding
        for layer in heavy.layers:
            layer.ffn.down.weight *= 10
    save_run(root / "ffn-heavy", heavy)
    return {name: root / name for name in ("good", "edited", "inf", "blown", "ffn-heavy")}


def trace(*argv: str | Path) -> int:
    return main(["trace", *map(str, argv)])


def records(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "traces").glob("*/metadata.json"))


def test_a_clean_model_exits_0_with_its_table_and_a_record_beside_the_run(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(records(runs["good"]))
    assert trace(runs["good"], "--prompt", PROMPT, "--layers", "1-2", "--sites", "ffn_*") == 0
    out = capsys.readouterr().out
    assert "ffn_swiglu" in out and "layer 2" in out and "layer 0" not in out and "attn_norm" not in out
    assert "verdict: clean" in out
    written = records(runs["good"])
    assert len(written) == before + 1
    record = read_evidence(written[-1])
    assert record.run.kind == "trace" and record.metrics["verdict"] == "clean"
    assert record.metrics["trace_schema_version"] == TRACE_SCHEMA_VERSION
    verdicts = {g.id: g.verdict.value for g in record.gates}
    # the checkpoint was verified too, and the anomalies named re-derived from the sites (GATE-TRACE-003)
    assert verdicts == {"GATE-CKPT-002": "PASS", "GATE-TRACE-002": "PASS", "GATE-TRACE-003": "PASS"}
    assert len(record.metrics["per_layer"]) == 3 and record.artifacts[0].path == "trace.json"


@pytest.mark.gate("GATE-TRACE-002")
def test_a_trace_with_the_q_and_k_sites_swapped_exits_3_with_a_halted_record(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the hook table registers attn.k's output as `q` and attn.q's as `k`; the
    trace is complete and plausible, and each of the two is off its own projection of attn_norm."""
    swap_sites(monkeypatch, {"q": "k", "k": "q"})
    before = len(records(runs["good"]))
    assert trace(runs["good"], "--prompt", PROMPT) == 3
    assert "gate fired: GATE-TRACE-002" in capsys.readouterr().err
    record = read_evidence(records(runs["good"])[before])
    assert record.run.status.value == "halted"
    (result,) = [g for g in record.gates if g.id == "GATE-TRACE-002"]
    assert (
        result.verdict.value == "FAIL" and "layers.0.q" in result.message and "layers.0.k" in result.message
    )


def _with_own_layer(trace: Trace, names: list[str]) -> list[SiteBaseline]:
    """Planted: each site's baseline the median of the same site over every layer,
    its own included (the `j != layer` exclusion dropped), so a layer that blew up hides."""
    found = []
    for judged in judged_sites(trace, names):
        layers = tuple(sorted((*judged.baseline_layers, judged.layer)))
        baseline = statistics.median(trace.stat(f"layers.{j}.{judged.site}", "std") for j in layers)
        planted = replace(judged, baseline=baseline, baseline_layers=layers, ratio=judged.std / baseline)
        if is_anomaly(planted):
            found.append(planted)
    return found


@pytest.mark.gate("GATE-TRACE-003")
def test_a_baseline_that_takes_in_the_sites_own_layer_stops_the_trace(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: with the edited layer in its own baseline, the report said clean (exit 0).
    The anomalies named are derived again from the sites' statistics, and the gate fires."""
    monkeypatch.setattr(modes, "find_anomalies", _with_own_layer)
    assert trace(runs["blown"], "--prompt", PROMPT, "--out", tmp_path / "rec") == 3
    assert "gate fired: GATE-TRACE-003" in capsys.readouterr().err
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    (result,) = [g for g in record.gates if g.id == "GATE-TRACE-003"]
    assert record.run.status.value == "halted" and result.verdict.value == "FAIL"
    assert "layers.1.ffn_up" in result.message


def _embedding_stream_as_baseline(trace: Trace, names: list[str]) -> list[SiteBaseline]:
    """Rev 6's rule planted: layer 0's attn_residual, the embedding's stream, stands in the baseline
    of layer 1's attn_residual."""
    return [site for site in site_baselines(site_stats(trace), names, revision=6) if is_anomaly(site)]


@pytest.mark.gate("GATE-TRACE-003")
def test_the_embedding_stream_is_no_baseline_for_a_stream_a_block_wrote_into(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every trained two-layer `tiny` model traced as an anomaly at layers.1.attn_residual (8.6 to
    9.2 times layer 0's): layer 0's stream is the embedding plus one attention's write, and the
    first FFN's write dwarfs it. Two FFNs both writing ten times more trace clean, layer 0's
    attn_residual judged against layer 1's and kept out of its baseline; with it back in the
    baseline the report names layers.1.attn_residual and the gate halts the trace."""
    assert trace(runs["ffn-heavy"], "--prompt", PROMPT, "--out", tmp_path / "clean") == 0
    assert "verdict: clean" in capsys.readouterr().out
    report = json.loads((tmp_path / "clean" / "trace.json").read_text())
    baselines = {b["name"]: b["baseline_layers"] for b in report["baselines"]}
    assert baselines["layers.0.attn_residual"] == [1] and "layers.1.attn_residual" not in baselines
    monkeypatch.setattr(modes, "find_anomalies", _embedding_stream_as_baseline)
    assert trace(runs["ffn-heavy"], "--prompt", PROMPT, "--out", tmp_path / "planted") == 3
    assert "gate fired: GATE-TRACE-003" in capsys.readouterr().err
    (result,) = [
        g for g in read_evidence(tmp_path / "planted" / "metadata.json").gates if g.id == "GATE-TRACE-003"
    ]
    assert result.verdict.value == "FAIL" and "layers.1.attn_residual" in result.message


def _derived_problems(rec: Path) -> list[str]:
    """What tools/check_integrity.py derives from a trace record's artifacts (contracts.derive)."""
    record = read_evidence(rec / "metadata.json")
    artifacts = Artifacts(rec, [a.path for a in record.artifacts])
    return derive(record.run.kind, Inputs(record, artifacts, load_spec())).problems


def _said_clean(report: dict[str, Any]) -> None:
    report.update(verdict="clean", first=None, anomalies=[])
    for row in report["per_layer"]:
        row["anomalies"] = []


def _own_layer_in_baselines(report: dict[str, Any]) -> None:
    for row in report["baselines"]:
        row["baseline_layers"] = sorted({*row["baseline_layers"], int(row["name"].split(".")[1])})


def _blown_site_restated(report: dict[str, Any]) -> None:
    report["site_stats"]["layers.1.ffn_up"]["std"] = report["site_stats"]["layers.0.ffn_up"]["std"]


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        (_said_clean, "it names anomalies [], but GATE-TRACE-003's rule"),
        (_own_layer_in_baselines, "never its own"),
        (_blown_site_restated, "site_stats[layers.1.ffn_up] is"),
    ],
)
def test_a_trace_record_tampered_to_hide_its_anomaly_is_refused_by_the_checker(
    runs: dict[str, Path], tmp_path: Path, tamper: Callable[[dict[str, Any]], None], said: str
) -> None:
    """The edited layer's anomaly, as the unmutated trace names it, derives again from the record's
    own statistics; the same record rewritten to say clean, with each baseline over its own layer,
    or with the statistics its baselines read restated, is refused (benign: the record as written
    derives without a problem)."""
    rec = tmp_path / "rec"
    assert trace(runs["blown"], "--prompt", PROMPT, "--out", rec) == 3
    report = json.loads((rec / "trace.json").read_text())
    assert report["verdict"] == "anomaly" and report["first"] == "layers.1.ffn_up"
    assert _derived_problems(rec) == []
    tamper(report)
    (rec / "trace.json").write_text(json.dumps(report))
    assert any(said in problem for problem in _derived_problems(rec))


def test_against_names_the_edited_site_and_exits_3(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        runs["good"],
        "--prompt",
        PROMPT,
        "--against",
        runs["edited"],
        "--shadow",
        "--out",
        tmp_path / "rec",
    ]
    assert trace(*argv, "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv") == 3
    out = capsys.readouterr().out
    assert "FIRST DIVERGENCE: layers.1.ffn_up (layer 1, site ffn_up)" in out
    assert "minimum tolerance that passes" in out and "yes, at ffn_up" in out and "no, inherited" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["trace_schema_version"] == TRACE_SCHEMA_VERSION and report["first"] == "layers.1.ffn_up"
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert rows[0]["trace_schema_version"] == str(TRACE_SCHEMA_VERSION)
    assert next(r["name"] for r in rows if r["passed"] == "False") == "layers.1.ffn_up"
    assert read_evidence(tmp_path / "rec" / "metadata.json").metrics["first"] == "layers.1.ffn_up"


def test_another_backend_and_dtype_of_the_same_weights_agree(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    assert (
        trace(runs["good"], "--prompt", PROMPT, "--backend-b", "naive", "--dtype-b", "bf16", "--out", out)
        == 0
    )
    assert "paths agree at all 42 compared sites" in capsys.readouterr().out


def test_dumps_made_apart_are_bisected_together(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert trace(runs["good"], "--prompt", PROMPT, "--dump", a, "--out", tmp_path / "ra") == 0
    assert (
        trace(runs["edited"], "--prompt", PROMPT, "--dtype", "bf16", "--dump", b, "--out", tmp_path / "rb")
        == 0
    )
    evidence = tmp_path / "evidence"
    assert trace("--compare", a, b, "--evidence-dir", evidence) == 3
    assert "FIRST DIVERGENCE: layers.1.ffn_up" in capsys.readouterr().out
    (record,) = evidence.glob("trace-*/metadata.json")
    assert read_evidence(record).run.id == record.parent.name  # a ledger entry: directory = run id


def test_stop_on_nonfinite_names_the_producer(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace(runs["inf"], "--prompt", PROMPT, "--stop-on-nonfinite", "--out", tmp_path / "rec") == 3
    out = capsys.readouterr().out
    assert "first produced at layers.2.ffn_gate" in out and "passed on by" in out


def test_ablation_reports_the_damage_and_exits_0(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [runs["good"], "--prompt", PROMPT, "--ablate", "layers.0.ffn_out", "--sample", "4"]
    assert trace(*argv, "--out", tmp_path / "rec") == 0
    out = capsys.readouterr().out
    assert (
        "ABLATION: layers.0.ffn_out zeroed" in out and "next-token argmax changes" in out and "ablated" in out
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_an_ablation_record_edited_to_other_counts_is_caught(runs: dict[str, Path], tmp_path: Path) -> None:
    """The numbers GATE-TRACE-003's check `ablation` held to the kept tensors are trace.json's: a
    record whose changed argmaxes, or one layer's output change, are edited (the recomputed twin
    with it, so the judge still passes) is named."""
    out = tmp_path / "rec"
    assert trace(runs["good"], "--prompt", PROMPT, "--ablate", "layers.0.ffn_out", "--out", out) == 0

    def edited_argmax(data: dict[str, Any], _run_dir: Path) -> None:
        measured = gate(data, "GATE-TRACE-003")["measured"]
        measured["argmax_changed_reported"] = measured["argmax_changed_recomputed"] = 0

    def edited_change(data: dict[str, Any], _run_dir: Path) -> None:
        measured = gate(data, "GATE-TRACE-003")["measured"]
        for side in ("reported", "recomputed"):
            measured[f"output_change_{side}"]["1"] *= 2

    assert_caught(edited(out, edited_argmax), "gates[GATE-TRACE-003].measured.argmax_changed_reported")
    assert_caught(edited(out, edited_change), "gates[GATE-TRACE-003].measured.output_change_reported")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give a checkpoint"),
        (["{good}"], "non-empty --prompt"),
        (["{good}", "--prompt", "x", "--shadow"], "--shadow needs a path B"),
        (["{good}", "--prompt", "x", "--layers", "7"], "outside the model's layers"),
        (
            ["{good}", "--prompt", "x", "--layers", "1-0"],
            "--layers '1-0' is reversed: give LOW-HIGH, e.g. --layers 0-1",
        ),
        (["{good}", "--prompt", "x", "--sites", "nope"], "matches no site"),
        (["{good}", "--prompt", "x", "--atol", "1e-3"], "apply to a bisection"),
        (["{good}", "--prompt", "x", "--backend-b", "naive", "--atol", "q=x"], "--atol"),
        (["{good}", "--prompt", "x", "--ablate", "layers.0.attn_residual"], "not replaceable"),
        (["{good}", "--prompt", "x" * 40], "shorten --prompt"),
        (["{good}", "--prompt", "x", "--stat", "median"], "not a statistic"),
        (["--compare", "{good}/a.json", "{good}/b.json"], "needs a trace dump"),
        (["{good}/nothing", "--prompt", "x"], "needs a run directory or checkpoint"),
        (["{good}", "--prompt", "x", "--out", "{good}/o", "--evidence-dir", "{good}/e"], "give one"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path], argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace(*(a.format(good=runs["good"]) for a in argv)) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("changes_a", "changes_b", "needle"),
    [
        ({"moe_experts": 4, "moe_top_k": 2}, {}, "moe_experts 4 vs 0"),
        ({}, {"moe_experts": 4, "moe_top_k": 2}, "moe_experts 0 vs 4"),
        ({"diff_attn": True}, {}, "diff_attn True vs False"),
        ({"mod_every": 1, "mod_capacity": 0.5}, {}, "mod_every 1 vs 0"),
        ({}, {"n_layers": 2}, "has 2 blocks and path A 3"),
        ({"n_layers": 2}, {"n_layers": 2, "mod_every": 1, "mod_capacity": 0.5}, "mod_every 0 vs 1"),
    ],
)
def test_against_a_checkpoint_of_other_blocks_is_refused_before_either_path_runs(
    tmp_path: Path,
    changes_a: dict[str, object],
    changes_b: dict[str, object],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another option or depth has other sites: one line naming what differs and what to do, exit 2
    and no record (the calibration of both paths crashed on the missing sites, exit 1)."""
    save_run(tmp_path / "a", tiny_model(**changes_a))
    save_run(tmp_path / "b", tiny_model(seed=1, **changes_b))
    for _ in range(3):  # the crash depended on which path's calibration came first
        assert trace(tmp_path / "a", "--prompt", PROMPT, "--against", tmp_path / "b") == 2
        err = capsys.readouterr().err
        assert needle in err and "trace each alone" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert records(tmp_path / "a") == []


def test_two_paths_of_other_layouts_are_refused_not_calibrated() -> None:
    """The bisection's own check runs before either path is calibrated against fp64."""
    from contracts.errors import BadInput
    from stack.trace.calibrate import TracePath
    from stack.trace.modes import two_paths
    from stack.trace.sites import site_names
    from tests.support.trace_support import tokens

    dense, routed = tiny_model(), tiny_model(mod_every=1, mod_capacity=0.5)
    names = site_names(3, layout_for(dense.config))
    a, b = TracePath(dense, "sdpa", "fp32", "a"), TracePath(routed, "sdpa", "fp32", "b")
    for first, second in ((a, b), (b, a)):
        with pytest.raises(BadInput, match="different sites"):
            two_paths(first, second, tokens(), names, [], shadow=False, stop_on_nonfinite=False)


# -- GATE-TRACE-002 check statistics: the statistics kernels held to the statistics' definitions ----


def _absmax_as_max(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU kernel's row of every float32 site with absmax = max, planted on
    the result of the wrapper the statistics call (the kernel itself is C)."""
    from stack.trace import stats

    real = stats.host_site_stats

    def planted(tensor: torch.Tensor, **options: Any) -> torch.Tensor | None:
        row = real(tensor, **options)
        if row is not None:
            row = row.clone()
            row[4] = row[3]  # absmax := max
        return row

    monkeypatch.setattr(stats, "host_site_stats", planted)


@pytest.mark.gate("GATE-TRACE-002")
def test_a_statistics_kernel_whose_absmax_is_the_max_stops_the_trace(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """absmax taken as max for every float32 site on the CPU: each sampled site whose most negative
    element outweighs its largest says absmax < −min, against itself and against its tensor."""
    _absmax_as_max(monkeypatch)
    out = tmp_path / "rec"
    assert trace(runs["good"], "--prompt", PROMPT, "--out", out) == 3
    assert "gate fired: GATE-TRACE-002" in capsys.readouterr().err
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-TRACE-002"]
    assert result.verdict.value == "FAIL" and "is not max(−min, max)" in str(result.message)
    assert "absmax" in str(result.message) and "recomputed" in str(result.message)


@pytest.mark.parametrize(
    ("times", "fires"),
    [
        pytest.param(1.01, True, marks=pytest.mark.gate("GATE-TRACE-002")),
        pytest.param(0.99, False, marks=pytest.mark.holds("GATE-TRACE-002")),
    ],
)
def test_a_mean_off_its_definition_just_beyond_statistics_rtol_fires_and_just_inside_holds(
    runs: dict[str, Path], tmp_path: Path, times: float, fires: bool
) -> None:
    """A clean trace's sampled statistics are their definitions'; one site's recorded mean moved by
    times × statistics_rtol × its absmax holds inside the tolerance and fires beyond it."""
    from contracts.judges import judge

    out = tmp_path / "rec"
    assert trace(runs["good"], "--prompt", PROMPT, "--out", out) == 0
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-TRACE-002"]
    measured = {k: result.measured[k] for k in ("stats_recorded", "stats_recomputed")}
    assert "logits" in measured["stats_recorded"]
    assert judge("GATE-TRACE-002", measured) == []
    rtol = load_spec().gate("GATE-TRACE-002").threshold_values["statistics_rtol"]
    site = measured["stats_recomputed"]["logits"]
    measured["stats_recorded"]["logits"]["mean"] = site["mean"] + times * rtol * site["absmax"]
    assert bool(judge("GATE-TRACE-002", measured)) is fires


@pytest.mark.gate("GATE-INTEG-001")
def test_a_trace_whose_absmax_is_not_the_larger_of_min_and_max_is_caught(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """trace.json's every site, sampled or not, is held to absmax = max(−min, max): a site edited
    there (and in the record, where the gate sampled it) is named by the checker."""
    out = tmp_path / "rec"
    assert trace(runs["good"], "--prompt", PROMPT, "--out", out) == 0

    def absmax_as_max(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "trace.json"
        report = json.loads(path.read_text())
        for site in report["trace"]["sites"]:
            if site["name"] == "layers.0.output":
                site["stats"]["absmax"] = site["stats"]["max"] = -site["stats"]["min"] / 2
        path.write_text(json.dumps(report))

    assert_caught(edited(out, absmax_as_max), "trace.json: site layers.0.output: absmax")


def test_a_chat_prompt_is_traced_on_its_special_tokens_ids(tmp_path: Path) -> None:
    """Trace encodes the ChatML markers typed into --prompt as the model's special ids, as
    `stack sample` does (Tokenizer.encode_prompt): config.tokens counts them, and the checker's
    re-derivation (tools/trace_tokens.py) encodes the prompt the same way."""
    from tokenizers import Tokenizer as Backend

    from tests.support.hf_fixtures import tiny_chatml_qwen2

    source = tiny_chatml_qwen2(tmp_path / "hf")
    assert main(["import-hf", str(source), "--out", str(tmp_path / "imported")]) == 0
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert trace(tmp_path / "imported", "--prompt", prompt, "--out", tmp_path / "rec") in (0, 3)
    expected = Backend.from_file(str(source / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    assert record.config["tokens"] == len(expected)
    # the checker encodes it as trace did
    assert trace_token_problems(record, tmp_path / "rec", load_spec()) == []
