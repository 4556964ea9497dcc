"""Is one evidence record true? Re-judging, required gates, waivers and its own metrics.

`tools/check_integrity.py` asks these questions of every record it reads; each returns the
problems it finds as sentences, and the checker files them under the record's path. Nothing
here trusts a verdict: every verdict is recomputed from the record's measured values by the
gate's own judge and verdict mapping (those of `contracts.ledger.judged_result`), under the
thresholds of the revision the record cites, and a record whose revision or schema predates the
spec is reported stale instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from repeatability import repeatability_problems

from contracts.evidence import SCHEMA_VERSION, EvidenceRecord, RunStatus, Verdict
from contracts.gates import Mode
from contracts.judges import judge
from contracts.ledger import verdict_of
from contracts.release_rules import TRAINING_KINDS, stale_reason
from contracts.spec import Spec

WAIVE_FLAG = "--waive"


@dataclass
class RecordFindings:
    """What one record's checks found: violations, and the gates it is stale for."""

    violations: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)  # gate id → why


def waived_on_command_line(record: EvidenceRecord) -> set[str]:
    """Gate ids a command line of this run asked to waive (the start, and every resume)."""
    argvs = [record.run.argv]
    resumes = record.metrics.get("resumes")
    if isinstance(resumes, list):
        argvs += [r.get("argv", []) for r in resumes if isinstance(r, dict)]
    waived = set()
    for argv in argvs:
        if not isinstance(argv, list):
            continue
        for i, token in enumerate(argv):
            if token == WAIVE_FLAG and i + 1 < len(argv):
                waived.add(str(argv[i + 1]))
            elif isinstance(token, str) and token.startswith(WAIVE_FLAG + "="):
                waived.add(token.split("=", 1)[1])
    return waived


@dataclass(frozen=True)
class CurrentRevision:
    """What a gate's current revision judges with: its threshold values and their digest."""

    values: dict[str, float | int]
    digest: str


_CURRENT: dict[str, dict[str, CurrentRevision]] = {}


def current_revisions(spec: Spec) -> dict[str, CurrentRevision]:
    """gate id → its current revision's thresholds, computed once per spec (keyed by the spec's
    sha256, which covers every threshold): digesting them again for each of ten thousand records
    would cost more than judging them."""
    if spec.sha256 not in _CURRENT:
        _CURRENT[spec.sha256] = {
            gate_id: CurrentRevision(gate.threshold_values, gate.thresholds_sha256)
            for gate_id, gate in spec.gates.items()
        }
    return _CURRENT[spec.sha256]


def check_gate_results(record: EvidenceRecord, spec: Spec, findings: RecordFindings) -> None:
    """Each gate result: known gate, the spec's thresholds, and a verdict its judge agrees with.

    The verdict is recomputed as `contracts.ledger.judged_result` computes it at run time: the
    gate's judge over the measured values, mapped by `verdict_of`.
    """
    current = current_revisions(spec)
    waived = {w.gate for w in record.waivers}
    seen: set[str] = set()
    for result in record.gates:
        if result.id in seen:
            findings.violations.append(f"{result.id} is recorded twice")
        seen.add(result.id)
        gate = spec.gates.get(result.id)
        if gate is None:
            findings.violations.append(f"cites unknown gate {result.id}")
            continue
        if result.revision > gate.revision:
            findings.violations.append(
                f"{result.id} rev {result.revision} is newer than the spec's rev {gate.revision}"
            )
            continue
        if (reason := stale_reason(record, result, spec)) is not None:
            findings.stale[result.id] = reason
            continue
        thresholds = current[result.id]
        if result.thresholds_sha256 != thresholds.digest:
            findings.violations.append(
                f"{result.id} rev {result.revision}: judged under thresholds "
                f"{str(result.thresholds_sha256)[:12]}, but rev {gate.revision} of the spec has "
                f"{thresholds.digest[:12]}: a threshold changed without a revision bump"
            )
            continue
        if result.threshold != thresholds.values:
            findings.violations.append(
                f"{result.id}: the record's thresholds {result.threshold} are not the spec's "
                f"{thresholds.values}"
            )
            continue
        if result.verdict is Verdict.NOT_RUN:
            if result.measured is not None:
                findings.violations.append(f"{result.id} is NOT_RUN but carries measured values")
            continue
        problems = judge(result.id, result.measured, thresholds.values)
        recomputed = verdict_of(spec, result.id, not problems, result.id in waived)
        if recomputed is not result.verdict:
            findings.violations.append(
                f"{result.id}: recorded {result.verdict.value}, but its measured values re-judge "
                f"to {recomputed.value}"
            )


