"""`stack trace --patch`: activation patching on a trained model, and the identities it must keep.

Falsifiers plant each patching bug in the stack's own code path: a splice that rounds what it
writes, one that drops the last position, a hook left registered before or after a run; a grid
whose cells patch every position, the position before, another layer or nothing (the hooks record
what each cell's forward overwrote); a metric read at another position than the last, or off by
just more than score_atol (the scores are read again on plain forwards); cells run on the clean
prompt, a hook that records its replacement as what the forward computed (the cells must change
exactly where the two runs' kept values differ, and compute the corrupted run's value); a sweep
that skips position 0, repeats or adds one; an inverted recovery formula (every recorded fraction is
recomputed from the recorded scores by contracts.patching). A run's forwards share one stacking of
each projection group's weights, every score what a forward stacking them again gives.
"""

from __future__ import annotations

import csv
import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.errors import BadInput, GateViolation
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.model import projection
from stack.trace import hooks, patch
from stack.trace.hooks import Replacement, SiteHooks
from stack.trace.patch import Forward, Metric, Patches, patch_runs, sweep_sites
from tests.support.ledger_support import assert_caught, edited, gate
from tests.support.trace_support import tiny_model, tokens
from tests.support.train_support import two_layer_run

CLEAN, CORRUPTED = "gate evidence model", "gate manifest model"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer model trained by `stack train` on a generated corpus."""
    return two_layer_run(tmp_path_factory.mktemp("patch"))[1]


def _verdicts(record_dir: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(record_dir / "metadata.json").gates}


def _experiment(model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A tiny random model and a clean and a corrupted prompt that differ at positions 3, 7 and the last."""
    model = model or tiny_model()
    clean = tokens(10)
    corrupted = clean.clone()
    corrupted[0, 3], corrupted[0, 7], corrupted[0, 9] = 11, 42, 99
    return model, [clean, corrupted]


def _patch(model: torch.nn.Module, clean: torch.Tensor, corrupted: torch.Tensor) -> patch.PatchRun:
    """A sweep of every layer's output over every position (positions None: the sweep's own)."""
    sites = sweep_sites("output", len(model.layers))
    return patch_runs(model, clean, corrupted, Metric(target=5), sites, None)


# -- the clean path, through the real CLI -------------------------------------------------


