"""The benchmark a record names, against the script its command line ran.

What the checker asks of a benchmark record is chosen by the names it states: `metrics.benchmark`
picks the identities its headline numbers are derived by (contracts.derive.benchmarks), the goal of
spec/benchmarks.yaml its `goal` and `met` are held to and what its command line must agree with
(bench_argv); each name of `metrics.also` adds a goal it states beside the first. A record renamed
to a benchmark no script files escapes all of them at once, and one renamed to another script's
benchmark is read as that benchmark's evidence. So each name is held to the script its command
line ran (`run.argv[0]`), by the names that script files: its main benchmark (none at all for the
tile searches, whose records state no goal), and the other goals it states beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from benchmarks import (
    attention,
    prepare_stream,
    reader,
    smoke,
    trace_overhead,
    train_throughput,
)
from contracts.derive.benchmarks import (
    DETERMINISM_BENCHMARK,
    INTEGRITY_BENCHMARK,
    OPTIONS_BENCHMARK,
    REPEAT_BENCHMARK,
    SPEED_BENCHMARKS,
    TRAIN_BENCHMARK,
)
from contracts.evidence import EvidenceRecord


@dataclass(frozen=True)
class Filed:
    """What a script's records name: one of `main` as `benchmark` (None: no `benchmark` key), and
    only names of `also` in `also`."""

    main: frozenset[str | None]
    also: frozenset[str] = frozenset()


FILED_BY = {
    "benchmarks/attention.py": Filed(frozenset({attention.GOAL})),
    "benchmarks/attention_tiles.py": Filed(frozenset({None})),
    "benchmarks/determinism_parts.py": Filed(frozenset({DETERMINISM_BENCHMARK})),
    "benchmarks/integrity.py": Filed(frozenset({INTEGRITY_BENCHMARK})),
    "benchmarks/model_speed.py": Filed(frozenset(SPEED_BENCHMARKS.values())),
    "benchmarks/prepare_stream.py": Filed(
        frozenset(prepare_stream.GOALS[:1]), frozenset(prepare_stream.GOALS[1:])
    ),
    "benchmarks/reader.py": Filed(frozenset({reader.GOAL})),
    "benchmarks/repeatability.py": Filed(frozenset({REPEAT_BENCHMARK})),
    "benchmarks/smoke.py": Filed(frozenset({smoke.GOAL})),
    "benchmarks/stats_tiles.py": Filed(frozenset({None})),
    "benchmarks/trace_overhead.py": Filed(frozenset({trace_overhead.GOAL})),
    "benchmarks/train_throughput.py": Filed(
        frozenset({TRAIN_BENCHMARK, OPTIONS_BENCHMARK}),
        frozenset({*train_throughput.ALSO, *train_throughput.GPU_ALSO}),
    ),
}


def script_ran(argv: list[str]) -> str | None:
    """The benchmark script a command line ran, as `benchmarks/<name>.py`; None for any other line."""
    if not argv:
        return None
    path = PurePath(argv[0])
    return f"benchmarks/{path.name}" if path.parent.name == "benchmarks" else None


def name_problems(record: EvidenceRecord) -> list[str]:
    """What a benchmark record names that the script its command line ran does not file."""
    if record.run.kind != "benchmark":
        return []
    argv = record.run.argv or []
    script = script_ran(argv)
    filed = FILED_BY.get(script or "")
    if filed is None:
        return [f"its command line {argv[:1]!r} runs no benchmark script of {', '.join(sorted(FILED_BY))}"]
    metrics = record.metrics
    named = metrics.get("benchmark")
    problems = []
    if not (named is None or isinstance(named, str)) or named not in filed.main:
        files = " or ".join("no name" if n is None else repr(n) for n in sorted(filed.main, key=str))
        problems.append(
            f"metrics.benchmark is {named!r}, but {script}, the script its command line ran, names {files}"
        )
    also = metrics.get("also")
    if also is not None and not (
        isinstance(also, list) and all(isinstance(a, str) and a in filed.also for a in also)
    ):
        problems.append(
            f"metrics.also is {also!r}, but {script} states no other goals than {sorted(filed.also)!r}"
        )
    return problems
