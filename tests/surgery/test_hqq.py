"""`stack quantize --method hqq`: group-wise half-quadratic quantisation into a new run-like directory.

Falsifiers plant each bug in the stack's own code path: a zero-point search that moves the wrong
way (worse than round-to-nearest), a quantisation too coarse for the model whose weight error
still beats round-to-nearest (only the held-out KL sees it), and a writer that unties the head.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from contracts.errors import BadInput, GateViolation
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.model.targets import Target, select_targets
from stack.surgery import agreement, changes, hqq
from stack.surgery.hqq import HalfQuadratic, quantise
from stack.train.trained import load_trained
from tests.support.ledger_support import edited
from tests.support.trace_support import save_run, tiny_model
from tools.integrity.record_checks import check_record_truth

QUANTIZE = ["--targets", "ffn_*", "--group-size", "16"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer tied model saved as a run."""
    run = tmp_path_factory.mktemp("hqq") / "run"
    save_run(run, tiny_model())
    return run


def _results(out: Path) -> dict[str, tuple[str, object]]:
    return {g.id: (g.verdict.value, g.measured) for g in read_evidence(out / "metadata.json").gates}


# -- the clean path, through the real CLI -------------------------------------------------


@pytest.mark.holds("GATE-HQQ-001", "GATE-HQQ-002", "GATE-HQQ-003", "GATE-LASER-003")
def test_quantize_writes_a_run_on_the_grid(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["quantize", str(source), *QUANTIZE, "--bits", "4", "--out", str(out)]) == 0
    assert "held-out mean KL to the original" in capsys.readouterr().out
    results = _results(out)
    assert {g: v for g, (v, _) in results.items()} == dict.fromkeys(
        load_spec().required_gates("quantize"), "PASS"
    )
    rows = results["GATE-HQQ-001"][1]["matrices"]  # type: ignore[index]
    assert len(rows) == 9 and all(r["hqq_error"] < r["rtn_error"] for r in rows)
    record = json.loads((out / "surgery.json").read_text())
    assert record["settings"]["bits"] == 4 and record["measured"]["storage"].startswith("dequantised")
    assert record["gates"]["GATE-HQQ-001"]["matrices"] == rows  # the per-matrix results the record cites
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []
    weight = load_trained(out).model.layers[1].ffn.up.weight.detach()
    for group in weight.reshape(-1, 16):  # 4 bits: at most 16 distinct values per group
        assert len(torch.unique(group)) <= 16
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "ab"]) == 0


