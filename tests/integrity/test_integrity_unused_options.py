"""Tamperings the checker catches from
what a record's command line gives: an option the line gives whose config key the record holds as
none was not used (planted: `stack lens --lens FILE` read the logit lens and said
`lens: null`; `import-hf --sample-text FILE` measured parity on the default text), so the
config holding none against a given value is a violation (tools/argv_record._holds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.ledger_support import LENS_RUN, RECORDS, assert_found, findings, forger_finished, planted


def _lens_unread(data: dict[str, Any], _run_dir: Path) -> None:
    """The lens reading's config says no tuned lens was read, as the mutant's honest record does."""
    data["config"].update(lens=None, lens_sha256=None)


def test_lens_given_on_the_line_and_held_as_none_is_caught(tmp_path: Path) -> None:
    record = json.loads((RECORDS / LENS_RUN / "metadata.json").read_text(encoding="utf-8"))
    assert "--lens" in record["run"]["argv"] and record["config"]["lens"] is not None
    found = findings(planted(tmp_path, LENS_RUN, forger_finished(_lens_unread)))
    assert_found(found, "config.lens is None, but its command line gives")


def test_the_lens_record_as_filed_passes(tmp_path: Path) -> None:
    assert findings(planted(tmp_path, LENS_RUN, lambda _data, _dir: None)) == []
