"""What `stack train` and `stack prepare` say at their end: where the result is and what to run next."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.evidence import EVIDENCE_FILE, Verdict, read_evidence
from stack.cli import main
from tests.support.train_support import prepared


def test_train_says_each_warning_gate_as_prepare_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's WARN verdicts (GATE-DATA-004's few tokens per parameter on a small corpus) are not in
    its record alone: the end of the run says each on the console, in prepare's words. The corpus
    is the tests' generated one, not the docs, whose split can leave an empty held-out part, which
    `stack train` refuses."""
    data = prepared(tmp_path)
    capsys.readouterr()
    run = tmp_path / "R"
    argv = ["train", "--data", str(data), "--out", str(run), "--preset", "smoke"]
    assert main([*argv, "--set", "train.steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    warned = [g for g in read_evidence(run / EVIDENCE_FILE).gates if g.verdict is Verdict.WARN]
    assert "GATE-DATA-004" in {g.id for g in warned}
    said = [line for line in out if line.startswith("  warning ")]
    assert said == [f"  warning {g.id}: {g.message}" for g in warned], out
    assert out.index(said[0]) > next(i for i, line in enumerate(out) if "completed at step 2" in line)


def _empty_heldout_warning(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["prepare", *argv]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "held-out split is empty" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_empty_heldout_of_one_document_names_the_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One document cannot be split by any --val-fraction; the advice names --doc-bytes/--doc-sep."""
    text = tmp_path / "input.txt"
    # 7,680 bytes: one document at 1 MiB; 8 at 1 KiB, of which this text's draw holds none out
    text.write_text(
        "".join(f"{i:04d} the quick brown fox 1 jumps over the lazy dog, line by line\n" for i in range(120))
    )
    one = [str(text), "--out", str(tmp_path / "one"), "--doc-bytes", "1M"]
    line = _empty_heldout_warning(capsys, one)
    assert "none of the 1 document(s)" in line
    assert "--doc-bytes SIZE" in line and "--doc-sep SEP" in line and "raise --val-fraction" not in line
    cut = _empty_heldout_warning(capsys, [str(text), "--out", str(tmp_path / "cut"), "--doc-bytes", "1K"])
    assert "none of the 8 documents" in cut and "8 are too few" in cut and "raise --val-fraction" not in cut


def test_empty_heldout_of_a_few_documents_names_more_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a few documents and none held out, a larger --val-fraction would hold out a share of
    them, any share of the text: the fix is more documents (stack.data.doc_size)."""
    text = tmp_path / "input.txt"
    text.write_text("\n\n".join(f"Document {n} of a few, its own words." for n in range(3)), encoding="utf-8")
    argv = [str(text), "--out", str(tmp_path / "few"), "--doc-sep", "\\n\\n", "--val-fraction", "0.01"]
    line = _empty_heldout_warning(capsys, argv)
    assert "none of the 3 documents" in line and "3 are too few" in line and "about 2,000 would" in line
    assert "cut the text into more documents" in line and "raise --val-fraction" not in line
