"""GATE-ES-007: an evolution-strategies run does not end with its loss risen (contracts.es_trend).

The planted bug is the one seen at OpenAI-ES's step on a trained model: a step size that carries the
weights away from lower loss. Each step is still the step the method defines (GATE-ES-001..006
hold), so only where the steps lead shows it. The falsifiers run `stack es` with a step size two
hundred times the default and hold the judge to its threshold from both sides; the benign run's
loss stays where it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.es_trend import loss_trend
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared
from tools.integrity.record_checks import check_record_truth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model saved as a run, and a byte-tokenised DATA_DIR."""
    root = tmp_path_factory.mktemp("es-trend")
    save_run(root / "source", tiny_model())
    return {"source": root / "source", "data": prepared(root)}


def _es(world: dict[str, Path], out: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    """`stack es` for 8 steps of 4 members with `options`; its screen (it must end 0: a warning)."""
    argv = ["es", str(world["source"]), "--data", str(world["data"]), "--out", str(out)]
    assert main([*argv, "--population", "4", "--steps", "8", *options]) == 0
    return capsys.readouterr().out


def _result(out: Path) -> dict:
    record = read_evidence(out / "metadata.json")
    assert check_record_truth(record, out, load_spec()).violations == []
    (gate,) = [g for g in record.gates if g.id == "GATE-ES-007"]
    return {"verdict": gate.verdict.value, "measured": gate.measured}


@pytest.mark.gate("GATE-ES-007")
def test_a_step_size_that_carries_the_weights_away_warns_and_the_run_is_written(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--lr 0.1: Adam moves every weight by about 0.1 a step, and the population loss climbs; the
    run is written (exit 0), its record holds the warning, and the screen ends with it."""
    out = tmp_path / "out"
    screen = _es(world, out, capsys, "--lr", "0.1")
    result = _result(out)
    assert result["verdict"] == "WARN" and result["measured"]["window"] == 4
    (line,) = [line for line in screen.splitlines() if "GATE-ES-007" in line]
    assert line.startswith("  warning GATE-ES-007: the population loss rose from") and "--lr" in line


@pytest.mark.holds("GATE-ES-007")
def test_a_step_size_that_barely_moves_the_weights_passes(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--lr 1e-6 --sigma 1e-4: the loss stays where the model left it, batch noise aside."""
    out = tmp_path / "out"
    screen = _es(world, out, capsys, "--lr", "1e-6", "--sigma", "1e-4")
    assert _result(out)["verdict"] == "PASS" and "warning" not in screen


@pytest.mark.gate("GATE-ES-007")
def test_a_rise_just_beyond_the_limit_fires_and_just_inside_holds() -> None:
    """The judge on measured values: a rise of max_rise_sds standard errors holds, a hair more
    fires; a fall of any size holds."""
    limit = load_spec().threshold("GATE-ES-007", "max_rise_sds")
    base = {"steps": 20, "window": 10, "first_loss": 5.0, "rise_se": 0.1}
    assert measure("GATE-ES-007", {**base, "last_loss": 5.0 + limit * 0.1}).ok
    beyond = measure("GATE-ES-007", {**base, "last_loss": 5.0 + limit * 0.1 + 1e-9})
    assert not beyond.ok and "the population loss rose from 5.0000" in beyond.message
    assert measure("GATE-ES-007", {**base, "last_loss": 1.0}).ok


@pytest.mark.gate("GATE-ES-007")
def test_windows_other_than_the_spec_s_fire_and_a_short_run_is_not_judged() -> None:
    """A record that compared other windows than window_steps (or half the steps) is refused; a run
    of three steps has a window of one, too short to tell a rise from its batches."""
    wide = {"steps": 20, "window": 5, "first_loss": 5.0, "last_loss": 5.0, "rise_se": 0.1}
    assert "not the spec's 10" in measure("GATE-ES-007", wide).message
    short = loss_trend([-5.0, -9.0, -30.0], 10)
    assert short == {"steps": 3, "window": 1} and measure("GATE-ES-007", short).ok


def test_a_steady_rise_is_not_taken_for_spread() -> None:
    """The spread is the successive steps' (von Neumann's): a loss climbing 0.5 a step with no
    noise has a spread of 0.125, where each window's own variance would be 3.5 and hide it."""
    measured = loss_trend([-(5.0 + 0.5 * step) for step in range(8)], 10)
    assert measured["window"] == 4 and measured["last_loss"] - measured["first_loss"] == 2.0
    assert measured["rise_se"] == pytest.approx((2 * 0.125 / 4) ** 0.5)


def test_the_checker_derives_the_values_from_the_metrics_log(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step line whose loss is edited moves what the log derives: the record's values are named."""
    out = tmp_path / "out"
    _es(world, out, capsys, "--lr", "1e-6", "--sigma", "1e-4")
    record = read_evidence(out / "metadata.json")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lines[-1]["fitness_mean"] -= 1.0
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    violations = check_record_truth(record, out, load_spec()).violations
    assert any("gates[GATE-ES-007].measured.last_loss" in v for v in violations), violations
