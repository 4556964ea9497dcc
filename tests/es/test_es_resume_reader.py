"""`stack es --resume` restores the data reader: planted, a resume that does not.

A resumed reader that starts its plan again evaluates steps 3–4's population on step 1–2's
windows (step-3 fitness mean −4.2655 → −4.7567) with exit 0 and the integrity check OK unless it
is caught. Each ES step's batch, the one its fitness is computed on, is held to the windows the
plan of the run's seed gives that step, and the reader's count of batches served to the run's
steps (GATE-DATA-001, checks windows and stream, through stack.data.reader.check_served as
training does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.data.reader import TokenReader
from tests.support.ledger_support import edited, findings, gate
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared
from tools.integrity.record_checks import check_record_truth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model saved as a run, and a byte-tokenised DATA_DIR."""
    root = tmp_path_factory.mktemp("esread")
    save_run(root / "source", tiny_model())
    return {"source": root / "source", "data": prepared(root)}


def _started(world: dict[str, Path], out: Path) -> None:
    """Two steps of `stack es`, saved at each: the checkpoint a resume continues from."""
    argv = ["es", str(world["source"]), "--data", str(world["data"]), "--out", str(out)]
    assert main([*argv, "--population", "4", "--steps", "2", "--save-every", "1"]) == 0


def _data_001(out: Path) -> Any:
    return next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-DATA-001")


@pytest.mark.gate("GATE-DATA-001")
def test_a_resume_that_restarts_the_reader_halts(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: the resume's reader keeps its fresh state instead of the checkpoint's, so step 3
    would read step 1's windows. The first resumed step halts (exit 3, GATE-DATA-001 named): the
    reader has served 1 batch where the run has taken 3."""
    out = tmp_path / "out"
    _started(world, out)
    monkeypatch.setattr(TokenReader, "load_state_dict", lambda self, state: None)
    assert main(["es", "--resume", str(out), "--steps", "4"]) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-001" in err and "served 1 batch(es) where the run has taken 3" in err, err
    result = _data_001(out)
    assert result.verdict.value == "FAIL"
    assert result.measured["served_batches"] == 1 and result.measured["taken_batches"] == 3


@pytest.mark.gate("GATE-DATA-001")
def test_a_step_evaluated_on_another_step_s_windows_halts(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reader whose batches are another step's windows while its counts stay right (the served
    batch replaced by the first one it served): the windows check sees the rows at step 2."""
    served: list[Any] = []
    real = TokenReader.next_batch

    def first_again(self: TokenReader) -> Any:
        batch = real(self)
        served.append(batch)
        return served[0]

    monkeypatch.setattr(TokenReader, "next_batch", first_again)
    argv = ["es", str(world["source"]), "--data", str(world["data"]), "--out", str(tmp_path / "out")]
    assert main([*argv, "--population", "4", "--steps", "2"]) == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-001" in err, err
    assert _data_001(tmp_path / "out").measured["windows_mismatched"] > 0


@pytest.mark.holds("GATE-DATA-001")
def test_an_honest_resume_passes_and_checks_clean(world: dict[str, Path], tmp_path: Path) -> None:
    """The restored reader goes on from the checkpoint's place: every resumed step's batch is its
    planned one, the record states the served and taken counts of its last step, and checks clean."""
    out = tmp_path / "out"
    _started(world, out)
    assert main(["es", "--resume", str(out), "--steps", "4"]) == 0
    result = _data_001(out)
    assert result.verdict.value == "PASS"
    assert result.measured["served_batches"] == result.measured["taken_batches"] == 4
    assert result.measured["windows_mismatched"] == 0
    record = read_evidence(out / "metadata.json")
    assert check_record_truth(record, out, load_spec()).violations == []


def test_the_checker_derives_the_counts_an_es_record_states(world: dict[str, Path], tmp_path: Path) -> None:
    """A resumed run's GATE-DATA-001 counts are its log's last step: a record saying the run took
    and the reader served 2 batches, alike so the judge passes, is named from the log alone."""
    out = tmp_path / "out"
    _started(world, out)
    assert main(["es", "--resume", str(out), "--steps", "3"]) == 0
    assert findings(out) == []
    last = _data_001(out).measured["taken_batches"]

    def forged(data: dict, _dir: Path) -> None:
        measured = gate(data, "GATE-DATA-001")["measured"]
        measured["served_batches"] = measured["taken_batches"] = last - 1

    found = findings(edited(out, forged))
    assert any(f"served_batches is {last - 1}, but its artifacts derive {last}" in f for f in found), found
