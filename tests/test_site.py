"""The generated pages show each gate, the traceability matrix and every run of the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from render_site import GENERATED, main, render
from scratch import make_record, make_repo

from contracts.judges import TEST_FAILED


def test_pages_for_gates_matrix_and_runs(tmp_path: Path) -> None:
    sha = make_repo(tmp_path)
    make_record(tmp_path, "run-a", sha, {"GATE-INTEG-001": TEST_FAILED}, artifact_text="{}\n")
    written = render(tmp_path)
    out = tmp_path / GENERATED
    assert out / "gates" / "GATE-INTEG-001.md" in written
    gate_page = (out / "gates" / "GATE-INTEG-001.md").read_text()
    assert "test_integ_001" in gate_page and "FAIL" in gate_page and "run-a" in gate_page
    matrix = (out / "gates" / "index.md").read_text()
    assert "| [GATE-DATA-001](GATE-DATA-001.md) |" in matrix
    assert "2 ACTIVE, 2 of them covered" in matrix
    run_page = (out / "evidence" / "run-a.md").read_text()
    assert "**FAIL**" in run_page and "metrics.jsonl" in run_page
    assert "✔ red when off" in matrix  # the scratch repository's falsify record proves its gates
    assert "run-a" in (out / "evidence" / "index.md").read_text()
    assert (out / "schemas" / "evidence.schema.json").is_file()


def test_stale_generated_pages_are_removed(tmp_path: Path) -> None:
    make_repo(tmp_path)
    stale = tmp_path / GENERATED / "evidence" / "gone.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    render(tmp_path)
    assert not stale.exists()


def test_broken_spec_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path)
    (tmp_path / "spec" / "spec.yaml").write_text("spec_id: x\n")
    assert main(["--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
