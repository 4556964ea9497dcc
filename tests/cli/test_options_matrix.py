"""Every option, alone, in pairs and together, runs every command (GATE-ARCH-013), through the CLI.

The whole matrix takes minutes and is run like a benchmark (`stack options-matrix`, its record
filed in the ledger). Here runs its `fast` subset, once for the module: every command on the
two-block model with all three options (where the options' defects show together: a 0-dim buffer
crashing laser, quantize and LoRA, false trace anomalies on experts no token reached, '*' skipping
experts, ONNX export of experts with routed depth, DPO scoring a routed model in two routings, bf16
training, resumed legs, bisection against another option, a fine-tune's dropped settings, ES
workers, peft's format), the dense model's run that distill-student and trace-against read, and
the Triton path's run read where Triton cannot run. Falsifiers plant a crash, a false gate, a
refusal the matrix does not declare, a declared refusal that no longer happens, silent wrong
results (a fine-tune that drops what it was asked, ES workers with a model of their own making),
and matrices short of an option, a path, a command or a layer.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from contracts import trace_anomaly
from contracts.errors import GateViolation
from contracts.evidence import EVIDENCE_FILE, read_evidence, records_named
from contracts.judges.arch import cell_verdicts
from contracts.spec import default_spec_dir, load_spec
from stack.cli import main
from stack.model.config import ModelConfig
from stack.model.moe import MoE
from stack.options_matrix import (
    COMMAND_ARGV,
    Cell,
    Matrix,
    OptionSpec,
    Place,
    _knobs,
    _run,
    load_matrix,
    matrix_outcome,
    measured_matrix,
    run_cell,
    run_combination,
    settle,
    trained_layers,
)
from stack.trace import hooks
from tests.support.ledger_support import findings
from tests.support.train_support import prepared
from tools.records.scratch import make_repo
from tools.site.render import GENERATED, render

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

MATRIX = load_matrix()
ALL = "moe+diff-attn+mod"
STUDENT = "distill-student"  # the cell whose teacher is the dense model's run
ES_WORKERS = "es-workers"  # the cell that computes es's steps again
Cells = dict[str, dict[str, Cell]]


def _ignore(*_: object) -> None:
    """A cell printer that prints nothing."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("matrix-data"))


@pytest.fixture(scope="module")
def fast(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Cells]:
    """The `fast` subset of the spec's matrix, run once: where it ran, and its cells."""
    from stack.options_matrix import run_cells

    work = tmp_path_factory.mktemp("matrix") / "cells"
    return work, run_cells(MATRIX, data, work, _ignore, main, MATRIX.subset())


def _measured(
    fast: tuple[Path, Cells], matrix: Matrix = MATRIX, cells: Cells | None = None
) -> dict[str, object]:
    work, ran = fast
    return measured_matrix(matrix, cells if cells is not None else ran, trained_layers(work, ran))


def _place(fast: tuple[Path, Cells], data: Path, model: str = ALL) -> Place:
    combination = next(c for c in MATRIX.combinations() if c.name == model)
    work = fast[0]
    return Place(MATRIX, combination, data, work / model, work / "shared")


def _fired(matrix: Matrix, measured: dict[str, object]) -> str:
    outcome = matrix_outcome(measured)
    assert not outcome.ok
    return outcome.message


def _not_run(measured: dict[str, object]) -> int:
    """How many cells GATE-ARCH-013's verdict counts as not run (the judge's own count)."""
    found = re.search(r"(\d+) cell\(s\) not run", _fired(MATRIX, measured))
    return int(found.group(1)) if found else 0


def _missing(measured: dict[str, object]) -> list[tuple[str, str]]:
    return [cell for cell, verdict in cell_verdicts(measured).items() if verdict.verdict == "missing"]


# -- the clean path --------------------------------------------------------------------------------