@pytest.mark.holds("GATE-HQQ-003")
def test_quantizing_the_tied_embedding_keeps_it_tied(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "quantize",
                str(source),
                "--targets",
                "embed",
                "--bits",
                "8",
                "--group-size",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    model = load_trained(out).model
    assert model.lm_head.weight is model.embed.weight
    assert _results(out)["GATE-LASER-003"][1]["changed"] == ["embed.weight", "lm_head.weight"]  # type: ignore[index]


def test_a_record_that_calls_its_tied_model_untied_is_named(source: Path, tmp_path: Path) -> None:
    """GATE-HQQ-003 holds the head to the embedding only where the model ties them, so a record
    saying untied has the check judge nothing: the checker reads the tie from the config.toml the
    record cites, not from the record."""
    out = tmp_path / "out"
    assert main(["quantize", str(source), *QUANTIZE, "--bits", "4", "--out", str(out)]) == 0
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []

    def untied(record: dict, run_dir: Path) -> None:  # both files, re-hashed, as a forger would
        report = json.loads((run_dir / "surgery.json").read_text())
        report["gates"]["GATE-HQQ-003"]["tied_config"] = False
        (run_dir / "surgery.json").write_text(json.dumps(report))
        (result,) = [g for g in record["gates"] if g["id"] == "GATE-HQQ-003"]
        result["measured"]["tied_config"] = False

    edited(out, untied)
    wrong = check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations
    said = "gates[GATE-HQQ-003].measured.tied_config is false, but its artifacts derive true"
    assert any(said in v for v in wrong), wrong


def test_the_default_group_divides_the_presets_feed_forward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny preset's ffn_hidden 176 = 16 · 11: ffn_out (176 columns) takes groups of 16, the rest
    64, where a fixed default of 64 for every matrix would refuse the command's own usage line."""
    source = tmp_path / "run"
    save_run(source, tiny_model(d_model=64, n_heads=4, ffn_hidden=176))
    out = tmp_path / "out"
    assert main(["quantize", str(source), "--targets", "*", "--bits", "8", "--out", str(out)]) == 0
    assert "in groups of 16 or 64 weights" in capsys.readouterr().out
    rows = json.loads((out / "surgery.json").read_text())["measured"]["matrices"]
    assert {r["matrix"]: r["group"] for r in rows}["layers.0.ffn_out"] == 16
    assert {r["group"] for r in rows if not r["matrix"].endswith("ffn_out")} == {64}
    argv = ["quantize", str(source), "--targets", "*", "--group-size", "64", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "sizes that divide every chosen matrix: 2, 4, 8, 16" in capsys.readouterr().err


def test_a_group_size_that_does_not_divide_a_row_is_refused(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quantize", str(source), "--targets", "q", "--group-size", "24", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "does not divide the 32 columns of layers.0.q" in capsys.readouterr().err
    assert main(["quantize", str(source), "--targets", "q", "--bits", "5", "--out", str(tmp_path / "o")]) == 2


def test_the_sizes_a_refusal_offers_divide_every_chosen_matrix() -> None:
    """With no power of two dividing a 100-column matrix, the refusal offers the sizes one
    --group-size could take over every chosen matrix (40 and 100 columns: 2, 4, 5, 10, 20), not
    those of the one matrix, which the 40-column ones would refuse."""
    targets = [
        Target(site, (site,), nn.Parameter(torch.zeros(8, width)))
        for site, width in (("layers.0.q", 40), ("layers.0.ffn_out", 100))
    ]
    with pytest.raises(
        BadInput, match=r"G one of 2, 4, 5, 10, 20 \(a size that divides every chosen matrix\)"
    ):
        hqq.group_sizes(targets, None)


def test_a_comma_list_of_targets_is_told_a_surgery_takes_one_pattern(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quantize", str(source), "--targets", "q,k,v", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert (
        "matches no matrix (one pattern: a comma list such as 'q,k,v' is LoRA's form)"
        in capsys.readouterr().err
    )


# -- falsifiers ------------------------------------------------------------------------------


def _targets(source: Path) -> list[Target]:
    return select_targets(load_trained(source).model, "ffn_*")


@pytest.mark.gate("GATE-HQQ-001")
def test_a_zero_point_search_that_goes_the_wrong_way_fires(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = _targets(source)
    quantise(targets, 4, 16, HalfQuadratic())  # holds
    real = hqq.optimise_zero

    def wrong_way(
        w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, s: HalfQuadratic
    ) -> torch.Tensor:
        return (
            2 * zero - real(w, scale, zero, bits, s) + 1.0
        )  # the planted bug: the step reversed, and a level off

    monkeypatch.setattr(hqq, "optimise_zero", wrong_way)
    with pytest.raises(GateViolation, match=r"GATE-HQQ-001.*layers\.0\.ffn_gate"):
        quantise(targets, 4, 16, HalfQuadratic())


@pytest.mark.gate("GATE-HQQ-001")
def test_a_grid_one_level_short_fires_though_it_beats_rtn_on_the_same_grid(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug: the min-max grid divided into 2^bits steps, so the top level clips.
    Round-to-nearest on that same grid is worse still, and HQQ beat it; the contracts' baseline is
    on the true grid."""
    targets = _targets(source)

    def one_level_short(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
        scale = (high - low) / 2**bits
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, -low / scale

    monkeypatch.setattr(hqq, "minmax_grid", one_level_short)
    with pytest.raises(GateViolation, match=r"GATE-HQQ-001.*layers\.0\.ffn_gate"):
        quantise(targets, 4, 16, HalfQuadratic())


@pytest.mark.gate("GATE-HQQ-001")
def test_an_error_just_above_round_to_nearest_fires_and_just_below_holds() -> None:
    ratio = load_spec().threshold("GATE-HQQ-001", "max_error_ratio")

    def rows(factor: float) -> dict[str, object]:
        return {"matrices": [{"matrix": "layers.0.q", "hqq_error": factor * ratio * 0.5, "rtn_error": 0.5}]}

    assert not measure("GATE-HQQ-001", rows(1.0001)).ok
    assert measure("GATE-HQQ-001", rows(0.9999)).ok


@pytest.mark.gate("GATE-HQQ-002")
def test_too_coarse_a_quantisation_fires_though_its_weight_error_beats_rtn(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "coarse"
    assert main(["quantize", str(source), *QUANTIZE, "--bits", "2", "--out", str(out)]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err
    results = _results(out)
    assert results["GATE-HQQ-001"][0] == "PASS" and results["GATE-HQQ-002"][0] == "FAIL"
    assert not (out / "checkpoints").exists()


@pytest.mark.gate("GATE-HQQ-002")
def test_an_agreement_measured_before_the_weights_changed_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The planted bug: the KL taken against a copy of the model from before the quantised
    weights were written, so it is 0 whatever the quantiser did."""
    real = agreement.heldout_agreement
    monkeypatch.setattr(
        agreement,
        "heldout_agreement",
        lambda original, changed, windows: real(original, copy.deepcopy(original), windows),
    )
    out = tmp_path / "out"
    assert main(["quantize", str(source), *QUANTIZE, "--out", str(out)]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err
    verdict, measured = _results(out)["GATE-HQQ-002"]
    assert verdict == "FAIL" and measured["compared_sha256"] != measured["written_sha256"]


@pytest.mark.gate("GATE-HQQ-002")
def test_an_agreement_taken_the_other_way_round_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: KL(quantised ‖ original) reported as KL(original ‖ quantised); the
    two differ by a few parts in a million at a mean of 1e-7 nats, far beyond kl_rtol."""
    real = agreement.position_kl
    monkeypatch.setattr(agreement, "position_kl", lambda original, changed: real(changed, original))
    out = tmp_path / "out"
    assert main(["quantize", str(source), *QUANTIZE, "--out", str(out)]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err
    verdict, measured = _results(out)["GATE-HQQ-002"]
    assert verdict == "FAIL" and measured["mean_kl_nats"] != measured["mean_kl_recomputed"]


@pytest.mark.gate("GATE-HQQ-002")
def test_a_recomputed_kl_just_beyond_its_tolerance_fires_and_just_inside_holds() -> None:
    rtol = load_spec().threshold("GATE-HQQ-002", "kl_rtol")
    again = 1e-3
    for factor, holds in ((2.0, False), (0.5, True)):
        measured = {"mean_kl_nats": again * (1 + factor * rtol), "positions": 64, "mean_kl_recomputed": again}
        assert measure("GATE-HQQ-002", measured).ok is holds


@pytest.mark.gate("GATE-HQQ-002")
def test_a_kl_just_beyond_the_bound_fires_and_just_inside_holds() -> None:
    limit = load_spec().threshold("GATE-HQQ-002", "max_mean_kl_nats")
    assert not measure("GATE-HQQ-002", {"mean_kl_nats": limit * 1.01, "positions": 64}).ok
    assert measure("GATE-HQQ-002", {"mean_kl_nats": limit * 0.99, "positions": 64}).ok


@pytest.mark.gate("GATE-HQQ-003")
def test_a_writer_that_unties_the_head_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quantize", str(source), "--targets", "embed", "--bits", "8", "--group-size", "16"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0

    def untying(model: nn.Module, targets: list[Target], weights: list[torch.Tensor]) -> None:
        """The planted bug: each module given a new Parameter, so the head gets one of its own."""
        for target, weight in zip(targets, weights, strict=True):
            for key in target.keys:
                model.get_submodule(key.removesuffix(".weight")).weight = nn.Parameter(weight.clone())

    monkeypatch.setattr(changes, "write_weights", untying)
    out = tmp_path / "untied"
    assert main([*argv, "--out", str(out)]) == 3
    assert "GATE-HQQ-003" in capsys.readouterr().err
    assert _results(out)["GATE-HQQ-003"][0] == "FAIL"


# -- GATE-HQQ-001 check grid: the weights written lie on 2^bits levels per group ---------------------


def _zero_points_per_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the zero-point search keeps one zero-point per weight, not per group (its
    mean over the wrong dimension, broadcast): each weight rounds on a grid shifted by its column."""
    real = hqq.optimise_zero

    def per_weight(
        w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, s: HalfQuadratic
    ) -> torch.Tensor:
        return real(w, scale, zero, bits, s) + torch.linspace(-0.05, 0.05, w.shape[1], dtype=w.dtype)

    monkeypatch.setattr(hqq, "optimise_zero", per_weight)


@pytest.mark.gate("GATE-HQQ-001")
def test_zero_points_kept_per_weight_stop_the_quantisation(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A "4-bit" output with more than 16 values per group: `stack quantize` exits 3 naming the gate,
    the distinct values counted on the weights written into the model."""
    _zero_points_per_weight(monkeypatch)
    out = tmp_path / "out"
    argv = ["quantize", str(source), "--targets", "ffn_up", "--group-size", "32", "--bits", "4"]
    assert main([*argv, "--out", str(out)]) == 3
    assert "GATE-HQQ-001" in capsys.readouterr().err
    verdict, measured = _results(out)["GATE-HQQ-001"]
    assert verdict == "FAIL"
    message = next(g.message for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-HQQ-001")
    assert "as written is no 4-bit grid" in str(message) and "zero-points for" in str(message)
    assert max(row["levels"] for row in measured["grid"]) > 16  # type: ignore[index]


@pytest.mark.gate("GATE-HQQ-001")
def test_a_group_one_level_beyond_the_grid_fires_and_a_full_grid_holds() -> None:
    """At 4 bits a group of 16 distinct values with codes 0..15 holds; 17 values, or a code 16, fire;
    so does one weight that is not its code's dequantisation."""
    row = {"matrix": "layers.0.q", "groups": 4, "scales": 4, "zeros": 4, "codes_integral": True}
    clean = {**row, "levels": 16, "codes_min": 0.0, "codes_max": 15.0, "unreproduced": 0}
    assert measure("GATE-HQQ-001", {"grid": [clean], "bits": 4}).ok
    for change in ({"levels": 17}, {"codes_max": 16.0}, {"unreproduced": 1}, {"zeros": 64}):
        assert not measure("GATE-HQQ-001", {"grid": [{**clean, **change}], "bits": 4}).ok, change


@pytest.mark.holds("GATE-HQQ-001")
@pytest.mark.gate("GATE-INTEG-001")
def test_a_quantize_record_whose_grid_is_not_its_checkpoints_is_caught(source: Path, tmp_path: Path) -> None:
    """The grid a clean run records is the checkpoint's it wrote (at most 16 levels a group at 4 bits);
    a record and surgery.json that say one level fewer (the judge still passes) are named against
    that checkpoint."""
    from tests.support.ledger_support import assert_caught, edited, gate

    out = tmp_path / "out"
    assert main(["quantize", str(source), *QUANTIZE, "--bits", "4", "--out", str(out)]) == 0
    grid = _results(out)["GATE-HQQ-001"][1]["grid"]  # type: ignore[index]
    assert len(grid) == 9 and all(r["levels"] <= 16 and r["unreproduced"] == 0 for r in grid)

    levels = grid[0]["levels"]

    def fewer_levels(data: dict[str, object], run_dir: Path) -> None:
        gate(data, "GATE-HQQ-001")["measured"]["grid"][0]["levels"] = levels - 1
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text())
        report["gates"]["GATE-HQQ-001"]["grid"][0]["levels"] = levels - 1
        path.write_text(json.dumps(report))

    assert_caught(
        edited(out, fewer_levels), f"has levels {levels - 1}, but the checkpoint it wrote gives {levels}"
    )


# -- GATE-HQQ-001 check requested: the groups are the --group-size the settings state -----


@pytest.mark.gate("GATE-HQQ-001")
def test_groups_picked_per_matrix_under_a_stated_group_size_stop_the_quantisation(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the quantiser's sizes taken with no request (auto_group per matrix) whatever
    --group-size said; surgery.json's settings say 16. Every grid is sound on its own groups; the
    groups are not the stated size: exit 3 naming the gate."""
    real = hqq.group_sizes
    monkeypatch.setattr(hqq, "group_sizes", lambda targets, _requested: real(targets, None))
    out = tmp_path / "out"
    argv = ["quantize", str(source), *QUANTIZE, "--bits", "4"]
    assert main([*argv, "--out", str(out)]) == 3
    assert "GATE-HQQ-001" in capsys.readouterr().err
    verdict, measured = _results(out)["GATE-HQQ-001"]
    assert verdict == "FAIL" and measured["group_requested"] == 16  # type: ignore[index]
    message = next(g.message for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-HQQ-001")
    assert "groups other than the --group-size 16 the settings state" in str(message)


@pytest.mark.holds("GATE-HQQ-001")
@pytest.mark.gate("GATE-INTEG-001")
def test_the_stated_group_size_holds_and_the_checker_holds_it_to_the_settings(
    source: Path, tmp_path: Path
) -> None:
    """A clean --group-size 16 run's groups are all 16; a row off by one group size fires, none stated
    holds; a record and surgery.json whose requested size is edited with the rows (the judge passes)
    are named against surgery.json's settings."""
    from tests.support.ledger_support import assert_caught, edited, gate

    out = tmp_path / "out"
    argv = ["quantize", str(source), *QUANTIZE, "--bits", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    measured = dict(_results(out)["GATE-HQQ-001"][1])  # type: ignore[call-overload]
    assert measured["group_requested"] == 16 and {r["group"] for r in measured["grid"]} == {16}
    last = measured["grid"][-1]  # the last matrix on a sound grid of groups of 32: half the groups
    halved = {"group": 32, **{key: last[key] // 2 for key in ("groups", "scales", "zeros")}}
    other = {**measured, "grid": [*measured["grid"][:-1], {**last, **halved}]}
    assert not measure("GATE-HQQ-001", other).ok
    assert measure("GATE-HQQ-001", {**other, "group_requested": None}).ok  # none stated: per matrix

    def asked_32(data: dict[str, object], run_dir: Path) -> None:
        gate(data, "GATE-HQQ-001")["measured"]["group_requested"] = 32
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text())
        report["gates"]["GATE-HQQ-001"]["group_requested"] = 32
        path.write_text(json.dumps(report))

    assert_caught(edited(out, asked_32), "group_requested is 32, but its artifacts derive 16")