@pytest.mark.holds("GATE-PATCH-001", "GATE-PATCH-002", "GATE-PATCH-003")
def test_sweep_through_the_cli_records_the_grid_and_its_controls(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    argv = [
        "trace",
        str(run),
        "--prompt",
        CLEAN,
        "--patch",
        CORRUPTED,
        "--target",
        " ",
        "--patch-sweep",
        "output",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recovered fraction per layer × position" in text and "verdict: patched" in text
    record = read_evidence(out / "metadata.json")
    assert record.run.kind == "patch" and record.metrics["mode"] == "patch-sweep"
    assert _verdicts(out) == dict.fromkeys(
        ["GATE-CKPT-002", "GATE-PATCH-001", "GATE-PATCH-002", "GATE-PATCH-003"], "PASS"
    )
    grid = record.metrics["per_layer"]  # the site's heat map: a row per layer, a cell per position
    assert [row["site"] for row in grid] == ["layers.0.output", "layers.1.output"]
    last = grid[-1]["recovered"]
    # At the last layer only the last position reaches the last position's logits: all or nothing.
    assert last[-1] == 1.0 and last[:-1] == [0.0] * (len(CLEAN) - 1)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_patch_record_edited_to_other_scores_is_caught(run: Path, tmp_path: Path) -> None:
    """The scores GATE-PATCH-002's check `scores` judged are trace.json's: a record whose recorded
    clean score is edited (its plain twin with it, so the judge still passes) is named; so is one
    whose full patch is recorded as recovering 0.0 (its patched score with it, so the formula
    still agrees), against trace.json's full_patched and full_recovered."""
    out = tmp_path / "rec"
    argv = ["trace", str(run), "--prompt", CLEAN, "--patch", CORRUPTED, "--target", " "]
    assert main([*argv, "--patch-site", "layers.0.output", "--out", str(out)]) == 0

    def edited_scores(data: dict[str, Any], _run_dir: Path) -> None:
        measured = gate(data, "GATE-PATCH-002")["measured"]
        measured["clean_recorded"] = measured["clean_plain"] = measured["clean_recorded"] + 1.0

    assert_caught(edited(out, edited_scores), "gates[GATE-PATCH-002].measured.clean_recorded is")

    def edited_recovery(data: dict[str, Any], _run_dir: Path) -> None:
        measured = gate(data, "GATE-PATCH-002")["measured"]
        measured["recovery_full"] = {"patched": measured["recovery_corrupted"], "recovered": 0.0}

    assert_caught(edited(out, edited_recovery), "gates[GATE-PATCH-002].measured.recovery_full")


def test_one_patch_writes_json_and_csv(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, table = tmp_path / "p.json", tmp_path / "p.csv"
    argv = ["trace", str(run), "--prompt", CLEAN, "--patch", CORRUPTED, "--target", " ", "--foil", "e"]
    argv += [
        "--patch-site",
        "layers.0.attn_out",
        "--patch-position",
        "7",
        "--json",
        str(js),
        "--csv",
        str(table),
    ]
    assert main([*argv, "--out", str(tmp_path / "rec")]) == 0
    assert "PATCH layers.0.attn_out at position 7 ('i')" in capsys.readouterr().out
    payload = json.loads(js.read_text())
    assert payload["mode"] == "patch" and payload["per_layer"][0]["positions"] == [7]
    assert [row["position"] for row in csv.DictReader(table.open())] == ["7"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", " ", "--patch-site", "layers.0.output"], "--target, --foil"),
        (["--patch", CORRUPTED, "--patch-site", "layers.0.output"], "--patch needs --target"),
        (["--patch", CORRUPTED, "--target", " "], "one of --patch-site SITE"),
        (["--patch", CORRUPTED, "--target", "ab", "--patch-sweep", "output"], "is 2 tokens"),
        (["--patch", "gate model", "--target", " ", "--patch-sweep", "output"], "prompts of the same length"),
        (["--patch", CORRUPTED, "--target", " ", "--patch-sweep", "attn_residual"], "that can be patched"),
        (["--patch", CORRUPTED, "--target", " ", "--patch-site", "layers.9.output"], "layers 0-1"),
        (["--patch", CORRUPTED, "--target", " ", "--patch-sweep", "v", "--patch-position", "1"], "goes with"),
        (["--patch", CLEAN, "--target", " ", "--patch-sweep", "output"], "nothing to recover"),
    ],
)
def test_bad_patching_input_is_one_line_and_exit_2(
    run: Path, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", str(run), "--prompt", CLEAN, *extra]) == 2
    assert needle in capsys.readouterr().err


# -- falsifiers ------------------------------------------------------------------------------


@pytest.mark.gate("GATE-PATCH-001")
def test_a_patch_that_rounds_what_it_writes_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (clean, corrupted) = _experiment()
    _patch(model, clean, corrupted)  # the exact splice: holds
    exact = patch.splice

    def rounding(tensor: torch.Tensor, source: torch.Tensor, positions: patch.Positions) -> torch.Tensor:
        return exact(tensor, source.bfloat16().to(source.dtype), positions)  # the planted bug

    monkeypatch.setattr(patch, "splice", rounding)
    with pytest.raises(GateViolation, match="GATE-PATCH-001"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_a_patch_that_drops_the_last_position_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (clean, corrupted) = _experiment()
    exact = patch.splice

    def off_by_one(tensor: torch.Tensor, source: torch.Tensor, positions: patch.Positions) -> torch.Tensor:
        if positions == patch.EVERY_POSITION:
            positions = slice(0, tensor.shape[1] - 1)  # the planted bug: the last token is missed
        return exact(tensor, source, positions)

    monkeypatch.setattr(patch, "splice", off_by_one)
    with pytest.raises(GateViolation, match="GATE-PATCH-002"):
        _patch(model, clean, corrupted)


def _cells_rewritten(monkeypatch: pytest.MonkeyPatch, rewrite: Callable[[Patches, int], Patches]) -> None:
    """Plant a grid bug: each cell's patches (one site at one int position; the controls patch
    whole slices and are left alone) rewritten by `rewrite(patches, layers)` before the forward."""
    exact = patch.forward_with

    def planted(model: torch.nn.Module, idx: torch.Tensor, patches: Patches, **kw: object) -> Forward:
        if any(isinstance(p, int) for _, p in patches.values()):
            patches = rewrite(patches, len(model.layers))  # type: ignore[arg-type]
        return exact(model, idx, patches, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(patch, "forward_with", planted)


def _every_position(patches: Patches, _layers: int) -> Patches:
    return {site: (value, patch.EVERY_POSITION) for site, (value, _) in patches.items()}


def _another_layer(patches: Patches, layers: int) -> Patches:
    ((site, entry),) = patches.items()
    layer = int(site.split(".")[1])
    return {site.replace(f"layers.{layer}.", f"layers.{(layer + 1) % layers}."): entry}


def _nothing(_patches: Patches, _layers: int) -> Patches:
    return {}


@pytest.mark.gate("GATE-PATCH-002")
@pytest.mark.parametrize("rewrite", [_every_position, _another_layer, _nothing], ids=lambda f: f.__name__)
def test_a_grid_cell_that_patches_another_site_or_position_fires(
    monkeypatch: pytest.MonkeyPatch, rewrite: Callable[[Patches, int], Patches]
) -> None:
    """Every position in each cell (every cell of the sweep would read 1.00), another
    layer's site, or nothing at all: the hooks' record of the cell's forward names it."""
    model, (clean, corrupted) = _experiment()
    _patch(model, clean, corrupted)  # each cell patches its own site at its own position: holds
    _cells_rewritten(monkeypatch, rewrite)
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*grid cell\(s\) did not patch exactly"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_a_splice_that_writes_the_position_before_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """An off-by-one splice in the cells (the controls' whole slices are untouched, so GATE-PATCH-001
    and the full patch hold): the value at p comes from the clean run's p - 1."""
    model, (clean, corrupted) = _experiment()
    exact = patch.splice

    def shifted(tensor: torch.Tensor, source: torch.Tensor, positions: patch.Positions) -> torch.Tensor:
        if isinstance(positions, int):
            out = tensor.clone()
            out[:, positions] = source[:, positions - 1]  # the planted bug
            return out
        return exact(tensor, source, positions)

    monkeypatch.setattr(patch, "splice", shifted)
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*unlike the clean run's"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_a_metric_read_before_the_last_position_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the metric read at the second-to-last position; every recovered fraction is
    consistent with its scores, which a plain forward read at the last position contradicts."""
    model, (clean, corrupted) = _experiment()
    exact = Metric.__call__
    monkeypatch.setattr(Metric, "__call__", lambda self, logits: exact(self, logits[:, :-1]))
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*clean score is .* plain forward"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_scores_just_past_score_atol_fire_and_just_inside_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every score the run reads moved by twice score_atol, then by half of it (the recovered
    fractions are unchanged): the first fires, the second holds, so a tolerance widened or
    narrowed twofold turns this red."""
    model, (clean, corrupted) = _experiment()
    atol = load_spec().threshold("GATE-PATCH-002", "score_atol")
    exact = Metric.__call__

    def moved_by(shift: float) -> None:
        monkeypatch.setattr(Metric, "__call__", lambda self, logits: exact(self, logits) + shift)
        _patch(model, clean, corrupted)

    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*clean score .*allowed"):
        moved_by(2 * atol)
    moved_by(atol / 2)


@pytest.mark.gate("GATE-PATCH-002")
def test_grid_cells_run_on_the_clean_prompt_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: each cell's forward on the clean prompt (every cell recovered 1.00, and each
    changed nothing, which the hooks' record alone accepted): what the cell computed at its site is
    not the corrupted run's kept value, and it changed nothing where the two runs differ."""
    model, (clean, corrupted) = _experiment()
    run = _patch(model, clean, corrupted)  # the corrupted prompt in every cell: holds
    assert run.recovered["layers.0.output"][:3] == [0.0, 0.0, 0.0]  # the prompts agree up to position 3
    exact = patch.forward_with

    def planted(model: torch.nn.Module, idx: torch.Tensor, patches: Patches, **kw: object) -> Forward:
        cell = any(isinstance(p, int) for _, p in patches.values())
        return exact(model, clean if cell else idx, patches, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(patch, "forward_with", planted)
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*computed \d+ element\(s\) unlike the corr"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_a_hook_that_records_its_replacement_as_computed_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the hooks keep the replacement as what the forward computed, so no cell
    changed anything (the grid's numbers are untouched); the cells that must change their position,
    where the two runs' kept values differ, name it, and so does the corrupted run's value."""
    model, (clean, corrupted) = _experiment()

    def planted(self: SiteHooks, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        replacement = self._visitor(name, tensor)
        if replacement is not None:
            self.replaced.append(Replacement(name, replacement.detach(), replacement.detach().clone()))
        return replacement

    monkeypatch.setattr(hooks.SiteHooks, "visit", planted)
    unchanged = r"wrote layers\.\d\.output at \[\], where the runs differ at \[3\]"
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*" + unchanged):
        _patch(model, clean, corrupted)


def _sweep_over(monkeypatch: pytest.MonkeyPatch, positions: Callable[[int], list[int]]) -> None:
    """Plant the sweep's positions: `positions(tokens)` in place of every position of the prompt."""
    monkeypatch.setattr(patch, "sweep_positions", positions)


@pytest.mark.gate("GATE-PATCH-002")
@pytest.mark.parametrize(
    "positions",
    [lambda n: list(range(1, n)), lambda n: [*range(n), n - 1], lambda n: list(range(n - 1))],
    ids=["from_1", "last_twice", "last_dropped"],
)
def test_a_sweep_that_skips_or_repeats_a_position_fires(
    monkeypatch: pytest.MonkeyPatch, positions: Callable[[int], list[int]]
) -> None:
    """Planted: a sweep over positions 1..T−1 (the printed grid shifted a column); a
    position twice, or the last dropped: the grid's cells against every site × 0..T−1."""
    model, (clean, corrupted) = _experiment()
    run = _patch(model, clean, corrupted)  # every position once: holds
    assert run.positions == tuple(range(clean.shape[1])) and run.sweep
    _sweep_over(monkeypatch, positions)
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*grid holds \d+ cell\(s\) where it states 30"):
        _patch(model, clean, corrupted)


@pytest.mark.gate("GATE-PATCH-002")
def test_an_inverted_recovery_formula_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: (clean − patched)/(clean − corrupted) recorded every cell inverted and the full
    patch, proved bit-exact, as 0.0; each recorded fraction recomputed by contracts.patching names it."""
    model, (clean, corrupted) = _experiment()
    assert _patch(model, clean, corrupted).full_recovered == 1.0  # the contracts' formula: holds
    monkeypatch.setattr(patch, "recovered_fraction", lambda p, c, k: (c - p) / (c - k))
    with pytest.raises(GateViolation, match=r"GATE-PATCH-002.*fraction\(s\) are not .*the full patch"):
        _patch(model, clean, corrupted)


@pytest.mark.holds("GATE-PATCH-002")
def test_one_patch_at_its_stated_position_holds() -> None:
    """A single patch states its position: the grid holds that one cell, its recovery the formula's."""
    model, (clean, corrupted) = _experiment()
    run = patch_runs(model, clean, corrupted, Metric(target=5), ["layers.1.output"], [7])
    assert run.positions == (7,) and not run.sweep and list(run.recovered) == ["layers.1.output"]


@pytest.mark.gate("GATE-PATCH-003")
def test_a_hook_left_by_an_earlier_call_fires_at_the_start() -> None:
    model, (clean, corrupted) = _experiment()
    _patch(model, clean, corrupted)  # no hook before, none after: holds
    stray = model.layers[0].register_forward_hook(lambda *_: None)
    try:
        with pytest.raises(GateViolation, match=r"GATE-PATCH-003.*start.*1 hook"):
            _patch(model, clean, corrupted)
    finally:
        stray.remove()


@pytest.mark.gate("GATE-PATCH-003")
def test_hooks_that_are_not_removed_fire_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (clean, corrupted) = _experiment()
    remove_all = SiteHooks.__exit__

    def leaky_exit(self: SiteHooks, *exc: object) -> None:
        self._handles.pop()  # the planted leak: the last hook (on lm_head, patching nothing) stays
        remove_all(self, *exc)  # type: ignore[arg-type]

    monkeypatch.setattr(SiteHooks, "__exit__", leaky_exit)
    with pytest.raises(GateViolation, match=r"GATE-PATCH-003.*end"):
        _patch(model, clean, corrupted)
    monkeypatch.undo()  # the code is right again, but the model still holds the hooks it leaked
    with pytest.raises(GateViolation, match=r"GATE-PATCH-003.*start"):
        _patch(model, clean, corrupted)


def test_a_run_stacks_each_projection_group_once_and_scores_as_one_stacking_every_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A patch run is some dozens of forwards of one model without a graph: each projection group's
    weights are stacked for its first forward only (q|k|v and gate|up of every block), freed when
    the run ends, and every score is the one a forward stacking its weights again gives, bit for
    bit: the plain runs' and each cell's. (Counted at stack.model.projection's stacking, not by a
    torch function mode, which GATE-PATCH-003 refuses on a model being patched.)"""
    made: list[weakref.ref[torch.Tensor]] = []
    stack_weights = projection._stack

    def counted(*args: Any) -> Any:
        weight, bias = stack_weights(*args)
        made.append(weakref.ref(weight))
        return weight, bias

    monkeypatch.setattr(projection, "_stack", counted)
    model, (clean, corrupted) = _experiment()
    run = _patch(model, clean, corrupted)
    assert len(made) == 2 * len(model.layers)
    gc.collect()
    assert all(ref() is None for ref in made)
    metric = Metric(target=5)
    with torch.no_grad():
        assert (run.clean, run.corrupted) == (
            patch.plain_score(model, clean, metric),
            patch.plain_score(model, corrupted, metric),
        )
        values = patch.forward_with(model, clean, {}, keep=frozenset(run.patched)).kept
        again = {
            site: [
                metric(patch.forward_with(model, corrupted, {site: (values[site], p)}).logits)
                for p in run.positions
            ]
            for site in run.patched
        }
    forwards = 3 + len(run.positions) * len(run.patched)  # those just run, each stacking again
    assert len(made) == 2 * len(model.layers) * (1 + forwards)
    assert again == run.patched


def test_metric_reads_the_last_position() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, -1] = torch.tensor([0.0, 2.0, 1.0, 0.0])
    assert Metric(target=1, foil=2)(logits) == 1.0
    assert Metric(target=1)(logits) == pytest.approx(float(logits[0, -1].log_softmax(-1)[1]))
    with pytest.raises(BadInput, match="same length"):
        patch_runs(tiny_model(), tokens(5), tokens(6), Metric(1), ["embed"], [0])
