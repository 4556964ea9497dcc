"""Round-12 new-user audit K23: what `stack train` says at its end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contracts.evidence import EVIDENCE_FILE, Verdict, read_evidence
from stack.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_train_says_each_warning_gate_as_prepare_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """K23: a run's WARN verdicts (GATE-DATA-004's few tokens per parameter on a small corpus) were in
    its record and never on the console; the end of the run now says each, in prepare's words."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    for page in DOCS.glob("*.md"):
        shutil.copy(page, corpus)
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "D")]) == 0
    capsys.readouterr()
    run = tmp_path / "R"
    argv = ["train", "--data", str(tmp_path / "D"), "--out", str(run), "--preset", "smoke"]
    assert main([*argv, "--set", "train.steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    warned = [g for g in read_evidence(run / EVIDENCE_FILE).gates if g.verdict is Verdict.WARN]
    assert "GATE-DATA-004" in {g.id for g in warned}
    said = [line for line in out if line.startswith("  warning ")]
    assert said == [f"  warning {g.id}: {g.message}" for g in warned], out
    assert out.index(said[0]) > next(i for i, line in enumerate(out) if "completed at step 2" in line)
