"""The real benchmark and repeatability records the tests of benchmark evidence plant tamperings in.

Every test of tests/benchmarks/test_benchmark_evidence.py copies a record the GPU sessions filed, plants one
lie in the copy and asks the integrity check about it, in-process (`findings`). Which records
those are is decided here and nowhere else: `real_record` is the one place that knows where the
real records live, so a move of the ledger's records (to test fixtures, say) changes this module
only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from contracts.evidence import EVIDENCE_FILE, read_evidence
from tests.support.ledger_support import RECORDS, Change, edited

# What each test needs, by role: the record the GPU session filed for it.
REAL_RECORDS = {
    "model_speed_gpu": "bench-model-20261126T174453",  # benchmarks/model_speed.py on an H100
    "train_overhead_gpu": "bench-train-20261127T075906",  # benchmarks/train_throughput.py --compile
    "repeat": "bench-repeat-20261127T075408",  # benchmarks/repeatability.py, compiled: A, B, C filed
    "repeat_A": "bench-repeat-20261127T075408-compiled-A",
    "repeat_B": "bench-repeat-20261127T075408-compiled-B",
    "repeat_C": "bench-repeat-20261127T075408-compiled-C",
    "eager_A": "bench-repeat-20261126T180411-eager-A",  # an eager leg of an earlier benchmark run
    "eager_C": "bench-repeat-20261126T180411-eager-C",
    "eager_A_earlier": "bench-repeat-20261126T174609-eager-A",  # the same, one run before
    "cpu_run": "current/mix-run",  # a training run on CPU, no repeatability claim
}


def real_record(role: str) -> Path:
    """The directory of the real record filed for `role` (REAL_RECORDS) among the test fixtures."""
    found = RECORDS / REAL_RECORDS[role]
    assert found.is_dir(), f"no real record {REAL_RECORDS[role]} in {RECORDS}"
    return found


def real_id(role: str) -> str:
    """The run id of the real record filed for `role`."""
    return read_evidence(real_record(role) / EVIDENCE_FILE).run.id


def as_filed(tmp_path: Path, *roles: str) -> list[Path]:
    """Copies of the real records for `roles`, unchanged: what a planted record is checked beside
    (a repeatability record's legs, a copy's original), wherever the real ones are kept."""
    return [copied(tmp_path / "as filed", role, lambda *_: None) for role in roles]


def copied(tmp_path: Path, role: str, change: Change, as_id: str | None = None) -> Path:
    """A copy of the real record for `role` under tmp_path (as run `as_id` when given: its
    directory and run.id renamed), `change` applied and every cited artifact re-hashed as a
    forger would."""
    target = tmp_path / (as_id or real_id(role))
    shutil.copytree(real_record(role), target)

    def renamed(data: dict, run_dir: Path) -> None:
        if as_id is not None:
            data["run"]["id"] = as_id
        change(data, run_dir)

    return edited(target, renamed)
