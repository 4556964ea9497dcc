"""A repeatability benchmark's comparisons, derived again from the runs it filed.

benchmarks/repeatability.py runs the same command straight (A), again (B), and stopped by SIGTERM
and resumed (C), and states per mode what B and C differ from A in (`B_differs`, `C_differs`);
its headline, how many runs differ, is derived from those lists with the record
(contracts/derive/benchmarks.py). The lists themselves come from the runs' own files, which the
ledger holds beside their records: each run's metrics.jsonl and its last checkpoint's weights
digest. Here every run a mode lists (`runs`) must be in the ledger, and each list of a run it
lists is derived again by the benchmark's own function (`run_differences`). A list read from a
run that another command made, or edited to hide a difference, no longer matches its files.

Records made before the benchmark filed B (2026-11-26: `runs` names A and C) hold their
B comparison on the benchmark's word; the comparisons their listed runs allow are derived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from contracts.derive.benchmarks import REPEAT_BENCHMARK, REPEATED_RUNS, STRAIGHT_RUN, run_differences
from contracts.evidence import EvidenceRecord
from contracts.release_rules import WEIGHTS_FILE


def _weights(record: EvidenceRecord) -> str | None:
    """The digest of the weights of a run's last checkpoint, as its record files it."""
    checkpoint = record.checkpoint
    entry = checkpoint.files.get(WEIGHTS_FILE) if checkpoint is not None else None
    return entry.sha256 if entry is not None else None


def repeat_problems(
    records: Mapping[str, EvidenceRecord], metrics: Callable[[str], str | None]
) -> list[tuple[str, str]]:
    """(run id, problem) for every repeatability benchmark among `records` (run id → record) whose
    lists differ from what its listed runs' files give; `metrics(run id)` is a run's filed
    metrics.jsonl, or None when the ledger holds none."""
    problems = []
    for run_id, record in records.items():
        modes = record.metrics.get("modes") if record.run.kind == "benchmark" else None
        if record.metrics.get("benchmark") != REPEAT_BENCHMARK or not isinstance(modes, list):
            continue
        for mode in modes:
            problems += [(run_id, p) for p in _mode_problems(mode, records, metrics)]
    return problems


def _mode_problems(
    mode: object, records: Mapping[str, EvidenceRecord], metrics: Callable[[str], str | None]
) -> list[str]:
    runs = mode.get("runs") if isinstance(mode, dict) else None
    if not isinstance(runs, dict) or STRAIGHT_RUN not in runs:
        return []  # a mode that compared nothing (a leg failed): mismatched_runs counts it
    name = mode.get("mode")
    filed = {leg: (records.get(str(ran)), metrics(str(ran))) for leg, ran in runs.items()}
    missing = [f"{leg} ({runs[leg]})" for leg, (rec, text) in filed.items() if rec is None or text is None]
    if missing:
        return [
            f"mode {name!r} lists run(s) the ledger does not hold with their metrics: {', '.join(missing)}"
        ]
    straight_record, straight_text = filed[STRAIGHT_RUN]
    problems = []
    for leg, key in REPEATED_RUNS.items():
        if leg not in filed:
            continue
        other_record, other_text = filed[leg]
        try:
            derived = run_differences(
                straight_text, other_text, _weights(straight_record), _weights(other_record)
            )
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"mode {name!r}: {leg}'s comparison cannot be derived from its metrics ({exc})")
            continue
        if mode.get(key) != derived:
            problems.append(
                f"mode {name!r}: {key} is {mode.get(key)!r}, but runs {runs[STRAIGHT_RUN]} and {runs[leg]} "
                f"as filed differ in {derived!r}"
            )
    return problems
