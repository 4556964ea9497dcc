"""What an evidence record must be to back a released model: one set of rules, two callers.

`stack release` refuses to release from a record these rules object to, and
`tools/check_integrity.py` reports a registry entry whose record they object to. Both call
`release_problems`, so a release the command made cannot be one the checker rejects, and a rule
changed here changes for both. Whether the problems found refuse the release is GATE-INTEG-001's
verdict, which its judge gives over their count (`breaks`), for both callers too. Staleness lives
here too (the checker reads it through tools/record_checks.py): a verdict made under an older gate
revision or record schema cannot be re-judged, so it cannot back a release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contracts.evidence import SCHEMA_VERSION, EvidenceRecord, GateResult, RunStatus, Verdict
from contracts.gates import Mode
from contracts.judges import Thresholds, judge
from contracts.spec import Severity, Spec

ACCEPT_FLAG = "--accept-waiver"
# The gate whose rules these are: the integrity check files what they object to under it.
INTEG_EVIDENCE = "GATE-INTEG-001"

# Run kinds that leave weights behind: the only records a model can be released from.
TRAINING_KINDS = ("train", "finetune")
WEIGHTS_FILE = "model.safetensors"


def breaks(gate_id: str, findings: int, thresholds: Thresholds | None = None) -> bool:
    """Whether `findings` breaches of `gate_id`'s rules break the gate: its judge decides.

    A breach found, by these rules or by tools/check_integrity.py, is a measured count; the verdict
    over it is made in one place, the gate's judge (contracts.judges), for `stack release` and the
    checker alike. Only the proof by mutation (the gate forced off inside a test) makes the judge
    accept breaches, and that is what turns the falsifiers of the rules red.
    """
    return bool(judge(gate_id, {"violations": findings}, thresholds))


def stale_reason(record: EvidenceRecord, result: GateResult, spec: Spec) -> str | None:
    """Why `result` cannot be re-judged under today's spec, or None when it can."""
    if record.schema_version < SCHEMA_VERSION:
        return f"schema {record.schema_version} predates the judges (schema {SCHEMA_VERSION})"
    gate = spec.gates.get(result.id)
    if gate is not None and result.revision < gate.revision:
        return f"judged under rev {result.revision}; the spec is at rev {gate.revision}"
    return None


def stale_gates(record: EvidenceRecord, spec: Spec) -> dict[str, str]:
    """gate id → why its verdict is stale, for every stale verdict of `record`."""
    found = {result.id: stale_reason(record, result, spec) for result in record.gates}
    return {gate_id: why for gate_id, why in found.items() if why is not None}


def _run_problems(
    spec: Spec, record: EvidenceRecord, registry_git_sha: str | None, later: set[str]
) -> list[str]:
    """Kind, status, contract mode, cleanliness, commit and the required gates of the run (but
    the `later` ones, which came in after the release)."""
    problems = []
    if record.run.kind not in TRAINING_KINDS:
        problems.append(f"is a {record.run.kind} record, not a training run")
    if record.run.status is not RunStatus.COMPLETED:
        problems.append(f"status is {record.run.status.value}, not completed")
    if record.contract_mode == Mode.OFF.value:
        problems.append("was made with the contracts off")
    if record.code.git_dirty:
        problems.append("was made from a dirty tree")
    if record.code.git_sha != registry_git_sha:
        problems.append(
            f"was made at {str(record.code.git_sha)[:12]}, the registry says {str(registry_git_sha)[:12]}"
        )
    by_id = {g.id: g for g in record.gates}
    for gate_id in spec.required_gates(record.run.kind, record.config):
        if gate_id in later:
            continue
        if gate_id not in by_id or by_id[gate_id].verdict is Verdict.NOT_RUN:
            problems.append(f"did not judge {gate_id}")
    problems += [f"{g.id} is {g.verdict.value}" for g in record.gates if g.verdict is Verdict.FAIL]
    return problems


