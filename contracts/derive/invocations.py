"""A training run's invocations: the resumes its record lists are the ones its metrics log shows.

Each invocation of the training loop (the start, and every `--resume`) logs one `schedule` event
at the step it starts from, before its first step line. A record lists its resumes under
`metrics.resumes` (each with `from_step`, its command line and the keys it changed), and several
checks read that list: the wall time is measured from the last leg, a resume's command line may
waive a gate, a resumed record is compared with the spec of its own commit differently. So a
resume the log does not show is not bookkeeping: it switches checks. The record's list must be
the log's, step for step, and each resume must continue from a checkpoint the log says was
written at that step (the loop resumes from checkpoints only).
"""

from __future__ import annotations

from typing import Any

from contracts.evidence import EvidenceRecord

# Records made from this spec version on log a schedule event at every invocation's start.
SCHEDULE_EVENTS_SINCE = (1, 10, 0)


def _steps_of(events: list[dict[str, Any]], name: str) -> list[int]:
    """The steps of the log's events called `name`, in the log's order."""
    return [
        e["step"]
        for e in events
        if e.get("event") == name and isinstance(e.get("step"), int) and not isinstance(e.get("step"), bool)
    ]


def listed_resumes(record: EvidenceRecord) -> list[Any]:
    """Each `metrics.resumes[].from_step` of the record (None where an entry states none)."""
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    if not isinstance(resumes, list):
        return []
    return [r.get("from_step") if isinstance(r, dict) else None for r in resumes]


def invocation_problems(
    record: EvidenceRecord, events: list[dict[str, Any]], spec_version: tuple[int, ...]
) -> list[str]:
    """How the record's resumes disagree with the invocations its log's events show (nothing for
    a record made before every invocation logged its start)."""
    if spec_version < SCHEDULE_EVENTS_SINCE:
        return []
    starts = _steps_of(events, "schedule")
    listed = listed_resumes(record)
    if starts[1:] != listed:
        return [
            f"metrics.resumes lists resumes from steps {listed}, but metrics.jsonl shows invocations "
            f"starting at steps {starts} (each logs a schedule event where it starts)"
        ]
    saved = set(_steps_of(events, "checkpoint"))
    return [
        f"metrics.resumes[{at}] resumed from step {step}, but metrics.jsonl logs no checkpoint "
        "written at that step: a run resumes from its checkpoints only"
        for at, step in enumerate(listed)
        if step not in saved
    ]
