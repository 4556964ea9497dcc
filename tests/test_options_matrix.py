"""Every advertised option runs every path (GATE-ARCH-013), through the real command line.

The spec's matrix runs once for the module, through `stack options-matrix`, and its cells are
read back from the matrix.json it writes. Falsifiers plant an option registered only here: one
whose trace crashes, one that training refuses, one the model lacks; and a matrix one option or
one path short of the gate's minimum (the spec's matrix, just inside, holds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from record_checks import check_record_truth
from train_support import prepared

from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.options_matrix import (
    Cell,
    Matrix,
    OptionSpec,
    load_matrix,
    matrix_outcome,
    measured_matrix,
    run_cell,
    run_option,
    settle,
    unknown_settings,
)
from stack.trace.hooks import SiteHooks

MATRIX = load_matrix()
OPTIONS = MATRIX.options
Cells = dict[str, dict[str, Cell]]


def _ignore(*_: object) -> None:
    """A cell printer that prints nothing."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("matrix-data"))


@pytest.fixture(scope="module")
def recorded(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """`stack options-matrix` over the spec's matrix, once: its exit code and its --out."""
    out = tmp_path_factory.mktemp("matrix") / "out"
    return main(["options-matrix", "--data", str(data), "--out", str(out)]), out


@pytest.fixture(scope="module")
def cells(recorded: tuple[int, Path]) -> Cells:
    """Every cell of the spec's matrix, as matrix.json recorded it."""
    table = json.loads((recorded[1] / "matrix.json").read_text())
    return {o: {p: Cell(**c) for p, c in row.items()} for o, row in table["cells"].items()}


def _fired(matrix: Matrix, cells: Cells) -> str:
    with pytest.raises(GateViolation) as fired:
        settle(matrix, cells)
    assert fired.value.gate_id == "GATE-ARCH-013"
    return fired.value.message


# -- the clean path ----------------------------------------------------------------------------


@pytest.mark.holds("GATE-ARCH-013")
def test_every_option_runs_every_path(recorded: tuple[int, Path], cells: Cells) -> None:
    code, out = recorded
    assert code == 0, json.dumps({o: {p: c.outcome for p, c in row.items()} for o, row in cells.items()})
    record = read_evidence(out / "metadata.json")
    assert record.run.kind == "options-matrix"
    assert {g.id: g.verdict.value for g in record.gates} == {"GATE-ARCH-013": "PASS"}
    assert check_record_truth(record, out, load_spec()).violations == []
    assert matrix_outcome(measured_matrix(MATRIX, cells)).ok
    refused = {(o, p) for o, row in cells.items() for p, c in row.items() if c.outcome != "ok"}
    # Llama has no experts, no second attention branch, no routed depth: every option but dense
    # is refused by the exporter, in one line, and nothing else is refused.
    assert refused == {(o.name, "export") for o in OPTIONS if o.name != "dense"}
    assert "cannot be exported as a Hugging Face Llama" in cells["moe"]["export"].message
    assert "\n" not in cells["moe"]["export"].message


def test_options_matrix_never_overwrites(
    recorded: tuple[int, Path], data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["options-matrix", "--data", str(data), "--out", str(recorded[1])]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_cell_is_decided_by_the_exit_code(tmp_path: Path) -> None:
    assert run_cell(main, ["gates", "GATE-ARCH-013"]).outcome == "ok"
    refused = run_cell(main, ["inspect", str(tmp_path / "nothing")])
    assert refused.outcome == "refused" and "nothing" in refused.message
    assert run_cell(main, ["no-such-command"]).outcome == "refused"  # a usage error is exit 2 too


# -- falsifiers: options planted here ---------------------------------------------------------


@pytest.mark.gate("GATE-ARCH-013")
def test_an_option_that_crashes_on_one_path_fires(
    cells: Cells, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three experts crash the tracer (a bug planted here); every other cell stays clean."""
    planted = OptionSpec(name="planted", model={"moe_experts": 3, "moe_top_k": 1})
    mixture = SiteHooks._mixture

    def crashing(self: SiteHooks, moe: object, prefix: str) -> None:
        if getattr(moe, "n_experts", 0) == 3:
            raise RuntimeError("planted: the tracer cannot walk three experts")
        mixture(self, moe, prefix)  # type: ignore[arg-type]

    monkeypatch.setattr(SiteHooks, "_mixture", crashing)
    row = run_option(planted, MATRIX.paths, data, tmp_path, _ignore, main)
    assert row["trace"].outcome == "crashed" and "planted" in row["trace"].message
    assert [p for p, c in row.items() if c.outcome == "crashed"] == ["trace"]
    message = _fired(Matrix(options=[*OPTIONS, planted], paths=MATRIX.paths), {**cells, "planted": row})
    assert "1 cell(s) failed: planted/trace crashed" in message


@pytest.mark.gate("GATE-ARCH-013")
def test_a_refusal_where_the_path_may_not_refuse_fires(cells: Cells, data: Path, tmp_path: Path) -> None:
    """Training refuses top-3 of two experts in one line: a refusal, but train may not refuse."""
    planted = OptionSpec(name="refused", model={"moe_experts": 2, "moe_top_k": 3})
    row = run_option(planted, MATRIX.paths, data, tmp_path, _ignore, main)
    assert row["train"].outcome == "refused" and "moe_top_k 3 exceeds" in row["train"].message
    message = _fired(Matrix(options=[*OPTIONS, planted], paths=MATRIX.paths), {**cells, "refused": row})
    assert "refused/train refused where it may not" in message
    assert "6 cell(s) not run" in message  # the paths after a failed train


@pytest.mark.gate("GATE-ARCH-013")
def test_an_option_the_model_lacks_is_missing(cells: Cells, data: Path, tmp_path: Path) -> None:
    planted = OptionSpec(name="wings", model={"wings": 2})
    assert unknown_settings(planted) == ["model.wings"]
    row = run_option(planted, MATRIX.paths, data, tmp_path, _ignore, main)
    assert {c.outcome for c in row.values()} == {"missing"}
    message = _fired(Matrix(options=[*OPTIONS, planted], paths=MATRIX.paths), {**cells, "wings": row})
    assert "7 cell(s) not run: wings/train: the model has no model.wings yet" in message


@pytest.mark.gate("GATE-ARCH-013")
def test_a_matrix_short_of_an_option_or_a_path_fires(cells: Cells) -> None:
    """min_options and min_paths: one fewer fires (the full matrix, just inside, holds above)."""
    thresholds = load_spec().gate("GATE-ARCH-013").threshold_values
    assert len(OPTIONS) == thresholds["min_options"] and len(MATRIX.paths) == thresholds["min_paths"]
    short = Matrix(options=OPTIONS[:-1], paths=MATRIX.paths)
    assert "lists 5 option(s), fewer than 6" in _fired(short, cells)
    narrow = Matrix(options=OPTIONS, paths=MATRIX.paths[:-1])
    assert "lists 6 path(s), fewer than 7" in _fired(narrow, cells)


@pytest.mark.gate("GATE-ARCH-013")
def test_a_cell_left_out_of_the_record_is_missing(cells: Cells) -> None:
    """A record whose matrix names a cell it holds no result for cannot pass by omission."""
    measured = measured_matrix(MATRIX, cells)
    del measured["cells"]["dense"]["eval"]
    outcome = matrix_outcome(measured)
    assert not outcome.ok and "dense/eval: no cell recorded" in outcome.message
