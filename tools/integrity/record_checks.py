"""Is one evidence record true? Re-judging, re-deriving, required gates, waivers and policy.

`tools/check_integrity.py` asks these questions of every record it reads; each returns the
problems it finds as sentences, and the checker files them under the record's path. Nothing
here trusts a verdict or a number: every verdict is recomputed from the record's measured values
by the gate's own judge and verdict mapping (those of `contracts.ledger.judged_result`), under the
thresholds of the revision the record cites, and every field the record's cited artifacts decide
is derived again from them (`contracts.derive`, the function the run filled the record with) and
compared. A record whose revision or schema predates the spec is reported stale instead; so is a
record made before its kind gained an artifact (it could not cite what did not exist yet).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.derive import DERIVERS, Artifacts, Inputs, derive, differences
from contracts.derive.reports import version_key
from contracts.evidence import REPO_ROOT, SCHEMA_VERSION, EvidenceRecord, RunStatus, Verdict
from contracts.gates import Mode
from contracts.implied_fields import implied_problems
from contracts.judges import CHECKS, JUDGES, Malformed, bare, judge, present_checks
from contracts.ledger import judged_message, verdict_of
from contracts.release_rules import stale_reason
from contracts.spec import RunKind, Spec, checks_required, gates_required
from tools.integrity.benchmark_mfu import mfu_problems
from tools.integrity.determinism_legs import leg_switch_problems
from tools.integrity.env_checks import (
    benchmark_device_problems,
    env_problems,
    version_findings,
    writer_device_problems,
)
from tools.integrity.models.checkpoint_reads import (
    committed_checkpoint_problems,
    committed_source_problems,
    end_of_text_problems,
    read_checkpoint_problems,
    sample_findings,
    vocabulary_problems,
)
from tools.integrity.models.committed_models import committed_model_problems
from tools.integrity.models.es_sources import es_noise_problems
from tools.integrity.models.forward_replays import hqq_replay_findings
from tools.integrity.models.probe_replays import probe_problems
from tools.integrity.models.surgery_sources import surgery_source_problems
from tools.integrity.models.trace_tokens import trace_token_problems
from tools.integrity.repeatability import repeatability_problems
from tools.integrity.settings.argv_config import argv_problems
from tools.integrity.settings.argv_record import argv_record_problems, given
from tools.integrity.settings.bench_names import name_problems
from tools.integrity.settings.config_rebuild import rebuild_problems, rebuild_warnings
from tools.integrity.spec_history import SpecHistory

WAIVE_FLAG = "--waive"
# The spec version from which records carry the policy digests that judged them.
POLICIES_SINCE = "1.7.0"
# The spec version whose records are written in schema 2 (the one the judges read): a record that
# names it or a later one in an older schema lowered its schema to be reported stale as a whole.
SCHEMA_2_SINCE = "1.2.0"


@dataclass
class RecordFindings:
    """What one record's checks found: violations, the gates it is stale for, and other warnings."""

    violations: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)  # gate id → why
    warnings: list[str] = field(default_factory=list)


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


def reasons_on_command_line(record: EvidenceRecord) -> dict[str, set[str]]:
    """Gate id → the reasons the run's command lines gave it, each `--waive` with its `--reason`
    (the pairs the training commands take, read by the stack's own parser)."""
    argvs = [record.run.argv or []]
    resumes = record.metrics.get("resumes")
    if isinstance(resumes, list):
        argvs += [r.get("argv") or [] for r in resumes if isinstance(r, dict)]
    reasons: dict[str, set[str]] = {}
    for argv in argvs:
        options = given(argv) if isinstance(argv, list) else None
        waive, reason = (options or {}).get("waive") or [], (options or {}).get("reason") or []
        if len(waive) == len(reason):
            for gate, why in zip(waive, reason, strict=True):
                reasons.setdefault(str(gate), set()).add(str(why))
    return reasons


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


