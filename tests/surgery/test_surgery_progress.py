"""Progress on long surgery: `stack laser` and `stack quantize` say each matrix as it is done.

A user saw it: on a 100 M-parameter import, laser ran 85 exact float64 SVDs for six
minutes and quantize five, with nothing on stderr until the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.cli import main
from stack.model.targets import select
from stack.surgery.hqq import HalfQuadratic, quantise
from stack.surgery.laser import laser
from tests.support.trace_support import save_run, tiny_model


def _targets() -> list:
    return list(select(tiny_model(), ["*"], None).targets)


def test_laser_reports_each_matrix_once_in_order() -> None:
    reached: list[tuple[int, int]] = []
    targets = _targets()
    laser(targets, 0.5, lambda done, total: reached.append((done, total)))
    assert reached == [(i, len(targets)) for i in range(1, len(targets) + 1)]


def test_quantise_reports_each_matrix_once_in_order() -> None:
    reached: list[tuple[int, int]] = []
    targets = _targets()
    quantise(targets, 4, None, HalfQuadratic(), lambda done, total: reached.append((done, total)))
    assert reached == [(i, len(targets)) for i in range(1, len(targets) + 1)]


@pytest.mark.parametrize(("command", "said"), [("laser", "truncated"), ("quantize", "quantised")])
def test_the_command_shows_its_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, said: str
) -> None:
    source = save_run(tmp_path / "source", tiny_model())
    extra = ["--rho", "0.5"] if command == "laser" else ["--bits", "8"]
    assert main([command, str(source), "--targets", "*", "--out", str(tmp_path / "out"), *extra]) == 0
    err = capsys.readouterr().err
    assert f"stack {command}: {said}: " in err and " matrices" in err
