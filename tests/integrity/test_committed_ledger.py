"""The committed ledger a runs-only check joins its runs to (tools.integrity.check.committed_ledger)
is read once for each state of evidence/, and what the joins derive from a record's cited files is
kept with the loaded record (LoadedEvidence.derived): an edit of such a file, even one that keeps
its size, must be read by the next check, never answered from what an earlier check kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tools.integrity.audit import LoadedEvidence
from tools.integrity.check import METRICS_LOG, _cited_text, committed_ledger

ROOT = Path(__file__).resolve().parents[2]
RECORD = "bench-repeat-20261126T174609-compiled-A"  # a committed record that cites its metrics log


def _logged(root: Path) -> tuple[LoadedEvidence, str | None]:
    """The record of the scratch ledger at `root`, as a runs-only check joins it, and its log's text
    as the joins read it."""
    (loaded,), _known = committed_ledger(root)
    return loaded, _cited_text(loaded, METRICS_LOG)


def test_a_cited_log_edited_between_two_checks_is_read_again(tmp_path: Path) -> None:
    ledger = tmp_path / "evidence" / "runs"
    shutil.copytree(ROOT / "evidence" / "runs" / RECORD, ledger / RECORD)
    first, text = _logged(tmp_path)
    assert text is not None and first.derived, "the joins keep what they read with the record"
    assert _logged(tmp_path)[0] is first, "an unchanged ledger is not read again"

    log = ledger / RECORD / METRICS_LOG
    edited = text.replace('"step"', '"stEp"', 1)  # the same size
    assert edited != text and len(edited) == len(text)
    log.write_text(edited, encoding="utf-8")
    # The write moves the file's time; nudged by a nanosecond, so that a coarse clock that left it
    # where the copy put it cannot make this test pass or fail by chance.
    stat = log.stat()
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    again, read = _logged(tmp_path)
    assert again is not first and read == edited