def check_gate_results(
    record: EvidenceRecord, spec: Spec, findings: RecordFindings, history: SpecHistory | None = None
) -> None:
    """Each gate result: known gate, a revision its record could have judged under, the spec's
    thresholds, and a verdict its judge agrees with.

    The verdict is recomputed as `contracts.ledger.judged_result` computes it at run time: the
    gate's judge over the measured values, mapped by `verdict_of`; and so is the message, the
    judge's problems joined (`judged_message`), which a reader takes for the verdict's reason. A
    revision older than the one its spec version had is a verdict re-stamped to be reported stale
    instead of judged, unless a clean record's own commit still had it (a revision bumped later
    under the same version; `history` reads spec/revisions.yaml at the commit).
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
        came = spec.introduced(result.id, result.revision)
        if came is not None and newer(came, record.spec.version):
            findings.violations.append(
                f"{result.id} rev {result.revision} came with spec {came}, newer than the spec "
                f"{record.spec.version} the record names: a verdict re-stamped with a later revision"
            )
            continue
        had = spec.revision_at(result.id, record.spec.version)
        if (
            had is not None
            and result.revision < had
            and not _in_force_at_commit(record, result.id, result.revision, history)
        ):
            findings.violations.append(
                f"{result.id} rev {result.revision} is older than rev {had}, which the spec "
                f"{record.spec.version} the record names already had: a verdict re-stamped with an "
                "earlier revision, to be reported stale instead of judged again"
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
        if (message := judged_message(problems)) != result.message:
            findings.violations.append(
                f"{result.id}: its message is {result.message!r}, but its judge says {message!r} of its "
                "measured values"
            )
        if recomputed is Verdict.WARN:
            findings.violations += [
                f"{result.id}: WARN, but its check {check} finds without reading a threshold that {problem}: "
                "a record that contradicts its own measurement is false, not warned of"
                for check, problem in contradictions(result.id, result.measured, problems)
            ]


class _ThresholdRead(Exception):
    """A judge read a threshold: what it found is a measure against the spec, not a contradiction."""


class _NoThresholds(Mapping[str, float | int]):
    """Thresholds that stop a judge at the first one it reads."""

    def __getitem__(self, key: str) -> float | int:
        raise _ThresholdRead(key)

    def __iter__(self) -> Iterator[str]:
        raise _ThresholdRead("every threshold")

    def __len__(self) -> int:
        raise _ThresholdRead("every threshold")


def contradictions(gate_id: str, measured: Any, problems: list[str]) -> list[tuple[str, str]]:
    """(check, problem) of each of a gate's `problems` that one of its checks finds, judged alone
    on its own measured keys, without reading any threshold.

    A warning gate's severity says how bad it is that a measure falls short of the spec's bound; a
    check that needs no bound compares the record with itself: a stated value against the one
    recomputed beside it, the examples measured against those the stated seed draws, the rows
    generated against the models handed in (GATE-FT-003's examples_eligible 2446
    restated as 5000, its judge's `drawn` check saying the recall describes
    another set, and the record passing as a WARN). Such a problem is not the run's weakness but
    the record's falsehood (or a run that did not do what it states), whatever the gate's severity.
    A check that reads a threshold, or that its judge cannot judge alone, is left to the verdict."""
    if not isinstance(measured, Mapping) or not problems or gate_id not in JUDGES:
        return []
    try:
        present = present_checks(gate_id, measured)
    except Malformed:
        return []
    found = []
    for check in present:
        keys = {bare(key) for key in CHECKS[gate_id].get(check, ())}
        try:
            alone = JUDGES[gate_id]({k: v for k, v in measured.items() if k in keys}, _NoThresholds())
        except (_ThresholdRead, Malformed):
            continue
        found += [(check, problem) for problem in alone if problem in problems]
    return found


def _in_force_at_commit(
    record: EvidenceRecord, name: str, revision: int, history: SpecHistory | None, clean_only: bool = True
) -> bool:
    """Whether the record's own commit had no revision of gate or policy `name` newer than the one
    it cites. For a gate's verdict only a clean record's commit says so (a dirty tree may have
    judged under an uncommitted revision); a policy's citation is held to its commit, dirty or
    clean (a policy revision bumped later under the same version, after records made on a dirty
    tree cited the one before)."""
    sha = record.code.git_sha
    if history is None or sha is None or (clean_only and record.code.git_dirty):
        return False
    at = history.revision_in_force(sha, name)
    return at is not None and revision >= at


def newer(version: str, than: str) -> bool:
    """Whether spec version `version` is later than `than`."""
    return version_key(version) > version_key(than)


def check_policies(
    record: EvidenceRecord, spec: Spec, findings: RecordFindings, history: SpecHistory | None = None
) -> dict[str, RunKind] | None:
    """The policy revisions the record cites; returns the run kinds it is held to (None: unknown).

    A record made under 1.7.0 or later carries the revision and digest of every policy file that
    decided what it must judge; one made before is held to today's policy, as it always was. A
    record that cites an older revision of run_kinds is held to that revision: its file is found
    in the repository's history by the digest the record cites (`history`), which must be the
    digest spec/revisions.yaml lists for that revision. The revision cited is the one in force at
    the spec version the record names (an older one only where the record's own commit had no
    newer one: a revision bumped later under the same version), so no record sheds a
    requirement by citing the policy before it.
    """
    if record.spec.version not in spec.versions:
        findings.violations.append(
            f"names spec version {record.spec.version}, which the changelog does not have"
        )
    cited = record.spec.policies
    if not cited and not newer(POLICIES_SINCE, record.spec.version):
        findings.violations.append("carries no digest of the policies that judged it (spec.policies)")
        return spec.run_kinds
    current, kinds = spec.policies, spec.run_kinds
    for name, ref in sorted(cited.items()):
        now = current.get(name)
        came = spec.introduced(name, ref.revision)
        history_of = spec.policy_revisions.get(name, [])
        listed = next((e.sha256 for e in history_of if e.revision == ref.revision), None)
        if now is None:
            findings.violations.append(f"cites policy {name!r}, which the spec does not have")
        elif ref.revision > now.revision or came is None:
            findings.violations.append(f"cites {name} rev {ref.revision}; the spec is at rev {now.revision}")
        elif newer(came, record.spec.version):
            findings.violations.append(
                f"cites {name} rev {ref.revision}, which came with spec {came}, newer than the spec "
                f"{record.spec.version} the record names"
            )
        elif (had := spec.revision_at(name, record.spec.version)) is not None and (
            ref.revision < had
            and not _in_force_at_commit(record, name, ref.revision, history, clean_only=False)
        ):
            findings.violations.append(
                f"cites {name} rev {ref.revision}, older than rev {had}, which the spec "
                f"{record.spec.version} the record names already had: a record held to a policy "
                "that asked less of it"
            )
        elif ref.sha256 != listed:
            findings.violations.append(
                f"cites {name} rev {ref.revision} with digest {ref.sha256[:12]}, but that revision's is "
                f"{str(listed)[:12]}"
            )
        elif ref.revision < now.revision and name == "run_kinds":
            then = history.run_kinds(ref.sha256) if history is not None else None
            if then is None:
                findings.warnings.append(
                    f"judged under run_kinds rev {ref.revision}; the spec is at rev {now.revision}, and that "
                    "revision's file is not in the history checked: its required gates are not re-checked"
                )
            kinds = then
    # A policy is owed by the records made once it existed: one whose first revision came with a spec
    # newer than the record's (spec/signing.yaml came with 1.44.0) was not there to be cited.
    owed = [name for name in current if not newer(spec.introduced(name, 1) or "0.0.0", record.spec.version)]
    missing = sorted(set(owed) - set(cited)) if cited else []
    if missing:
        findings.violations.append(f"carries no digest of policy {', '.join(missing)}")
    return kinds


def required_checks(record: EvidenceRecord, kinds: dict[str, RunKind], findings: RecordFindings) -> None:
    """Each gate's checks the run kind asks of a completed record hold values, those of the options
    its config turns on included (spec/run_kinds.yaml of the revision the record cites)."""
    kind = kinds.get(record.run.kind)
    by_id = {g.id: g for g in record.gates}
    for gate_id, names in (checks_required(kind, record.config) if kind else {}).items():
        result = by_id.get(gate_id)
        if result is None or result.verdict is Verdict.NOT_RUN or gate_id in findings.stale:
            continue
        measured = result.measured if isinstance(result.measured, dict) else {}
        declared = CHECKS.get(gate_id, {})
        for name in names:
            keys = declared.get(name)
            if keys is None:
                findings.violations.append(f"{gate_id} has no check {name!r} (spec/run_kinds.yaml names it)")
            elif lacking := [bare(k) for k in keys if bare(k) not in measured]:
                findings.violations.append(
                    f"a completed {record.run.kind} run must show {gate_id}'s check {name}; its values "
                    f"{', '.join(lacking)} are missing"
                )


def check_run(
    record: EvidenceRecord, spec: Spec, findings: RecordFindings, history: SpecHistory | None = None
) -> None:
    """Run kind, policy, contract mode, waivers asked for, required gates and checks judged (under the
    run_kinds revision the record cites), a completed run with no FAIL, and a halted run naming its
    gate."""
    if record.run.kind not in spec.run_kinds:
        findings.violations.append(
            f"run kind {record.run.kind!r} is not declared in spec/run_kinds.yaml: nothing says what it "
            "must judge"
        )
    if record.schema_version > SCHEMA_VERSION:
        findings.violations.append(
            f"schema_version {record.schema_version} is newer than any this checker knows "
            f"({SCHEMA_VERSION}): no stack wrote it"
        )
    if record.schema_version < SCHEMA_VERSION and not newer(SCHEMA_2_SINCE, record.spec.version):
        findings.violations.append(
            f"schema_version {record.schema_version}, but records of spec {SCHEMA_2_SINCE} on (this one "
            f"names {record.spec.version}) are schema 2 or later: a schema lowered to have every verdict "
            "read as stale"
        )
    if record.schema_version < SCHEMA_VERSION:
        return  # a legacy record is stale as a whole; its form was checked by the schema
    kinds = check_policies(record, spec, findings, history)
    modes = {m.value for m in Mode}
    if record.contract_mode not in modes:
        findings.violations.append(
            f"contract_mode {record.contract_mode!r} is not one of {', '.join(sorted(modes))}"
        )
    asked, reasons = waived_on_command_line(record), reasons_on_command_line(record)
    for waiver in record.waivers:
        if waiver.gate not in spec.gates:
            findings.violations.append(f"waives unknown gate {waiver.gate}")
        elif waiver.gate not in asked:
            findings.violations.append(
                f"waiver of {waiver.gate} was not asked for on any command line of the run "
                "(added after the fact?)"
            )
        elif waiver.gate in reasons and waiver.reason not in reasons[waiver.gate]:
            findings.violations.append(
                f"waiver of {waiver.gate} gives the reason {waiver.reason!r}, which no command line of the "
                f"run gave it (they say {sorted(reasons[waiver.gate])})"
            )
    by_id = {g.id: g for g in record.gates}
    kind = kinds.get(record.run.kind) if kinds is not None else None
    if record.run.status is RunStatus.COMPLETED and kinds is not None:
        required_checks(record, kinds, findings)
        for gate_id in gates_required(kind, record.config) if kind is not None else []:
            result = by_id.get(gate_id)
            if result is None and (
                since := spec.required_after(record.run.kind, gate_id, record.spec.version)
            ):
                findings.stale[gate_id] = (
                    f"the gate is required of the kind from spec {since}, after the record's"
                )
            elif result is None:
                findings.violations.append(
                    f"a completed {record.run.kind} run must judge {gate_id}; it is missing"
                )
            elif result.verdict is Verdict.NOT_RUN:
                findings.violations.append(f"a completed {record.run.kind} run left {gate_id} NOT_RUN")
    if record.run.status is RunStatus.COMPLETED and any(g.verdict is Verdict.FAIL for g in record.gates):
        findings.violations.append("status is completed, yet a gate FAILed")
    if record.run.status is RunStatus.HALTED and not any(g.verdict is Verdict.FAIL for g in record.gates):
        findings.violations.append("status is halted, but no gate FAILed")


def check_derived(record: EvidenceRecord, run_dir: Path, spec: Spec, findings: RecordFindings) -> None:
    """Every field the record's cited artifacts decide, derived again and compared (contracts.derive).

    A legacy record (an older schema) was filled by judges older than the spec's, so only what
    contradicts itself counts there: its artifacts against each other, a benchmark's ratio against
    the speeds beside it.
    """
    if record.run.kind not in DERIVERS and record.config_sha256 is None:
        return  # nothing to derive: a kind without raw results that states no config digest
    artifacts = Artifacts(run_dir, [a.path for a in record.artifacts if _inside(a.path)])
    try:
        derivation = derive(record.run.kind, Inputs(record, artifacts, spec, frozenset(findings.stale)))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        findings.violations.append(f"its artifacts cannot be read: {exc!r}")
        return
    if record.schema_version < SCHEMA_VERSION:
        findings.violations += derivation.problems
        return
    for name, since in derivation.missing:
        if newer(since, record.spec.version):
            findings.warnings.append(
                f"made under spec {record.spec.version}, before it had to cite {name} ({since})"
            )
        else:
            findings.violations.append(f"cites no {name}: its numbers cannot be derived")
    findings.violations += derivation.problems
    for difference in differences(record, derivation):
        if difference.since is not None and newer(difference.since, record.spec.version):
            findings.warnings.append(f"{difference.sentence()} (compared from spec {difference.since} on)")
        else:
            findings.violations.append(difference.sentence())


def _inside(path: str) -> bool:
    """A cited path that stays in the record's directory (the artifact checks report one that does not)."""
    return bool(path) and not path.startswith(("/", "~")) and ".." not in path.split("/")


