"""A repeatability benchmark's comparisons, derived again from the runs it filed.

benchmarks/repeatability.py runs the same command straight (A), again (B), and stopped by SIGTERM
and resumed (C), and states per mode what B and C differ from A in (`B_differs`, `C_differs`);
its headline, how many runs differ, is derived from those lists with the record
(contracts/derive/benchmarks.py). The lists themselves come from the runs' own files, which the
ledger holds beside their records: each run's metrics.jsonl and its last checkpoint's weights
digest. Here every run a mode lists (`runs`) must be in the ledger, and each list of a run it
lists is derived again by the benchmark's own function (`run_differences`). A list read from a
run that another command made, or edited to hide a difference, no longer matches its files.

The legs are held to being what the mode says they are (`leg_problems`): distinct runs (their
ids and start times differ, so B cannot name A), each of the mode's setting (compiled or eager,
the benchmark's preset and `--set` items, its steps) and of one config, code and data; C's log
shows the stop at `stopped_at_step` (its checkpoint there, and the resume from it), and A's and
B's show none. The flags, replays and median throughputs a mode states of its legs are read again
from the legs' own records and logs.

Records made before the benchmark filed B (2026-11-26: `runs` names A and C) hold their
B comparison on the benchmark's word; the comparisons their listed runs allow are derived.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from contracts.derive.benchmarks import (
    REPEAT_BENCHMARK,
    REPEATED_RUNS,
    STRAIGHT_RUN,
    logged_median_rate,
    run_differences,
)
from contracts.evidence import EvidenceRecord
from contracts.release_rules import WEIGHTS_FILE
from tools.integrity.env_checks import device_type


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
            problems += [(run_id, p) for p in leg_problems(record, mode, records, metrics)]
    return problems


def repeated_legs(records: Mapping[str, EvidenceRecord]) -> dict[str, str]:
    """Each run a repeatability benchmark lists as a leg → the benchmark and mode it is a leg of.
    Legs of one mode repeat one command, so they log the same step lines; that they are distinct
    runs is held by `leg_problems` (ids, start times, the stop only C shows)."""
    legs = {}
    for run_id, record in records.items():
        modes = record.metrics.get("modes") if record.run.kind == "benchmark" else None
        if record.metrics.get("benchmark") != REPEAT_BENCHMARK or not isinstance(modes, list):
            continue
        for mode in modes:
            runs = mode.get("runs") if isinstance(mode, dict) else None
            for ran in (runs or {}).values() if isinstance(runs, dict) else ():
                legs[str(ran)] = f"{run_id} {mode.get('mode')}"
    return legs


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


# The leg a SIGTERM stopped and `--resume` finished (benchmarks/repeatability.py).
STOPPED_RUN = "C"
# What a mode states of each leg, and how the leg's own record and log give it.
LEG_FACTS: dict[str, Callable[[EvidenceRecord, str], Any]] = {
    "flags": lambda record, _text: record.determinism.flags,
    "replay": lambda record, _text: record.metrics.get("repeatability"),
    "tokens_per_s_median": lambda _record, text: logged_median_rate(text),
}


def leg_problems(
    bench: EvidenceRecord,
    mode: object,
    records: Mapping[str, EvidenceRecord],
    metrics: Callable[[str], str | None],
) -> list[str]:
    """What a mode states of its legs that the legs' own records and logs deny (module docstring)."""
    runs = mode.get("runs") if isinstance(mode, dict) else None
    if not isinstance(mode, dict) or not isinstance(runs, dict):
        return []
    legs = {
        leg: (records[str(ran)], text)
        for leg, ran in runs.items()
        if str(ran) in records and (text := metrics(str(ran))) is not None
    }
    problems = _distinct(runs, legs)
    try:
        for leg, (record, text) in legs.items():
            problems += _leg_facts(bench, mode, leg, record, text)
        if STRAIGHT_RUN in legs and mode.get("steps") != (last := _last_step(legs[STRAIGHT_RUN][1])):
            problems.append(f"steps is {mode.get('steps')!r}, but run {STRAIGHT_RUN} logged {last}")
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # a log that is not the stack's
        problems.append(f"its legs' logs cannot be read as the stack writes them ({exc!r})")
    return [f"mode {mode.get('mode')!r}: {p}" for p in problems]


