"""`stack laser`: rank-ρ truncation of chosen matrices into a new run-like directory, under its gates.

Falsifiers plant each bug in the stack's own code path: a truncation that recomposes U·S·Vᵀ when
it drops nothing, one that keeps the smallest singular values instead of the largest, and a
writer whose target names miss the tied head it writes through.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contracts.errors import BadInput, GateViolation
from contracts.evidence import read_evidence, sha256_file
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.model import targets as targets_module
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.targets import select, select_targets
from stack.surgery import laser as laser_module
from stack.surgery.laser import laser
from stack.train.trained import load_trained
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer tied model saved as a run."""
    run = tmp_path_factory.mktemp("laser") / "run"
    save_run(run, tiny_model())
    return run


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_trained(path).model.state_dict()


# -- the clean path, through the real CLI -------------------------------------------------


@pytest.mark.holds("GATE-LASER-001", "GATE-LASER-002", "GATE-LASER-003")
def test_laser_writes_a_run_that_differs_only_in_its_targets(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["laser", str(source), "--targets", "ffn_*", "--layers", "1-2", "--rho", "0.25", "--out", str(out)]
    assert main(argv) == 0
    assert "layers.2.ffn_out: kept 8 of 32 singular values" in capsys.readouterr().out
    assert _verdicts(out) == dict.fromkeys(load_spec().required_gates("laser"), "PASS")
    record = json.loads((out / "surgery.json").read_text())
    assert record["settings"] == {"targets": "ffn_*", "layers": "1-2", "rho": 0.25}
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []
    manifest = source / "checkpoints" / "step-0000001" / "manifest.json"
    assert record["source"]["manifest_sha256"] == sha256_file(manifest)
    before, after = _state(source), _state(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"layers.{i}.ffn.{m}.weight" for i in (1, 2) for m in ("gate", "up", "down")}
    assert torch.linalg.matrix_rank(after["layers.1.ffn.up.weight"], rtol=1e-5) == 8  # float32 rounding aside
    text = tmp_path / "t.txt"
    text.write_text("the gate fired at layer one\n" * 4)
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "ab"]) == 0
    assert main(["eval", str(out), "--text", str(text)]) == 0
    assert main(["trace", str(out), "--prompt", "gate", "--out", str(tmp_path / "trace")]) == 0


@pytest.mark.holds("GATE-LASER-001")
def test_rho_one_keeps_every_weight_bit_for_bit(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["laser", str(source), "--targets", "*", "--rho", "1", "--out", str(out)]) == 0
    before, after = _state(source), _state(out)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_input_is_one_line_and_exit_2(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["laser", str(source), "--targets", "nope", "--rho", "0.5", "--out", str(out)]) == 2
    assert "matches no matrix" in capsys.readouterr().err
    assert (
        main(["laser", str(source), "--targets", "q", "--layers", "7", "--rho", "0.5", "--out", str(out)])
        == 2
    )
    assert main(["laser", str(source), "--targets", "q", "--rho", "0", "--out", str(out)]) == 2
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    assert main(["laser", str(source), "--targets", "q", "--rho", "0.5", "--out", str(out)]) == 2
    assert main(["laser", str(source), "--targets", "q", "--rho", "0.5", "--out", str(out), "--force"]) == 2
    assert "holds no surgery.json" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "a user's file"


# -- falsifiers ------------------------------------------------------------------------------