@pytest.mark.holds("GATE-ARCH-013")
def test_every_command_runs_the_model_with_every_option(fast: tuple[Path, Cells]) -> None:
    _, cells = fast
    verdicts = cell_verdicts(_measured(fast))
    ran = [(model, command) for model, row in cells.items() for command in row]
    subset = MATRIX.subset()
    assert len(ran) == sum(len(commands) for commands in subset.values())
    assert len(subset[ALL]) == len(MATRIX.commands) - 1  # every command but lora-merge-onnx
    wrong = {cell: verdicts[cell] for cell in ran if verdicts[cell].verdict not in ("pass", "refused")}
    assert wrong == {}
    # Llama has no experts: export-hf refuses the model in one line, and import has nothing to read;
    # peft adapts a Llama, so lora-export sends the user to merge and export ONNX; the dense run's
    # sites are not the experts'. On a CPU without Triton a trace of the Triton path names
    # --backend sdpa, and SFT refuses a kernel without a document mask; sample and es fall back.
    refused = {cell: verdicts[cell].note for cell in ran if verdicts[cell].verdict == "refused"}
    no_experts = "a Hugging Face Llama or Qwen2 has no experts"
    peft = "peft adapts a Hugging Face Llama or Qwen2, which has no experts; merge, then export to ONNX"
    assert refused == {
        (ALL, "export-hf"): no_experts,
        (ALL, "import"): f"needs export-hf, which refuses this model: {no_experts}",
        (ALL, "lora-export"): peft,
        (ALL, "lora-import"): f"needs lora-export, which refuses this model: {peft}",
        (ALL, "trace-against"): (
            "the experts' sites are not the dense feed-forward's, so there is nothing to bisect site by site"
        ),
        ("triton", "trace"): (
            "a trace is of a path, and this machine cannot run the Triton one (sdpa computes the same)"
        ),
        ("triton", "sft"): (
            "the Triton kernel has no document mask, and SFT packs examples that must not see each other"
        ),
    }
    assert trained_layers(*fast) == {"dense": 2, ALL: 2, "triton": 2}


def test_surgery_and_lora_touch_every_matrix_and_say_so(fast: tuple[Path, Cells]) -> None:
    """'*' on the model with every option reaches the experts, both routers and q2/k2."""
    work = fast[0] / ALL
    expected = {"layers.1.moe.expert3.down", "layers.0.moe.router", "layers.1.router", "layers.0.k2"}
    for command in ("laser", "quantize"):
        selection = json.loads((work / command / "surgery.json").read_text())["measured"]["selection"]
        assert expected <= set(selection["touched"]) and selection["parameter_share"] == 1.0
        assert selection["skipped"] == [{"matrix": "logits", "reason": "tied: the same tensor as embed"}]
    lora = read_evidence(work / "lora-train" / "metadata.json").metrics["lora_matrices"]
    assert expected <= set(lora["touched"])
    assert {s["matrix"] for s in lora["skipped"]} == {"embed", "logits"}


def test_every_record_the_cells_filed_holds_under_the_integrity_check(fast: tuple[Path, Cells]) -> None:
    """The records of each model's cells, checked together as the ledger of their own they would
    be (the run's legs as filed, not its directory, which holds its last leg again): no violation.
    A checker that cannot follow an option calls a sound record false (a LoRA merge of a model with
    options 'on modules the checker cannot decide', a depth-routed model's two references held to
    one largest logit). Two cells are checked apart from the cells they share a name or a log with:
    distill-student, whose teacher is the dense model's run (every model's run is named `run`), and
    es-workers, which computes es's steps again, often to the bit, and an ES record claims no
    repeatability, so the two would be named one run (docs/concepts/integrity.md)."""
    work = fast[0]
    for model in (p for p in work.iterdir() if p.is_dir()):
        legs = records_named(model / "ledger")
        apart = ("run", STUDENT, ES_WORKERS)
        cells = [p.parent for p in model.glob(f"*/{EVIDENCE_FILE}") if p.parent.name not in apart]
        assert findings(*cells, *legs) == [], model.name
        if (model / ES_WORKERS / EVIDENCE_FILE).is_file():
            assert findings(model / ES_WORKERS, *legs) == [], model.name
    student = work / ALL / STUDENT
    found = findings(student, *records_named(work / "dense" / "ledger"), work / ALL / "ledger" / "run-leg2")
    assert [line for line in found if f"/{STUDENT}/" in line] == []


def test_a_cell_is_decided_by_the_exit_code(tmp_path: Path) -> None:
    assert run_cell(main, ["gates", "GATE-ARCH-013"]).outcome == "ok"
    refused = run_cell(main, ["inspect", str(tmp_path / "nothing")])
    assert refused.outcome == "refused" and "nothing" in refused.message
    assert run_cell(main, ["no-such-command"]).outcome == "refused"  # a usage error is exit 2 too