def check_run(record: EvidenceRecord, spec: Spec, findings: RecordFindings) -> None:
    """Contract mode, waivers asked for, required gates judged, and a halted run naming its gate."""
    if record.schema_version < SCHEMA_VERSION:
        return  # a legacy record is stale as a whole; its form was checked by the schema
    modes = {m.value for m in Mode}
    if record.contract_mode not in modes:
        findings.violations.append(
            f"contract_mode {record.contract_mode!r} is not one of {', '.join(sorted(modes))}"
        )
    asked = waived_on_command_line(record)
    for waiver in record.waivers:
        if waiver.gate not in spec.gates:
            findings.violations.append(f"waives unknown gate {waiver.gate}")
        elif waiver.gate not in asked:
            findings.violations.append(
                f"waiver of {waiver.gate} was not asked for on any command line of the run "
                "(added after the fact?)"
            )
    by_id = {g.id: g for g in record.gates}
    if record.run.status is RunStatus.COMPLETED:
        for gate_id in spec.required_gates(record.run.kind, record.config):
            result = by_id.get(gate_id)
            if result is None and (since := spec.introduced_after(gate_id, record.spec.version)):
                findings.stale[gate_id] = f"the gate came in spec {since}, after the record's"
            elif result is None:
                findings.violations.append(
                    f"a completed {record.run.kind} run must judge {gate_id}; it is missing"
                )
            elif result.verdict is Verdict.NOT_RUN:
                findings.violations.append(f"a completed {record.run.kind} run left {gate_id} NOT_RUN")
        if any(g.verdict is Verdict.FAIL for g in record.gates):
            findings.violations.append("status is completed, yet a gate FAILed")
    if record.run.status is RunStatus.HALTED and not any(g.verdict is Verdict.FAIL for g in record.gates):
        findings.violations.append("status is halted, but no gate FAILed")


def _lines(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def check_metrics_log(record: EvidenceRecord, run_dir: Path, findings: RecordFindings) -> None:
    """A training record's summary and measured values must agree with its own metrics.jsonl."""
    if record.run.kind not in TRAINING_KINDS or record.schema_version < SCHEMA_VERSION:
        return
    path = run_dir / "metrics.jsonl"
    if not any(a.path == "metrics.jsonl" for a in record.artifacts) or not path.is_file():
        return
    try:
        lines = list(_lines(path))
    except (OSError, ValueError) as exc:
        findings.violations.append(f"metrics.jsonl is unreadable: {exc}")
        return
    steps = [line for line in lines if line.get("type") == "step"]
    evals = [line for line in lines if line.get("type") == "eval"]
    samples = [line for line in lines if line.get("type") == "sample"]
    spikes = [line for line in lines if line.get("event") == "loss_spike"]
    metrics, by_id = record.metrics, {g.id: g for g in record.gates}
    expected: dict[str, object] = {"loss_spikes": len(spikes)}
    if steps:
        expected["step"] = steps[-1].get("step")
    if evals:
        expected["last_heldout_loss"] = evals[-1].get("heldout_loss")
        expected["best_heldout_loss"] = min(e.get("heldout_loss", float("inf")) for e in evals)
    expected["coherence_scores"] = [s.get("score") for s in samples][-20:]
    for key, value in expected.items():
        if key in metrics and metrics[key] != value:
            findings.violations.append(f"metrics.{key} is {metrics[key]!r}, metrics.jsonl says {value!r}")
    first = next((s for s in steps if s.get("step") == 1), None)
    first_loss = by_id.get("GATE-TRAIN-004")
    if (
        first is not None
        and first_loss is not None
        and isinstance(first_loss.measured, dict)
        and first_loss.measured.get("loss") != first.get("loss")
    ):
        findings.violations.append(
            f"GATE-TRAIN-004 measured a first loss of {first_loss.measured.get('loss')!r}, "
            f"metrics.jsonl's step 1 says {first.get('loss')!r}"
        )
    heldout = by_id.get("GATE-EVAL-001")
    if evals and heldout is not None and isinstance(heldout.measured, dict):
        batches = {e.get("batches") for e in evals}
        if batches != {heldout.measured.get("heldout_batches")}:
            findings.violations.append(
                f"GATE-EVAL-001 measured {heldout.measured.get('heldout_batches')!r} held-out batches, "
                f"the evaluations in metrics.jsonl used {sorted(batches, key=str)}"
            )
    adequacy = by_id.get("GATE-DATA-004")
    if adequacy is not None and isinstance(adequacy.measured, dict):
        for key in ("repeats", "tokens_per_parameter"):
            if key in metrics and adequacy.measured.get(key) != metrics[key]:
                findings.violations.append(
                    f"GATE-DATA-004 measured {key} {adequacy.measured.get(key)!r}, "
                    f"metrics.{key} is {metrics[key]!r}"
                )


def check_record_truth(record: EvidenceRecord, run_dir: Path, spec: Spec) -> RecordFindings:
    """Every truth check of one record."""
    findings = RecordFindings()
    check_gate_results(record, spec, findings)
    check_run(record, spec, findings)
    check_metrics_log(record, run_dir, findings)
    findings.violations += repeatability_problems(record)
    return findings