@pytest.mark.gate("GATE-LASER-001")
def test_a_truncation_that_always_recomposes_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["laser", str(source), "--targets", "q", "--rho", "1"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0

    def recomposing(weight: torch.Tensor, rho: float) -> tuple[torch.Tensor, int, float]:
        """The planted bug: U·S·Vᵀ, in the weights' float32, even when every singular value is kept."""
        u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
        return ((u * s) @ vh).to(weight.dtype), len(s), 0.0

    monkeypatch.setattr(laser_module, "truncate", recomposing)
    out = tmp_path / "recomposed"
    assert main([*argv, "--out", str(out)]) == 3
    assert "GATE-LASER-001" in capsys.readouterr().err
    assert _verdicts(out)["GATE-LASER-001"] == "FAIL"
    assert not (out / "checkpoints").exists()


@pytest.mark.gate("GATE-LASER-002")
def test_a_truncation_that_keeps_the_smallest_values_fires(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_trained(source).model
    targets = select_targets(model, "ffn_up")
    laser(targets, 0.5)  # the largest values kept: holds

    def smallest(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int) -> torch.Tensor:
        return (u[:, -k:] * s[-k:]) @ vh[-k:]  # the planted bug: the wrong end of the spectrum

    monkeypatch.setattr(laser_module, "low_rank", smallest)
    with pytest.raises(GateViolation, match=r"GATE-LASER-002.*layers\.0\.ffn_up"):
        laser(targets, 0.5)


@pytest.mark.gate("GATE-LASER-002")
@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_a_truncation_that_rounds_the_values_kept_down_fires(
    source: Path, monkeypatch: pytest.MonkeyPatch, rho: float
) -> None:
    """Keeping ⌊ρ·r⌋ values: the error is still exactly the norm of what was dropped, so only the
    count against ρ shows it (ρ·r above 1 and not whole, so the floor keeps one value fewer)."""
    model = load_trained(source).model
    targets = select_targets(model, "ffn_up")
    laser(targets, rho)  # ⌈ρ·r⌉: holds
    rank = min(targets[0].weight.shape)
    assert rho * rank > 1 and rho * rank != int(rho * rank)
    monkeypatch.setattr(laser_module, "rank_kept", lambda rank, rho: max(1, int(rho * rank)))
    with pytest.raises(GateViolation, match=r"GATE-LASER-002.*layers\.0\.ffn_up: kept"):
        laser(targets, rho)


@pytest.mark.gate("GATE-LASER-002")
def test_an_error_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    rtol = load_spec().threshold("GATE-LASER-002", "frobenius_rtol")

    def row(excess: float) -> dict[str, object]:
        return {"matrix": "layers.0.q", "error": 2.0 + excess * 10.0, "discarded_norm": 2.0, "norm": 10.0}

    assert not measure("GATE-LASER-002", {"matrices": [row(1.1 * rtol)]}).ok
    assert measure("GATE-LASER-002", {"matrices": [row(0.9 * rtol)]}).ok


@pytest.mark.gate("GATE-LASER-003")
def test_a_target_that_misses_its_tied_head_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["laser", str(source), "--targets", "embed", "--rho", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0  # both names of the tied tensor: holds
    real = targets_module.keys_of
    monkeypatch.setattr(targets_module, "keys_of", lambda model, weight: real(model, weight)[:1])
    out = tmp_path / "untracked"
    assert main([*argv, "--out", str(out)]) == 3  # the head changed through the shared tensor, unnamed
    assert "GATE-LASER-003" in capsys.readouterr().err and "lm_head.weight" in _verdict_message(out)


def _verdict_message(out: Path) -> str:
    record = read_evidence(out / "metadata.json")
    return next(g.message or "" for g in record.gates if g.id == "GATE-LASER-003")


def test_eval_of_a_surgery_reads_the_held_out_split_its_source_was_trained_on(tmp_path: Path) -> None:
    """A laser output learned nothing itself: eval follows its checkpoint back to the source run's
    DATA_DIR (it said "the run's DATA_DIR None is gone")."""
    data, run = prepared(tmp_path), tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=1", "eval.every=1", "ckpt.every=1")) == 0
    out, twice = tmp_path / "laser", tmp_path / "laser-of-laser"
    assert main(["laser", str(run), "--targets", "q", "--rho", "0.5", "--out", str(out)]) == 0
    assert main(["laser", str(out), "--targets", "k", "--rho", "0.5", "--out", str(twice)]) == 0
    for model in (out, twice):
        record = tmp_path / f"eval-{model.name}"
        assert (
            main(["eval", str(model), "--split", "val", "--max-bytes", "2000", "--record", str(record)]) == 0
        )
        assert read_evidence(record / "metadata.json").config["data"] == str(data.resolve())


def _options_model() -> GPT:
    """Two blocks with every option: experts (and a shared one), differential attention, routed depth."""
    config = ModelConfig(
        vocab=257, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=48, ctx=16, moe_experts=2
    )
    update = {"moe_shared_expert": True, "diff_attn": True, "mod_every": 1, "mod_capacity": 0.5}
    return GPT(ModelConfig(**{**config.model_dump(), **update}))


def test_every_matrix_is_a_target_whatever_options_built_it() -> None:
    """'*' is every 2-D weight of the model: experts, routers and q2/k2 included, each tensor once
    (the tied head is embed's), so a surgery on '*' can leave no matrix out unsaid."""
    model = _options_model()
    selection = select(model, ["*"])
    chosen = {t.weight for t in selection.targets}
    every = {p for p in model.parameters() if p.dim() == 2}
    assert chosen == every and len(selection.targets) == len(every)
    assert [(s.name, s.reason) for s in selection.skipped] == [("logits", "tied: the same tensor as embed")]
    assert selection.as_record()["parameter_share"] == 1.0
    kinds = {t.short for t in selection.targets}
    assert {"q2", "k2", "router", "moe.router", "moe.expert1.down", "moe.shared.up"} <= kinds


def test_experts_are_named_and_a_glob_that_misses_says_what_there_is() -> None:
    model = _options_model()
    with pytest.raises(BadInput, match=r"matrices are named embed, logits, q, k, v, attn_out, q2, k2, moe"):
        select_targets(model, "ffn_*")  # a mixture has no dense feed-forward
    assert [t.site for t in select_targets(model, "moe.expert1.up")] == [
        "layers.0.moe.expert1.up",
        "layers.1.moe.expert1.up",
    ]
    selection = select(model, ["moe.expert*"], layers="1")
    assert all(t.site.startswith("layers.1.moe.expert") for t in selection.targets)
    reasons = {s.name: s.reason for s in selection.skipped}
    assert reasons["layers.0.moe.expert0.gate"] == "outside --layers 1"
    assert reasons["layers.1.q2"] == "not matched by --targets 'moe.expert*'"


def test_quantize_on_every_matrix_says_what_it_touched_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--targets '*'` on a mixture of experts must not quantise 29 % of the matrix parameters and
    say nothing of the experts it skips: every matrix is quantised, the command prints the share
    and the one matrix it skipped (the tied head), and records both."""
    source = tmp_path / "run"
    model = _options_model()
    save_run(source, model)
    out = tmp_path / "out"
    assert main(["quantize", str(source), "--targets", "*", "--bits", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    matrices = sum(1 for p in model.parameters() if p.dim() == 2)
    assert f"touched {matrices} matrices (100.0% of the model's matrix parameters); skipped 1" in printed
    assert "skipped 1 (tied: the same tensor as embed): logits" in printed
    recorded = json.loads((out / "surgery.json").read_text())["measured"]
    assert "layers.1.moe.expert1.down" in recorded["selection"]["touched"]
    assert {row["matrix"] for row in recorded["matrices"]} == set(recorded["selection"]["touched"])


# -- GATE-LASER-003 check selection: the targets are what the command line selects ---------------


def _layers_without_their_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--layers A-B` parsed as range(A, B), planted in the stack's parser."""
    from stack.model import names

    real = names.parse_layers
    monkeypatch.setattr(
        names, "parse_layers", lambda text, n: range(real(text, n).start, real(text, n).stop - 1)
    )


@pytest.mark.gate("GATE-LASER-003")
@pytest.mark.parametrize(
    "command", [("laser", "--rho", "0.5"), ("quantize", "--bits", "8")], ids=["laser", "quantize"]
)
def test_a_layer_range_read_without_its_last_block_stops_the_surgery(
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
) -> None:
    """`--layers 1-2` leaves block 2 out and says "outside --layers 1-2": the targets are not what
    the command line selects by contracts.selection, exit 3 naming the gate."""
    _layers_without_their_last(monkeypatch)
    out = tmp_path / "out"
    name, *settings = command
    argv = [name, str(source), "--targets", "ffn_*", "--layers", "1-2", *settings, "--out", str(out)]
    assert main(argv) == 3
    assert "GATE-LASER-003" in capsys.readouterr().err
    message = _verdict_message(out)
    assert "left out layers.2.ffn.down.weight, layers.2.ffn.gate.weight, layers.2.ffn.up.weight" in message


@pytest.mark.holds("GATE-LASER-003")
@pytest.mark.parametrize(
    "model",
    [tiny_model(), tiny_model(tie_embeddings=False), _options_model()],
    ids=["tied", "untied", "options"],
)
@pytest.mark.parametrize(
    "pattern",
    ["*", "ffn_*", "q", "layers.1.q", "q_proj", "down_proj", "embed", "lm_head", "logits", "moe.*", "*2"],
)
@pytest.mark.parametrize("layers", [None, "0", "1", "0-1", "1-1"])
def test_the_stacks_selection_is_the_contracts_rule(model: GPT, pattern: str, layers: str | None) -> None:
    """The stack's selection and contracts.selection's agree, key for key, on every kind of name,
    with and without --layers, on a tied, an untied and an every-option model."""
    from contracts.selection import selected

    try:
        chosen = select(model, [pattern], layers)
    except BadInput:  # a pattern or range that selects nothing: no surgery runs
        assert selected(model.config.model_dump(), [pattern], layers) == []
        return
    keys = sorted(key for target in chosen.targets for key in target.keys)
    assert keys == selected(model.config.model_dump(), [pattern], layers)


def test_the_contracts_read_an_option_as_argparse_does() -> None:
    from contracts.selection import option

    argv = ["stack", "laser", "run", "--targets", "q", "--lay=0-1", "--targets=ffn_*", "--rho", "0.5"]
    assert (option(argv, "--targets"), option(argv, "--layers"), option(["x"], "--layers")) == (
        "ffn_*",
        "0-1",
        None,
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_surgery_record_whose_selection_is_not_its_command_lines_is_caught(
    source: Path, tmp_path: Path
) -> None:
    """The selection GATE-LASER-003 held the targets to is what the record's argv selects of its
    config.toml's model: a record that drops a block from both (so the judge still passes) is named."""
    from tests.support.ledger_support import assert_caught, edited, gate

    out = tmp_path / "out"
    argv = ["laser", str(source), "--targets", "ffn_*", "--layers", "1-2", "--rho", "0.5", "--out", str(out)]
    assert main(argv) == 0

    def one_block(data: dict[str, object], _run_dir: Path) -> None:
        measured = gate(data, "GATE-LASER-003")["measured"]
        for key in ("targets", "selected", "changed"):
            measured[key] = [k for k in measured[key] if k.startswith("layers.1.")]

    assert_caught(edited(out, one_block), "gates[GATE-LASER-003].measured.selected")