def test_the_command_never_overwrites(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    assert main(["options-matrix", "--data", str(data), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.gate("GATE-ARCH-013")
def test_the_command_records_its_matrix_and_judges_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack options-matrix` end to end on a spec whose matrix is one option and two commands:
    every cell runs and passes, and the record says the gate failed for the matrix's size alone."""
    spec = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), spec)
    small = {
        "model": MATRIX.model.model_dump(),
        "options": [{"name": "moe", "model": {"moe_experts": 2, "moe_top_k": 1}}],
        "commands": [{"name": "train"}, {"name": "inspect"}],
    }
    (spec / "options_matrix.yaml").write_text(json.dumps(small))
    monkeypatch.setenv("GATESTACK_SPEC", str(spec))
    out = tmp_path / "out"
    assert main(["options-matrix", "--data", str(data), "--out", str(out)]) == 3
    assert "GATE-ARCH-013" in capsys.readouterr().err
    table = json.loads((out / "matrix.json").read_text())
    assert {c["verdict"] for row in table["cells"].values() for c in row.values()} == {"pass"}
    record = read_evidence(out / "metadata.json")
    result = next(g for g in record.gates if g.id == "GATE-ARCH-013")
    assert result.verdict.value == "FAIL"
    assert "lists 1 option(s), fewer than 3" in (result.message or "")
    assert "lists 2 command(s), fewer than 36" in (result.message or "")
    assert "trains 0 model(s) on another attention path, fewer than 1" in (result.message or "")
    assert record.metrics["verdicts"] == {"pass": 4}
    # The site's table (docs/model.md includes it) is drawn from the record's measured cells.
    repo = tmp_path / "repo"
    make_repo(repo)
    render(repo, [out])
    snippet = (repo / GENERATED / "options-matrix.md").read_text()
    assert (
        "| <code>train</code> | pass | pass |" in snippet and "GATE-ARCH-013 FAIL; 4 cells: 4 pass" in snippet
    )


# -- falsifiers: what a cell must not do -----------------------------------------------------------


@pytest.mark.gate("GATE-ARCH-013")
def test_a_command_that_crashes_fails_its_cell(
    fast: tuple[Path, Cells], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracer cannot walk four experts (a bug planted here): exactly that cell fails."""
    mixture = hooks._mixture

    def crashing(moe: MoE, prefix: str) -> list[hooks.Place]:
        if moe.n_experts == 4:
            raise RuntimeError("planted: the tracer cannot walk four experts")
        return mixture(moe, prefix)

    monkeypatch.setattr(hooks, "_mixture", crashing)
    place = _place(fast, data)
    shutil.rmtree(place.work / "trace", ignore_errors=True)
    cell = run_cell(main, COMMAND_ARGV["trace"](place))
    assert cell.outcome == "crashed" and "planted" in cell.message
    cells = {**fast[1], ALL: {**fast[1][ALL], "trace": cell}}
    assert f"1 cell(s) failed: {ALL}/trace: crashed" in _fired(MATRIX, _measured(fast, cells=cells))


@pytest.mark.gate("GATE-ARCH-013")
def test_a_false_gate_fails_its_cell(
    fast: tuple[Path, Cells], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trace that calls every site an anomaly (a ratio planted infinite) exits 3: a gate."""
    monkeypatch.setattr(trace_anomaly, "_ratio", lambda std, baseline: float("inf"))
    place = _place(fast, data)
    shutil.rmtree(place.work / "trace", ignore_errors=True)
    cell = run_cell(main, COMMAND_ARGV["trace"](place))
    assert cell.outcome == "gate" and "anomaly" in cell.message
    cells = {**fast[1], ALL: {**fast[1][ALL], "trace": cell}}
    assert f"1 cell(s) failed: {ALL}/trace: gate" in _fired(MATRIX, _measured(fast, cells=cells))


@pytest.mark.gate("GATE-ARCH-013")
def test_a_bisection_against_other_weights_must_find_where_they_diverge(
    fast: tuple[Path, Cells], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model with the dense model's sites and weights of its own (another seed here; an option of
    a custom matrix that keeps the sites, another rope base say, makes one): its trace-against is
    ok when it finds (exit 3 and the verdict line), and differs when a bisection that never reads
    the other checkpoint (planted) finds nothing. The dense model against its own run finds nothing."""
    from stack.train import trained

    dense = next(c for c in MATRIX.combinations() if c.name == "dense")
    seeded = Place(MATRIX, dense, data, tmp_path / "seeded", fast[0] / "shared")
    assert run_cell(main, [*COMMAND_ARGV["train"](seeded), "--set", "train.seed=1"]).outcome == "ok"
    cell = _run(seeded, "trace-against", main)
    assert cell.outcome == "ok" and cell.message.startswith("verdict: "), cell
    own = _place(fast, data, "dense")
    shutil.rmtree(own.work / "trace-against", ignore_errors=True)
    assert _run(own, "trace-against", main).outcome == "ok"
    load = trained.load_trained
    monkeypatch.setattr(trained, "load_trained", lambda _path, *a, **k: load(seeded.run, *a, **k))
    shutil.rmtree(seeded.work / "trace-against")
    blind = _run(seeded, "trace-against", main)
    assert blind.outcome == "differs" and "found nothing against another model's weights" in blind.message
    cells = {**fast[1], "dense": {**fast[1]["dense"], "trace-against": blind}}
    assert "1 cell(s) failed: dense/trace-against: differs" in _fired(MATRIX, _measured(fast, cells=cells))


def _with_refusals(command: str, refuses: list[dict[str, str]]) -> Matrix:
    """The spec's matrix with `command`'s declared refusals replaced."""
    data = MATRIX.model_dump()
    for entry in data["commands"]:
        if entry["name"] == command:
            entry["refuses"] = refuses
    return Matrix.model_validate(data)


@pytest.mark.gate("GATE-ARCH-013")
def test_a_refusal_the_matrix_does_not_declare_fails(fast: tuple[Path, Cells]) -> None:
    """Without export-hf's declared refusals, its refusal of the experts is a failure, and so is
    import, which it left with nothing to read."""
    bare = _with_refusals("export-hf", [])
    verdicts = cell_verdicts(_measured(fast, bare))
    assert verdicts[(ALL, "export-hf")].verdict == "fail"
    assert "refused where the matrix declares no refusal" in verdicts[(ALL, "export-hf")].note
    assert verdicts[(ALL, "import")].verdict == "fail"
    assert "2 cell(s) failed" in _fired(bare, _measured(fast, bare))


@pytest.mark.gate("GATE-ARCH-013")
def test_a_declared_refusal_that_no_longer_happens_fails(fast: tuple[Path, Cells]) -> None:
    """export-onnx declared to refuse experts but exporting them: the declaration does not tell the
    truth, and the cell says so."""
    stale = _with_refusals("export-onnx", [{"option": "moe", "reason": "data-dependent shapes", "says": "x"}])
    fired = _fired(MATRIX, _measured(fast, stale))
    assert f"1 cell(s) failed: {ALL}/export-onnx: " in fired
    assert "ran, where the matrix declares a refusal" in fired


@pytest.mark.gate("GATE-ARCH-013")
def test_a_refusal_for_another_reason_fails(fast: tuple[Path, Cells]) -> None:
    """A refusal whose line does not hold the declared text refused for some other reason."""
    reworded = _with_refusals(
        "export-hf", [{"option": "moe", "reason": "no experts", "says": "no such text"}]
    )
    fired = _fired(MATRIX, _measured(fast, reworded))
    assert f"cell(s) failed: {ALL}/export-hf: refused otherwise than declared" in fired


# -- falsifiers: the matrix's size ---------------------------------------------------------------


@pytest.mark.gate("GATE-ARCH-013")
def test_a_subset_of_the_matrix_cannot_pass(fast: tuple[Path, Cells]) -> None:
    """The fast subset's cells all pass, yet the models and commands it left out are missing."""
    with pytest.raises(GateViolation) as fired:
        settle(MATRIX, fast[1], trained_layers(*fast))
    assert fired.value.gate_id == "GATE-ARCH-013"
    assert "cell(s) failed" not in fired.value.message
    assert (
        "cell(s) not run: dense/train-bf16: no cell recorded; dense/resume: no cell recorded"
        in fired.value.message
    )


@pytest.mark.gate("GATE-ARCH-013")
def test_a_matrix_short_of_an_option_a_path_a_command_or_a_layer_fires(fast: tuple[Path, Cells]) -> None:
    """min_options, min_paths, min_commands and min_layers: one fewer fires; the spec's matrix sits
    on each."""
    thresholds = load_spec().gate("GATE-ARCH-013").threshold_values
    assert len(MATRIX.options) == thresholds["min_options"]
    assert len(MATRIX.paths) == thresholds["min_paths"]
    assert len(MATRIX.commands) == thresholds["min_commands"]
    assert min(trained_layers(*fast).values()) == thresholds["min_layers"]
    kept = {"model": MATRIX.model, "paths": MATRIX.paths, "tolerances": MATRIX.tolerances}
    short = Matrix(**{**kept, "options": MATRIX.options[:-1], "commands": MATRIX.commands})
    assert "lists 2 option(s), fewer than 3" in _fired(short, _measured(fast, short))
    narrow = Matrix(**{**kept, "options": MATRIX.options, "commands": MATRIX.commands[:-1]})
    assert "lists 35 command(s), fewer than 36" in _fired(narrow, _measured(fast, narrow))
    one_path = Matrix(**{**kept, "paths": [], "options": MATRIX.options, "commands": MATRIX.commands})
    assert "trains 0 model(s) on another attention path, fewer than 1" in _fired(
        one_path, _measured(fast, one_path)
    )
    shallow = {**_measured(fast), "layers": {"dense": 1, ALL: 2}}
    assert "models shallower than 2 layers: dense (1)" in _fired(MATRIX, shallow)


@pytest.mark.gate("GATE-ARCH-013")
def test_an_option_the_model_lacks_is_missing(fast: tuple[Path, Cells], data: Path) -> None:
    wings = Matrix(
        model=MATRIX.model,
        options=[*MATRIX.options, OptionSpec(name="wings", model={"wings": 2})],
        paths=MATRIX.paths,
        commands=MATRIX.commands,
    )
    combination = next(c for c in wings.combinations() if c.name == "wings")
    place = Place(wings, combination, data, fast[0] / "wings", fast[0] / "shared")
    row = run_combination(wings, place, _ignore, {}, main, only={"train", "sample"})
    assert {c.outcome for c in row.values()} == {"missing"}
    planted = _measured(fast, wings, {**fast[1], "wings": row})
    assert cell_verdicts(planted)[("wings", "train")].note == "the model has no model.wings yet"
    assert ("wings", "train") in _missing(planted) and _not_run(planted) == len(_missing(planted))


@pytest.mark.gate("GATE-ARCH-013")
def test_a_cell_left_out_of_the_record_is_missing(fast: tuple[Path, Cells]) -> None:
    """A record whose matrix names a cell it holds no result for cannot pass by omission."""
    measured = _measured(fast)
    del measured["cells"][ALL]["eval"]  # type: ignore[index]
    assert cell_verdicts(measured)[(ALL, "eval")].note == "no cell recorded"
    assert _not_run(measured) == _not_run(_measured(fast)) + 1


# -- cells whose failure is silent: wrong results, refusals of what a model lacks ---------------


@pytest.mark.gate("GATE-ARCH-013")
def test_a_fine_tune_that_drops_what_it_was_asked_differs(
    fast: tuple[Path, Cells], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings --init-from dropped in silence (the model keeps the checkpoint's, the asked
    training settings vanish) exit 0: the cell's check of what the run holds makes it fail."""
    from stack.train import run as train_run

    def dropping(config: object, source: dict[str, object], *_: object) -> object:
        model = {**source, "attention": config.model.attention}  # type: ignore[attr-defined]
        return config.model_copy(update={"model": ModelConfig.from_dict(model)})  # type: ignore[attr-defined]

    monkeypatch.setattr(train_run, "_with_model_of", dropping)
    place = _place(fast, data)
    shutil.rmtree(place.work / "init-from-options", ignore_errors=True)
    cell = _run(place, "init-from-options", main)
    assert cell.outcome == "differs" and "not the asked" in cell.message
    cells = {**fast[1], ALL: {**fast[1][ALL], "init-from-options": cell}}
    assert f"1 cell(s) failed: {ALL}/init-from-options: differs" in _fired(
        MATRIX, _measured(fast, cells=cells)
    )


@pytest.mark.gate("GATE-ARCH-013")
def test_es_workers_with_a_model_of_their_own_making_differ(
    fast: tuple[Path, Cells], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' model built afresh from the config (defect: a mixture-of-depths threshold of 0
    where the run's is its training's split score) scores other members than es did."""
    from stack.es import population
    from stack.model.gpt import GPT

    start = population.Pool.__init__

    def fresh(self: population.Pool, model: GPT, fitness: object, workers: int) -> None:
        start(self, GPT(model.config), fitness, workers)  # type: ignore[arg-type]

    monkeypatch.setattr(population.Pool, "__init__", fresh)
    place = _place(fast, data)
    shutil.rmtree(place.work / "es-workers", ignore_errors=True)
    cell = _run(place, "es-workers", main)
    assert cell.outcome == "differs" and "is not one worker's" in cell.message
    cells = {**fast[1], ALL: {**fast[1][ALL], "es-workers": cell}}
    assert f"1 cell(s) failed: {ALL}/es-workers: differs" in _fired(MATRIX, _measured(fast, cells=cells))


def test_a_refusal_declared_for_what_a_model_lacks() -> None:
    """`lacks`: init-from-options is refused by every model without an option, naming it, and runs
    on the model with them all; the judge tells the one from the other (no run needed)."""
    measured = {
        "options": ["moe", "mod"],
        "paths": [],
        "layers": {"dense": 2},
        "commands": [
            {"name": "train", "after": None, "refuses": []},
            {
                "name": "init-from-options",
                "after": None,
                "refuses": [
                    {"lacks": "moe", "reason": "experts", "says": "model.moe_experts (0 -> 4)"},
                    {"lacks": "mod", "reason": "routing", "says": "model.mod_every (0 -> 1)"},
                ],
            },
        ],
        "cells": {
            "dense": {"train": "ok", "init-from-options": "refused"},
            "moe": {"train": "ok", "init-from-options": "refused"},
            "mod": {"train": "ok", "init-from-options": "ok"},
            "moe+mod": {"train": "ok", "init-from-options": "ok"},
        },
        "messages": {
            "dense/init-from-options": "model.moe_experts (0 -> 4), model.mod_every (0 -> 1) would change it",
            "moe/init-from-options": "error: model.mod_every (0 -> 1) would change it",
        },
    }
    verdicts = cell_verdicts(measured)
    assert verdicts[("dense", "init-from-options")].verdict == "refused"
    assert verdicts[("moe", "init-from-options")].note == "routing"
    assert verdicts[("moe+mod", "init-from-options")].verdict == "pass"
    assert verdicts[("mod", "init-from-options")].verdict == "fail"  # it lacks experts, yet it ran
    assert "no moe: experts" in verdicts[("mod", "init-from-options")].note


def test_the_triton_row_trains_where_triton_runs_and_its_cells_run_where_it_cannot(
    fast: tuple[Path, Cells],
) -> None:
    """Its run says triton (trained in a process of its own, under Triton's interpreter); this
    process keeps TRITON_INTERPRET (the kernel tests set it), unset for the row's cells only, which
    sampled and evolved the model on sdpa."""
    import os

    from stack.train.checkpoint import read_state
    from stack.train.trained import resolve_checkpoint

    state = read_state(resolve_checkpoint(fast[0] / "triton" / "run"))
    assert state["config"]["model"]["attention"] == "triton"
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert {fast[1]["triton"][c].outcome for c in ("train", "sample", "es")} == {"ok"}


def test_init_from_options_asks_only_the_settings_a_matrixs_model_takes(tmp_path: Path) -> None:
    """A matrix without experts or depth routing asks no moe_z_coef or mod_capacity of its started
    model, which a model without those options refuses (a custom matrix would lose every
    init-from-options cell to that refusal); the shipped matrix asks all of them."""
    matrix = load_matrix()
    plain = matrix.model_copy(update={"options": [o for o in matrix.options if o.name not in ("moe", "mod")]})
    dense = next(c for c in plain.combinations() if not c.held)
    at = Place(plain, dense, tmp_path, tmp_path, tmp_path)
    assert "moe_z_coef" not in _knobs(at) and "mod_capacity" not in _knobs(at)
    assert set(_knobs(Place(matrix, dense, tmp_path, tmp_path, tmp_path))) == {
        "mod_capacity",
        "moe_z_coef",
        "attention",
    }
