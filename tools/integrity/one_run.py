"""Records that are one run whatever their ids say, and records of one configuration that must agree.

A step line of metrics.jsonl, its timings aside (contracts.derive.benchmarks.computed_lines: the
loss, gradient norms, learning rate, the batch's and targets' sha256), is what the run computed
at that step. Two runs that did not start from one state on one batch never write the same one,
so records that share a step line are one run, whatever ids, start times and throughputs they
state (a copy with its throughputs jittered beats the duplicate check's wall-clock reading):

- **copies**: records made at one commit that share a step line are one run filed twice, unless
  they are legs of one run (a resume, tools/integrity/lineage.py's `same_run`), legs of one mode of a
  repeatability benchmark (which repeats one command, and whose legs are held distinct by
  tools/integrity/repeat_runs.py), or both claim their run repeatable (a repeatable configuration repeats:
  there, agreement is the claim, held below). Runs of one configuration made at different
  commits share step lines legitimately (code that computes the same numbers writes them again)
  until their held-out lines or a later step part them; records at different commits whose logs
  agree line for line, every step and held-out line, are one run all the same, whatever commit
  each states.
- **one configuration, one outcome**: a record that claims its run repeatable
  (`determinism.flags.repeatable`) makes a claim about every run of its configuration, code,
  data, seed and build. Each pair of such records must agree bit for bit wherever their logs
  overlap (every step and held-out line both hold), and in their final weights when their last
  checkpoints are of one step; a record that disagrees with a repeatable twin is named with the
  twin and the first differences, on both (which one lies the records cannot say).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from itertools import combinations

from contracts.derive.training import LOOP_KINDS
from contracts.evidence import EvidenceRecord
from contracts.release_rules import WEIGHTS_FILE
from stack.artifacts import ES_RUN_KIND
from tools.integrity.lineage import same_run

# A log's computed lines: (line type, step) → the line without its timings, as canonical JSON.
Lines = Mapping[tuple[str, int], str]
# Differences a twin's finding names before it says how many more there are.
SHOWN = 3


def canonical(lines: Mapping[tuple[str, int], dict]) -> dict[tuple[str, int], str]:
    """Computed lines as canonical JSON text, so equal lines are equal strings."""
    return {key: json.dumps(line, sort_keys=True) for key, line in lines.items()}


def copy_problems(
    records: Mapping[str, EvidenceRecord], logs: Callable[[str], Lines | None], legs: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(run id, problem) for each record that shares a step line with an earlier-listed record of
    the same commit, neither a leg of its run, nor both claiming repeatability, nor both legs of
    one repeatability benchmark's mode (`legs`: run id → the mode it is a leg of)."""
    seen: dict[str, str] = {}  # a step line (with its commit) → the first record that logged it
    whole: dict[frozenset, str] = {}  # a whole log → the first record that logged it
    problems = []
    for run_id, record in records.items():
        lines = logs(run_id)
        if not lines:
            continue
        commit = str(record.code.git_sha)
        owners = {
            seen[key]: "at the same commit"
            for (kind, _), text in lines.items()
            if kind == "step" and (key := f"{commit} {text}") in seen
        }
        log = frozenset(lines.items())
        if log in whole and whole[log] not in owners:
            owners[whole[log]] = "line for line, every step and held-out line, at another commit"
        for other, how in sorted(owners.items()):
            twin = records[other]
            repeats = run_id in legs and legs[run_id] == legs.get(other)
            if other == run_id or repeats or same_run(record, twin, records):
                continue
            if _repeatable(record) and _repeatable(twin):
                continue
            problems.append(
                (
                    run_id,
                    f"logs the step lines (losses, batch hashes) of {other!r} {how}: one run filed "
                    f"under two ids, whatever their commits and throughputs say{_way_out(record)}",
                )
            )
        whole.setdefault(log, run_id)
        for (kind, _), text in lines.items():
            if kind == "step":
                seen.setdefault(f"{commit} {text}", run_id)
    return problems


def twin_problems(
    records: Mapping[str, EvidenceRecord], logs: Callable[[str], Lines | None]
) -> list[tuple[str, str]]:
    """(run id, problem) for each pair of records claiming repeatability for one configuration,
    code, data, seed and build whose logs or final weights differ where both hold them."""
    groups: dict[str, list[str]] = {}
    for run_id, record in records.items():
        if _repeatable(record):
            groups.setdefault(_configuration(record), []).append(run_id)
    problems = []
    for members in groups.values():
        for a, b in combinations(members, 2):
            found = _disagreement(records[a], records[b], logs(a), logs(b))
            if found:
                shown = ", ".join(found[:SHOWN]) + (
                    f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
                )
                for run_id, twin in ((a, b), (b, a)):
                    problems.append(
                        (
                            run_id,
                            f"claims its run repeatable, but {twin!r}, a repeatable run of the same "
                            f"configuration, code, data, seed and build, differs from it in {shown}",
                        )
                    )
    return problems


def _way_out(record: EvidenceRecord) -> str:
    """What makes two honest runs of one configuration legitimate twins, where the record's command
    can: a run of the training loop claims its configuration repeatable once its replay held. A
    `stack es` record claims no repeatability, and its runs of one configuration log alike (no
    backward, one CPU): what the user can do is told instead."""
    if record.run.kind == ES_RUN_KIND:
        return (
            "; a `stack es` record claims no repeatability, so two ES runs of one configuration that log "
            "alike are one run to the check: check (or file) them apart"
        )
    if record.run.kind not in LOOP_KINDS:
        return ""
    return (
        "; two runs of one configuration may log alike only where both claim it repeatable, as a "
        "training run does once its replay held (--set train.replay_steps=2)"
    )


def _repeatable(record: EvidenceRecord) -> bool:
    return record.determinism.flags.get("repeatable") is True


def _configuration(record: EvidenceRecord) -> str:
    """What a repeatable run's outcome is a function of: its config, code, data, seeds and build."""
    env = record.env
    return json.dumps(
        [
            record.run.kind,
            record.config_sha256,
            record.code.git_sha,
            record.data.manifest_sha256,
            record.determinism.seeds,
            [env.device, env.torch, env.cuda, env.triton],
        ],
        sort_keys=True,
        default=str,
    )


def _disagreement(
    a: EvidenceRecord, b: EvidenceRecord, a_lines: Lines | None, b_lines: Lines | None
) -> list[str]:
    """Where two repeatable twins differ: a line both logs hold, or the final weights of one step."""
    found = [
        f"{kind} {step}"
        for (kind, step) in sorted(set(a_lines or {}) & set(b_lines or {}))
        if (a_lines or {})[(kind, step)] != (b_lines or {})[(kind, step)]
    ]
    ends = [
        (r.checkpoint.step, r.checkpoint.files.get(WEIGHTS_FILE)) for r in (a, b) if r.checkpoint is not None
    ]
    (a_step, a_weights), (b_step, b_weights) = ends if len(ends) == 2 else ((None, None), (None, None))
    if a_step == b_step and None not in (a_weights, b_weights) and a_weights != b_weights:
        found.append(f"the final weights at step {a_step}")
    return found
