"""Refusals that send the user to the fix that works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack.cli import main

RECORDS = {
    "chat": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    "prompt-completion": {"prompt": "2 + 2 =", "completion": " 4"},
    "prefs": {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."},
}


@pytest.mark.parametrize("shape", RECORDS)
@pytest.mark.parametrize("text_field", [None, "messages"])
def test_fine_tuning_records_among_documents_name_their_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str, text_field: str | None
) -> None:
    """A fine-tuning file in a folder of documents was sent from --text-field to --text-field
    ("holds an array"), never to the --format that reads it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("plain text\n", encoding="utf-8")
    (folder / "tuning.jsonl").write_text(json.dumps(RECORDS[shape]) + "\n", encoding="utf-8")
    argv = ["prepare", str(folder), "--out", str(tmp_path / "data")]
    if text_field is not None and shape == "chat":
        argv += ["--text-field", text_field]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and f"stack prepare --format {shape}" in err[-1], err