def _released_problems(record: EvidenceRecord, released: Sequence[tuple[str, str, int]]) -> list[str]:
    """The released files must be the checkpoint the run hashed, by sha256 and size: the weights,
    and every other file released under the name of one of its files (state.json) that file. A
    file kept elsewhere (a URL) is held to the record by the hash and size its entry states."""
    hashed = record.checkpoint.files if record.checkpoint else {}
    if not any(name == WEIGHTS_FILE for name, _, _ in released):
        return [f"the release has no {WEIGHTS_FILE} artifact"]
    if WEIGHTS_FILE not in hashed:
        return [f"records no checkpoint hash of {WEIGHTS_FILE} to trace the weights to"]
    differ = sorted(
        {
            name
            for name, sha, size in released
            if name in hashed and (sha, size) != (hashed[name].sha256, hashed[name].bytes)
        }
    )
    return [
        f"the released {name} is not the checkpoint the run hashed"
        if name == WEIGHTS_FILE
        else f"the released {name} is not the checkpoint's {name} the run hashed"
        for name in differ
    ]


def _waiver_problems(spec: Spec, record: EvidenceRecord, accepted: Mapping[str, str]) -> list[str]:
    """A waived blocking gate stops at the release unless the release accepts it, with a reason."""
    blocking = {g for g, gate in spec.gates.items() if gate.severity is Severity.BLOCKING}
    waived = {g.id for g in record.gates if g.verdict is Verdict.WAIVED and g.id in blocking}
    problems = [
        f"{gate_id} is WAIVED (a blocking gate): release only with {ACCEPT_FLAG} {gate_id} --reason TEXT"
        for gate_id in sorted(waived - set(accepted))
    ]
    problems += [
        f"accepts a waiver of {gate_id}, which the record does not waive"
        for gate_id in sorted(set(accepted) - waived)
    ]
    problems += [
        f"accepts the waiver of {g} without a reason" for g, why in accepted.items() if not why.strip()
    ]
    return problems


def _current_then(spec: Spec, record: EvidenceRecord, gate_id: str, released_under: str | None) -> bool:
    """Whether `record`'s verdict of `gate_id` was judged under the revision in force when the model
    was released (`released_under`): a later revision does not unmake a release made before it."""
    if released_under is None or record.schema_version < SCHEMA_VERSION:
        return False
    result = next((g for g in record.gates if g.id == gate_id), None)
    return result is not None and result.revision == spec.revision_at(gate_id, released_under)


def release_problems(
    spec: Spec,
    record: EvidenceRecord,
    stale: dict[str, str],
    released: Sequence[tuple[str, str, int]],
    registry_git_sha: str | None,
    accepted: Mapping[str, str] | None = None,
    released_under: str | None = None,
) -> list[str]:
    """Why `record` cannot back a release of the files `released` ((file name, sha256, bytes): the
    weights, and what is released beside them) at `registry_git_sha` (empty: it can).

    `stale` maps gate ids to why their verdict is stale (`stale_gates`); a release must rest on
    a completed training run, with the contracts on, from a clean tree at the registry's commit,
    that judged every gate its kind requires, failed none, and hashed the files released. A
    blocking gate the run waived must be among the waivers the release `accepted` (gate → reason).
    `released_under` is the spec version a registry entry was released under: a gate that came
    in after it, or that the run kind came to require after it, is not demanded of its record
    (`stack release`, releasing now, passes None).
    """
    kind_gates = spec.required_gates(record.run.kind, record.config)
    later = {
        g for g in kind_gates if released_under and spec.required_after(record.run.kind, g, released_under)
    }
    problems = _run_problems(spec, record, registry_git_sha, later)
    problems += [
        f"{gate_id} is stale ({why})"
        for gate_id, why in sorted(stale.items())
        if gate_id not in later and not _current_then(spec, record, gate_id, released_under)
    ]
    problems += _waiver_problems(spec, record, accepted or {})
    return problems + _released_problems(record, released)