def _leg_facts(
    bench: EvidenceRecord, mode: dict[str, Any], leg: str, record: EvidenceRecord, text: str
) -> list[str]:
    """One leg held to the mode's setting and stop, and what the mode states of it to its own files."""
    found = _setting(bench, mode, record) + _stops(leg, mode, record, text)
    problems = [f"leg {leg} ({record.run.id}) {p}" for p in found]
    for key, fact in LEG_FACTS.items():
        stated = mode.get(key) if isinstance(mode.get(key), dict) else {}
        if leg in stated and stated[leg] != (derived := fact(record, text)):
            problems.append(f"{key}[{leg}] is {stated[leg]!r}, but its run's record and log give {derived!r}")
    return problems


def _distinct(runs: dict[str, Any], legs: dict[str, tuple[EvidenceRecord, str]]) -> list[str]:
    """Each leg is its own run: no two legs name one run id, or share a start time."""
    problems = []
    named: dict[str, str] = {}
    for leg, ran in runs.items():
        if str(ran) in named:
            problems.append(f"legs {named[str(ran)]} and {leg} name one run, {ran}")
        named.setdefault(str(ran), leg)
    started: dict[str, str] = {}
    for leg, (record, _text) in legs.items():
        when = record.run.started.isoformat()
        if when in started and runs[started[when]] != runs[leg]:
            problems.append(
                f"legs {started[when]} and {leg} started at one moment, {when}: one run filed twice"
            )
        started.setdefault(when, leg)
    keys = {
        leg: (record.config_sha256, record.data.manifest_sha256, record.code.git_sha)
        for leg, (record, _) in legs.items()
    }
    if len(set(keys.values())) > 1:
        problems.append(f"its legs ran different configs, data or code: {keys!r}")
    return problems


def _setting(bench: EvidenceRecord, mode: dict[str, Any], record: EvidenceRecord) -> list[str]:
    """A leg is a train run of the mode's setting: compiled or eager, the benchmark's preset and
    `--set` items, and the mode's steps, on the benchmark's kind of device."""
    if record.run.kind != "train":
        return [f"is a {record.run.kind} record, not a training run"]
    train = record.config.get("train") if isinstance(record.config, dict) else None
    train = train if isinstance(train, dict) else {}
    problems = []
    compiled = mode.get("mode") == "compiled"
    if train.get("compile") is not compiled:
        problems.append(
            f"trained with train.compile={train.get('compile')!r}, not the {mode.get('mode')} mode's"
        )
    if device_type(record) != device_type(bench):
        problems.append(f"ran on {record.env.device!r}, the benchmark on {bench.env.device!r}")
    if train.get("steps") != mode.get("steps"):
        problems.append(f"was set for {train.get('steps')!r} steps, the mode for {mode.get('steps')!r}")
    argv = list(record.run.argv)
    asked = [("--preset", bench.metrics.get("preset"))] + [
        ("--set", item) for item in bench.metrics.get("sets") or []
    ]
    for option, value in asked:
        if not any(argv[i] == option and argv[i + 1] == value for i in range(len(argv) - 1)):
            problems.append(f"ran without the benchmark's {option} {value}")
    return problems


def _events(text: str, kind: str) -> list[int]:
    """The steps of a log's events of one kind (checkpoint, resumed)."""
    lines = (json.loads(raw) for raw in text.splitlines() if raw.strip())
    return [line.get("step") for line in lines if line.get("type") == "event" and line.get("event") == kind]


def _last_step(text: str) -> int:
    lines = (json.loads(raw) for raw in text.splitlines() if raw.strip())
    return max((line.get("step", 0) for line in lines if line.get("type") == "step"), default=0)


def _stops(leg: str, mode: dict[str, Any], record: EvidenceRecord, text: str) -> list[str]:
    """C's log shows its stop at `stopped_at_step` and its resume from there; A's and B's no stop."""
    resumed = _events(text, "resumed")
    resumes = record.metrics.get("resumes") or []
    if leg != STOPPED_RUN:
        return [f"was resumed at step(s) {resumed}: a straight run never stops"] if resumed or resumes else []
    at = mode.get("stopped_at_step")
    problems = []
    if resumed != [at]:
        problems.append(
            f"logs its resume at step(s) {resumed}, but the mode says it was stopped at step {at!r}"
        )
    if at not in _events(text, "checkpoint"):
        problems.append(f"logs no checkpoint at step {at!r}, where the mode says it was stopped")
    from_steps = [r.get("from_step") for r in resumes if isinstance(r, dict)]
    if from_steps != [at]:
        problems.append(f"records resumes from step(s) {from_steps}, not from step {at!r}")
    return problems
