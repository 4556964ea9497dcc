"""The evidence record of `stack prepare --evidence-dir LEDGER`: the filter gates' verdicts, the drops.

The prepare runs with the record's ledger active, so GATE-DATA-012..014 (stack.data.filters.gates)
land in it; a gate that fires leaves the record halted and it is filed all the same. The record
keeps the manifest's sha256, the per-source drop report (`metrics.filters`) and the resolved
filter settings, so the site reads the drops from the record alone; a copy of the DATA_DIR's
manifest.json is filed beside it, the raw per-source reports the integrity check re-derives
`metrics.filters`, the totals and GATE-DATA-013/014's values from (contracts.derive.reports).
Without --evidence-dir the gates still run and still stop the prepare; nothing is filed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.data.manifest import MANIFEST_FILE, Manifest

KIND = "prepare"


def recorded(
    argv: list[str], ledger_dir: Path | None, settings: dict[str, Any], work: Callable[[], Manifest]
) -> Manifest:
    """Run `work` (a prepare) and, when `ledger_dir` is given, file its record there."""
    if ledger_dir is None:
        return work()
    from contracts.errors import GateViolation
    from contracts.evidence import DataRef, RunStatus, canonical_sha256
    from stack.eval.evidence import CommandEvidence

    evidence = CommandEvidence(KIND, argv, "cpu", ledger_dir)
    record = evidence.record
    record.config, record.config_sha256 = settings, canonical_sha256(settings)
    try:
        with evidence.judging():
            manifest = work()
    except GateViolation:
        evidence.file()
        raise
    record.data = DataRef(manifest_sha256=manifest.sha256, tokenizer_sha256=manifest.tokenizer.sha256)
    record.metrics["filters"] = {name: report.model_dump() for name, report in manifest.filters.items()}
    record.metrics["totals"] = {split: totals.model_dump() for split, totals in manifest.totals.items()}
    evidence.settle(RunStatus.COMPLETED)
    filed = evidence.file((Path(str(settings["out"])) / MANIFEST_FILE,))  # `out`: the DATA_DIR written
    print(f"stack prepare: evidence in {filed}", file=sys.stderr)
    return manifest