def check_record_truth(
    record: EvidenceRecord,
    run_dir: Path,
    spec: Spec,
    history: SpecHistory | None = None,
    root: Path = REPO_ROOT,
) -> RecordFindings:
    """Every truth check of one record (`history`: the repository's policy files as they were, to
    hold a record to the run_kinds revision it cites; `root`: the repository checked, whose
    committed models the checks that read them open)."""
    findings = RecordFindings()
    check_gate_results(record, spec, findings, history)
    check_run(record, spec, findings, history)
    check_derived(record, run_dir, spec, findings)
    if record.schema_version >= SCHEMA_VERSION:
        findings.violations += argv_problems(record, run_dir) + rebuild_problems(record, run_dir)
        findings.violations += argv_record_problems(record)
        findings.violations += trace_token_problems(record, run_dir, spec, root)
        findings.warnings += rebuild_warnings(record, run_dir)
    findings.violations += repeatability_problems(record) + surgery_source_problems(record, run_dir, root)
    findings.violations += committed_checkpoint_problems(record, root)
    findings.violations += implied_problems(record) + mfu_problems(record) + name_problems(record)
    findings.violations += leg_switch_problems(record) + benchmark_device_problems(record)
    sample_wrong, sample_unheld = sample_findings(record, root)
    findings.violations += sample_wrong
    findings.warnings += sample_unheld
    findings.violations += vocabulary_problems(record, root) + end_of_text_problems(record, root)
    findings.violations += read_checkpoint_problems(record, root) + env_problems(record)
    findings.violations += probe_problems(record, spec)
    replay_wrong, replay_unheld = hqq_replay_findings(record, spec, root)
    findings.violations += replay_wrong
    findings.warnings += replay_unheld
    written = writer_device_problems(record, root)  # a dirty tree's writer may not be its commit's
    (findings.warnings if record.code.git_dirty else findings.violations).extend(written)
    versions_wrong, versions_warned = version_findings(record, run_dir, root)
    findings.violations += versions_wrong
    findings.warnings += versions_warned
    findings.violations += es_noise_problems(record, root) + committed_source_problems(record, run_dir, root)
    findings.violations += committed_model_problems(record, run_dir, spec, root)
    return findings
