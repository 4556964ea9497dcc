"""Tamperings the checker decides from a sibling record.

A fine-tune's checkpoint.files restated (state.json's size +1000 bytes,
re-hashed as a forger would); the memorization record that read that checkpoint states the files as
the fine-tune wrote them. tools/place_links.py joins a record whose `checkpoint` is the one it read to
the record of the ledger that wrote it at that place, file by file (sha256 and size), naming both.

Other tamperings of the same family are caught already on today's
records by tests/integrity/test_integrity_forged_verdicts.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.support.ledger_support import (
    FINETUNE_RUN,
    MEMORIZATION_RUN,
    RECORDS,
    assert_found,
    findings,
    forger_finished,
    planted,
)

# The checkpoint file the plants restate.
RESTATED_FILE = "state.json"
FORGED = "f" * 64


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def _bytes_restated(data: dict[str, Any], _run_dir: Path) -> None:
    data["checkpoint"]["files"][RESTATED_FILE]["bytes"] += 1000


def _digest_restated(data: dict[str, Any], _run_dir: Path) -> None:
    data["checkpoint"]["files"][RESTATED_FILE]["sha256"] = FORGED


def _copied(tmp_path: Path, run: str) -> Path:
    return Path(shutil.copytree(RECORDS / run, tmp_path / run))


def test_the_memorization_record_read_the_fine_tunes_checkpoint() -> None:
    """The precondition of the join: the memorization record's checkpoint is the one the fine-tune
    wrote (its name and step), and both state the file the plant restates."""
    made, read = _record(FINETUNE_RUN)["checkpoint"], _record(MEMORIZATION_RUN)["checkpoint"]
    assert (read["name"], read["step"]) == (made["name"], made["step"])
    assert RESTATED_FILE in made["files"] and RESTATED_FILE in read["files"]


def test_a_writers_checkpoint_file_restated_is_named_with_the_record_that_read_it(
    tmp_path: Path,
) -> None:
    """The fine-tune's state.json size restated and finished by a perfect forger, checked alone (joined
    to the committed ledger): the memorization record that read the checkpoint is named, with the
    fine-tune and both sizes."""
    stated = _record(FINETUNE_RUN)["checkpoint"]["files"][RESTATED_FILE]["bytes"]
    copy = planted(tmp_path, FINETUNE_RUN, forger_finished(_bytes_restated))
    assert json.loads((copy / "metadata.json").read_text())["checkpoint"]["files"][RESTATED_FILE][
        "bytes"
    ] == (stated + 1000)
    assert_found(
        findings(copy),
        MEMORIZATION_RUN,
        f"checkpoint.files.{RESTATED_FILE}",
        f"written by {FINETUNE_RUN!r}",
        f"{stated} bytes",
        f"{stated + 1000} bytes",
    )


def test_a_readers_checkpoint_file_restated_is_named_with_the_record_that_wrote_it(
    tmp_path: Path,
) -> None:
    """The memorization record's digest of state.json restated: held to the fine-tune that wrote it."""
    assert _record(MEMORIZATION_RUN)["checkpoint"]["files"][RESTATED_FILE]["sha256"] != FORGED
    copy = planted(tmp_path, MEMORIZATION_RUN, forger_finished(_digest_restated))
    assert_found(
        findings(copy, _copied(tmp_path, FINETUNE_RUN)),
        MEMORIZATION_RUN,
        f"checkpoint.files.{RESTATED_FILE}",
        f"written by {FINETUNE_RUN!r}",
    )


def test_the_fine_tune_and_its_memorization_as_filed_pass(tmp_path: Path) -> None:
    assert findings(_copied(tmp_path, FINETUNE_RUN), _copied(tmp_path, MEMORIZATION_RUN)) == []


def test_a_reader_that_leaves_out_the_checkpoint_it_read_is_named(tmp_path: Path) -> None:
    """The memorization record's checkpoint taken out: it read the fine-tune's checkpoint at the place
    the fine-tune wrote, so a completed record that states none is named, never passed over."""
    made = _record(FINETUNE_RUN)["checkpoint"]["name"]
    copy = planted(tmp_path, MEMORIZATION_RUN, lambda data, _dir: data.pop("checkpoint"))
    assert_found(
        findings(copy, _copied(tmp_path, FINETUNE_RUN)),
        MEMORIZATION_RUN,
        f"states no checkpoint, but it read the checkpoint {made}",
        f"written by {FINETUNE_RUN!r}",
    )
