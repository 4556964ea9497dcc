"""Models' family trees from the evidence, and whether every link of them holds.

A record of a derived model (contracts.evidence.Lineage, filled by stack.train.lineage) names each
parent by the parent's record id and the sha256 of the weights it read. The chain holds when,
for every parent that names a record:
- that record is among the records checked (the ledger, and the run directories given), and
- it vouches for those very weights: the weights it says it made (`lineage.model_sha256`: an
  export's, an import's, a surgery's or a merge's output), or else those of the checkpoint it
  names (a training run's, an ES run's newest checkpoint).
And a completed record of a kind that derives a model (DERIVED_KINDS), made under a spec that
asks for lineage (LINEAGE_SINCE on), names at least one parent. A parent with no record (a model
made elsewhere) is named by its weights alone, and nothing more can be checked of it.

A resumed leg of a training run (stack.outputs.ledger) names the newest filed leg of the same run
as its `resumes` parent: that record must be an earlier leg of the same run (its start time, kind
and run id, a lower leg number), the leg must end at a later step, and the parent must vouch for
the weights the leg resumed from, or end at an earlier step than the leg resumed from (a leg
resumed without --evidence-dir in between, whose record was never filed). The legs of one run
share their start time, commit and kind by design; `same_run` tells the integrity check's copy
detector so (a copy still shares its original's metrics log, which legs never do).

A record also restates what the records it names decide, and is held to them: a run started from
an init parent, the step of the checkpoint it started from and the parent's architecture; a run
that read prepared data, what the prepare record of that data's manifest counted (its tokenizer,
its shards, its examples); an evaluation, the context and the training data of the run that made
the weights it scored.

tools/check_integrity.py files each problem as a GATE-INTEG-001 violation; tools/site/lineage.py
draws the trees.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.curriculum import split_windows
from contracts.derive.prepare import coverage_problems, heldout_windows_problems, sft_gate_problems
from contracts.derive.reports import version_key
from contracts.derive.restated import SHARES_LOGGED, changed_by_resumes
from contracts.derive.training import policy_driven
from contracts.evidence import RESUMES, EvidenceRecord, ParentRef, RunStatus, leg_of
from contracts.model_shape import architecture_changes
from contracts.plan import quotas, share_weights

# The run kinds whose model is made out of another one (spec/run_kinds.yaml).
DERIVED_KINDS = frozenset(
    {
        "finetune",
        "sft",
        "dpo",
        "distill",
        "lora-merge",
        "lora-export",
        "lora-import",
        "laser",
        "quantize",
        "es",
        "export-hf",
        "export-onnx",
        "import-hf",
    }
)
# The spec version from which a derived model's record must name its parents.
LINEAGE_SINCE = (1, 7, 0)
WEIGHTS_FILE = "model.safetensors"
INIT = "init"  # the role of the parent whose weights a run started from (stack.train.lineage)
SOURCE = "source"  # the role of the model a surgery, merge, export or import read (stack.train.lineage)
# The roles of the parents each kind's command names (stack.train.lineage.lineage, called by each):
# the training loop's start, a DPO reference, a distillation's teacher and a resumed leg's earlier
# leg; an ES run's start; the source a surgery, merge, export or import read; the base a peft
# adapter is imported onto. A parent of another role (or of a kind not here) is one no command
# names, and the checks keyed by role (contracts.derive.reports.source_parent_problems, the init
# parent's step and architecture) would pass it over: it is a violation.
PARENT_ROLES: dict[str, frozenset[str]] = {
    "train": frozenset({RESUMES}),
    "finetune": frozenset({INIT, RESUMES}),
    "sft": frozenset({INIT, RESUMES}),
    "dpo": frozenset({INIT, "reference", RESUMES}),
    "distill": frozenset({INIT, "teacher", RESUMES}),
    "es": frozenset({INIT}),
    **dict.fromkeys(
        ("laser", "quantize", "lora-merge", "lora-export", "export-hf", "export-onnx", "import-hf"),
        frozenset({SOURCE}),
    ),
    "lora-import": frozenset({"base"}),
}


def vouched_weights(record: EvidenceRecord) -> str | None:
    """The sha256 of the weights a record vouches for: what it made, else its checkpoint's."""
    if record.lineage is not None and record.lineage.model_sha256 is not None:
        return record.lineage.model_sha256
    if record.checkpoint is not None and WEIGHTS_FILE in record.checkpoint.files:
        return record.checkpoint.files[WEIGHTS_FILE].sha256
    return None


def _asks_for_lineage(record: EvidenceRecord) -> bool:
    try:
        version = tuple(int(part) for part in record.spec.version.split(".")[:3])
    except ValueError:
        return True  # a version we cannot read is held to today's rule
    return (
        record.run.kind in DERIVED_KINDS
        and record.run.status is RunStatus.COMPLETED
        and version >= LINEAGE_SINCE
    )


def lineage_problems(records: Mapping[str, EvidenceRecord]) -> list[tuple[str, str]]:
    """(run id, problem) for every broken link among `records` (run id → record); see the module doc."""
    problems = []
    for run_id, record in records.items():
        problems += [(run_id, problem) for problem in role_problems(record) + made_digest_problems(record)]
        if record.lineage is None or not record.lineage.parents:
            if _asks_for_lineage(record):
                problems.append(
                    (run_id, f"a {record.run.kind} record names no parent model (its lineage is empty)")
                )
            continue
        for ref in record.lineage.parents:
            if ref.run is None:
                continue
            parent = records.get(ref.run)
            if parent is None:
                problems.append(
                    (
                        run_id,
                        f"its {ref.role} parent's record {ref.run!r} is not in the ledger: file it there "
                        "(--evidence-dir), or check its run directory with --run too",
                    )
                )
                continue
            if ref.role == RESUMES:
                problem = _leg_problem(record, parent, ref)
                if problem is not None:
                    problems.append((run_id, problem))
                continue
            vouched = vouched_weights(parent)
            if vouched != ref.checkpoint_sha256:
                problems.append(
                    (
                        run_id,
                        f"its {ref.role} parent {ref.run!r} vouches for weights "
                        f"{str(vouched)[:12]}, not the {ref.checkpoint_sha256[:12]} this model was made from",
                    )
                )
            elif ref.role == INIT:
                problems += [(run_id, p) for p in _started_problems(record, parent)]
    return problems


def role_problems(record: EvidenceRecord) -> list[str]:
    """Each lineage parent of a role the record's kind's command never names (PARENT_ROLES)."""
    parents = record.lineage.parents if record.lineage is not None else []
    if not parents:
        return []
    roles = PARENT_ROLES.get(record.run.kind)
    if roles is None:
        return [f"its lineage names parents, but no command of its kind {record.run.kind!r} names any"]
    problems = [
        f"its lineage names a parent of role {ref.role!r} ({ref.path}), which the command of a "
        f"{record.run.kind!r} record never names (it names {', '.join(sorted(roles))})"
        for ref in parents
        if ref.role not in roles
    ]
    return problems + [
        f"its {RESUMES} parent names no record: a resumed leg names the filed leg it continues"
        for ref in parents
        if ref.role == RESUMES and ref.run is None
    ]


def made_digest_problems(record: EvidenceRecord) -> list[str]:
    """A `lineage.model_sha256` where the record's checkpoint is not the model it read.

    stack.train.lineage.lineage states the weights a command wrote only where the record's
    `checkpoint` names its input (a surgery's, an export's, a merge's source: the weights of a
    parent it read), so the made weights would otherwise go unnamed; a record whose checkpoint is
    the model its run made (a training or ES run's, MAKING_KINDS; or any checkpoint no parent's
    weights are) vouches for that checkpoint, and a digest beside it is one no command wrote
    (an ES record given an invented model_sha256)."""
    if record.lineage is None or record.lineage.model_sha256 is None:
        return []
    hashed = record.checkpoint.files.get(WEIGHTS_FILE) if record.checkpoint is not None else None
    read = {ref.checkpoint_sha256 for ref in record.lineage.parents}
    if record.run.kind not in MAKING_KINDS and hashed is not None and hashed.sha256 in read:
        return []
    named = "names no weights" if hashed is None else f"holds weights {hashed.sha256[:12]}"
    why = "the model its run made" if record.run.kind in MAKING_KINDS else "none of its parents' weights"
    return [
        f"lineage.model_sha256 is {record.lineage.model_sha256[:12]}, but its checkpoint {named}, "
        f"{why}: a command states the weights it wrote only where its checkpoint is the model it read"
    ]


def _started_problems(record: EvidenceRecord, parent: EvidenceRecord) -> list[str]:
    """What a run started from its init parent's weights restates of that parent's record: the step
    of the checkpoint it started from (`metrics.init_from.step`), where the parent vouches for the
    weights by its checkpoint, and the architecture of the model (the keys of [model] a start keeps,
    contracts.model_shape.architecture_changes), where the parent's config states one."""
    problems = []
    start = record.metrics.get("init_from")
    step = start.get("step") if isinstance(start, dict) else None
    made = parent.lineage is not None and parent.lineage.model_sha256 is not None
    if not made and parent.checkpoint is not None and step is not None and step != parent.checkpoint.step:
        problems.append(
            f"metrics.init_from.step is {step}, but its init parent {parent.run.id!r} checkpointed those "
            f"weights at step {parent.checkpoint.step}"
        )
    source, started = (
        r.config.get("model") if isinstance(r.config, dict) else None for r in (parent, record)
    )
    if isinstance(source, dict) and isinstance(started, dict):
        problems += [
            f"config.model.{key} is {now!r}, but the model of its init parent {parent.run.id!r} has "
            f"{was!r}: a started run keeps its parent's architecture"
            for key, (was, now) in architecture_changes(source, started).items()
        ]
    return problems


def _resumed_step(record: EvidenceRecord) -> int | None:
    """The step a resumed leg continued from: its last resume's `from_step`."""
    resumes = record.metrics.get("resumes")
    last = resumes[-1] if isinstance(resumes, list) and resumes else None
    step = last.get("from_step") if isinstance(last, dict) else None
    return step if isinstance(step, int) else None


def _leg_problem(record: EvidenceRecord, parent: EvidenceRecord, ref: ParentRef) -> str | None:
    """Why a resumed leg's link to the leg it continues does not hold, or None (module docstring)."""
    (run, leg), (parent_run, parent_leg) = leg_of(record.run.id), leg_of(parent.run.id)
    same = (parent.run.started, parent.run.kind, parent_run) == (record.run.started, record.run.kind, run)
    if not same or parent_leg >= leg:
        return f"resumes {ref.run!r}, which is not an earlier leg of the same run (another start, kind or id)"
    if (
        record.checkpoint is None
        or parent.checkpoint is None
        or record.checkpoint.step <= parent.checkpoint.step
    ):
        return f"resumes {ref.run!r} but ends at no later step than it: a leg trains on"
    if vouched_weights(parent) == ref.checkpoint_sha256:
        return None
    step = _resumed_step(record)
    if parent.checkpoint is not None and step is not None and parent.checkpoint.step < step:
        return None  # legs resumed in between were not filed; this one went on from a later checkpoint
    return (
        f"resumes {ref.run!r}, which vouches for weights {str(vouched_weights(parent))[:12]}, not the "
        f"{ref.checkpoint_sha256[:12]} it resumed from"
    )


def same_run(a: EvidenceRecord, b: EvidenceRecord, records: Mapping[str, EvidenceRecord]) -> bool:
    """Whether two records are legs of one run: following each one's `resumes` parents leads to
    the same first leg."""

    def first_leg(record: EvidenceRecord) -> str:
        seen = {record.run.id}
        while record.lineage is not None:
            link = next((p for p in record.lineage.parents if p.role == RESUMES and p.run), None)
            parent = records.get(link.run) if link is not None and link.run is not None else None
            if parent is None or parent.run.id in seen or parent.run.started != record.run.started:
                break
            seen.add(parent.run.id)
            record = parent
        return record.run.id

    return first_leg(a) == first_leg(b)


@dataclass
class Node:
    """One model of a family: its record, and the records made from it (with the parent's role)."""

    run_id: str
    record: EvidenceRecord | None  # None: a parent named by a record that is not in the ledger
    children: list[tuple[str, Node]] = field(default_factory=list)


def families(records: Mapping[str, EvidenceRecord]) -> list[Node]:
    """The family trees among `records`: one root per model that has children but no parent in
    the ledger, each child under its first parent (a DPO reference that is its policy's own start
    is one edge, not two). Records that are in no family are left out."""
    nodes: dict[str, Node] = {}

    def node(run_id: str) -> Node:
        if run_id not in nodes:
            nodes[run_id] = Node(run_id, records.get(run_id))
        return nodes[run_id]

    has_parent: set[str] = set()
    for run_id, record in sorted(records.items(), key=lambda item: item[1].run.started):
        refs = [] if record.lineage is None else record.lineage.parents
        named = [ref for ref in refs if ref.run is not None]
        if not named:
            continue
        first = named[0]
        node(first.run).children.append((first.role, node(run_id)))  # type: ignore[arg-type]
        has_parent.add(run_id)
    return [n for run_id, n in nodes.items() if run_id not in has_parent]


# -- links the ledger decides across records ----------------------------------------------------


@dataclass(frozen=True)
class Release:
    """A registry entry as the ledger's other records may name it: by the directory its weights are
    released in (evidence/models/<name>-<version>), with the weights' sha256 and the step of the
    checkpoint its evidence record hashed (None when that record hashed none)."""

    key: str
    directory: str
    weights: str
    step: int | None
    live: bool


def _names(path: str, directory: str) -> bool:
    """Whether `path` (as a record states it, maybe in another copy of the repository) is `directory`
    or the weights file in it."""
    path = path.rstrip("/").removesuffix("/" + WEIGHTS_FILE)
    return path == directory or path.endswith("/" + directory)


def release_parent_problems(
    records: Mapping[str, EvidenceRecord], releases: list[Release]
) -> list[tuple[str, str]]:
    """(run id, problem) for every record that names a released model by its path and says other
    weights, or another step, than the release's: a lineage parent's `checkpoint_sha256` is the
    release's weights, `metrics.init_from.step` the step of the checkpoint its record hashed, and
    the checkpoint a command read (`config.checkpoint`: an evaluation's, a sample's, an export's)
    hashes its weights as the release does."""
    problems = []
    for run_id, record in records.items():
        problems += [(run_id, p) for p in _read_release_problems(record, releases)]
        parents = record.lineage.parents if record.lineage is not None else []
        for ref in parents:
            release = next((r for r in releases if ref.path and _names(ref.path, r.directory)), None)
            if release is not None and ref.checkpoint_sha256 != release.weights:
                problems.append(
                    (
                        run_id,
                        f"its {ref.role} parent {ref.path} is the release {release.key}, whose weights are "
                        f"{release.weights[:12]}, not the {ref.checkpoint_sha256[:12]} it names",
                    )
                )
        start = record.metrics.get("init_from")
        path = start.get("path") if isinstance(start, dict) else None
        release = next((r for r in releases if isinstance(path, str) and _names(path, r.directory)), None)
        if release is not None and release.step is not None and start.get("step") != release.step:  # type: ignore[union-attr]
            problems.append(
                (
                    run_id,
                    f"metrics.init_from.step is {start.get('step')}, but the release {release.key} it "  # type: ignore[union-attr]
                    f"started from is the checkpoint of step {release.step}",
                )
            )
    return problems


def _read_release_problems(record: EvidenceRecord, releases: list[Release]) -> list[str]:
    """A record whose command read a released model by its directory (`config.checkpoint`) names,
    in its checkpoint, the weights the release holds."""
    named = record.config.get("checkpoint") if isinstance(record.config, dict) else None
    release = next((r for r in releases if isinstance(named, str) and _names(named, r.directory)), None)
    files = record.checkpoint.files if record.checkpoint is not None else {}
    if release is None or WEIGHTS_FILE not in files or files[WEIGHTS_FILE].sha256 == release.weights:
        return []
    return [
        f"checkpoint.files.{WEIGHTS_FILE} is {files[WEIGHTS_FILE].sha256[:12]}, but config.checkpoint "
        f"names the release {release.key}, whose weights are {release.weights[:12]}"
    ]


def rebadged_releases(releases: list[Release]) -> list[tuple[str, str]]:
    """(release, problem) for every live release whose weights another live release already backs:
    one model's weights stand for one version (a new version is new weights, or the old one withdrawn)."""
    problems, seen = [], {}
    for release in releases:
        if not release.live:
            continue
        if release.weights in seen:
            problems.append(
                (
                    release.key,
                    f"releases the weights {release.weights[:12]} that {seen[release.weights]} already "
                    "releases: one model's weights back one live release (withdraw the other)",
                )
            )
        seen.setdefault(release.weights, release.key)
    return problems


# The run kinds whose record states the unique tokens of the train split it read.
TRAINING_KINDS = frozenset({"train", "finetune", "sft", "dpo", "distill"})


@dataclass(frozen=True)
class Prepared:
    """A prepare record of the ledger, as the records that read its data are held to it: its run id,
    the train split's tokens its metrics state, and its manifest.json (None where it cites none)."""

    run_id: str
    train_tokens: int | None
    manifest: dict[str, Any] | None


def prepared_data(
    records: Mapping[str, EvidenceRecord], manifests: Mapping[str, dict[str, Any]]
) -> dict[str, Prepared]:
    """manifest sha256 → the prepare record that made that data (`manifests`: a prepare record's
    run id → the manifest.json it cites, which hashes to the sha256 it states)."""
    prepared: dict[str, Prepared] = {}
    for run_id, record in records.items():
        manifest = record.data.manifest_sha256 if record.data is not None else None
        if record.run.kind != "prepare" or not manifest:
            continue
        totals = record.metrics.get("totals")
        tokens = (totals.get("train") or {}).get("tokens") if isinstance(totals, dict) else None
        found = Prepared(run_id, tokens if isinstance(tokens, int) else None, manifests.get(run_id))
        prepared.setdefault(manifest, found)
    return prepared


def logged_shares(record: EvidenceRecord, log: str | None) -> dict[str, float] | None:
    """The shares a policy run's last epoch plan was made from: the last `shares` event of its
    metrics log (`log`, its text), which from SHARES_LOGGED on says each share the policy hands the
    reader at the step it is first served; None for a run of fixed weights, an older one, or a log
    without the event."""
    data = record.config.get("data") if isinstance(record.config, dict) else None
    if log is None or not isinstance(data, dict) or not policy_driven({"data": data}):
        return None
    if version_key(record.spec.version) < version_key(SHARES_LOGGED):
        return None
    last = None
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if (
                isinstance(event, dict)
                and event.get("event") == "shares"
                and isinstance(event.get("shares"), dict)
            ):
                last = event["shares"]
    return last


def prepared_data_problems(
    records: Mapping[str, EvidenceRecord],
    manifests: Mapping[str, dict[str, Any]],
    shares: Mapping[str, dict[str, float]] | None = None,
) -> list[tuple[str, str]]:
    """(run id, problem) for every record that names the manifest of data a prepare record in the
    ledger made (data.manifest_sha256) and restates otherwise what that prepare counted: the train
    split's tokens (`unique_train_tokens`, of a training run that read every source), the tokenizer
    (`data.tokenizer_sha256`, GATE-DATA-007's data_* values), GATE-DATA-001's coverage of a split's
    shards and its epoch plans' quota windows (contracts.plan's rule; `shares`: run id → the shares
    a policy run's last plan was made from, `logged_shares`), and GATE-SFT-001/002's counts of
    examples (contracts.derive.reports)."""
    prepared = prepared_data(records, manifests)
    problems = []
    for run_id, record in records.items():
        manifest = record.data.manifest_sha256 if record.data is not None else None
        if record.run.kind == "prepare" or manifest not in prepared:
            continue
        source = prepared[manifest]  # type: ignore[index]
        where = f"its data (prepare record {source.run_id!r}, manifest {manifest[:12]})"  # type: ignore[index]
        problems += [(run_id, p) for p in _unique_tokens_problems(record, source, where)]
        if source.manifest is not None:
            planned = (shares or {}).get(run_id)
            problems += [(run_id, p) for p in _read_data_problems(record, source.manifest, where, planned)]
    return problems


def _unique_tokens_problems(record: EvidenceRecord, source: Prepared, where: str) -> list[str]:
    """A training run that read every source of its data (none excluded or weighted 0) states the
    train split's tokens as its `unique_train_tokens`."""
    if record.run.kind not in TRAINING_KINDS:
        return []
    data = record.config.get("data", {}) if isinstance(record.config, dict) else {}
    weights = data.get("weights") or {}
    if data.get("exclude") or any(not w for w in weights.values()):
        return []
    unique = record.metrics.get("unique_train_tokens")
    if unique is None or source.train_tokens is None or unique == source.train_tokens:
        return []
    return [
        f"metrics.unique_train_tokens is {unique}, but the train split of {where} holds "
        f"{source.train_tokens} tokens"
    ]


# GATE-DATA-007's values of the data's tokenizer, by the key of the manifest's tokenizer they restate.
DATA_TOKENIZER = {
    "name": "data_tokenizer",
    "identity": "data_tokenizer_identity",
    "vocab_size": "data_vocab_size",
}


def _read_data_problems(
    record: EvidenceRecord, manifest: dict[str, Any], where: str, shares: dict[str, float] | None
) -> list[str]:
    """What a record that read prepared data restates of its manifest: the tokenizer that made it
    (a distillation's student's too, GATE-KD-001), GATE-DATA-001's coverage of its shards,
    GATE-DATA-005's windows of its held-out split, and GATE-SFT-001/002's counts of its examples."""
    tokenizer = manifest.get("tokenizer") or {}
    results = {g.id: g.measured for g in record.gates if isinstance(g.measured, dict)}
    stated = [("data.tokenizer_sha256", "sha256", record.data.tokenizer_sha256 if record.data else None)]
    judged = results.get("GATE-DATA-007", {})
    stated += [
        (f"gates[GATE-DATA-007].measured.{name}", key, judged.get(name))
        for key, name in DATA_TOKENIZER.items()
    ]
    distilled = results.get("GATE-KD-001", {})  # a distillation's student learns the data's tokens
    student = distilled.get("student_tokenizer_identity")
    stated.append(("gates[GATE-KD-001].measured.student_tokenizer_identity", "identity", student))
    problems = [
        f"{field} is {value!r}, but the tokenizer of {where} has {key} {tokenizer[key]!r}"
        for field, key, value in stated
        if value is not None and key in tokenizer and value != tokenizer[key]
    ]
    problems += coverage_problems(results.get("GATE-DATA-001"), manifest, where)
    data = record.config.get("data") if isinstance(record.config, dict) else None
    exclude = (data.get("exclude") if isinstance(data, dict) else None) or []
    problems += heldout_windows_problems(results, manifest, exclude, where)
    problems += _quota_problems(record, manifest, where, shares)
    return problems + sft_gate_problems(results, manifest, where)


def _quota_problems(
    record: EvidenceRecord, manifest: dict[str, Any], where: str, shares: dict[str, float] | None
) -> list[str]:
    """GATE-DATA-001's quota_windows, the windows the record's last epoch plan was held to, against
    contracts.plan's quotas of the train split's sources in the manifest: under the config's
    data.weights and exclude for a run of fixed weights, under the weights that serve `shares`
    (contracts.plan.share_weights) for a policy's run, whose last plan they made; for a run whose
    resumes kept its mixture (a resume's new weights make plans of other lengths)."""
    measured = next((g.measured for g in record.gates if g.id == "GATE-DATA-001"), None)
    config = record.config if isinstance(record.config, dict) else {}
    data = config.get("data")
    if isinstance(data, str):  # named by path alone (es, lens-train): every source at its full weight
        data = {}
    if not isinstance(measured, dict) or not isinstance(data, dict):
        return []
    driven = policy_driven({"data": data})
    stated, window = measured.get("quota_windows"), measured.get("window_targets")
    if (
        not isinstance(stated, int)
        or not isinstance(window, int)
        or window < 1
        or (driven and shares is None)
    ):
        return []
    if any(key.startswith("data.") and key != "data.wrap" for key in changed_by_resumes(record)):
        return []
    windows = split_windows(_shards(manifest), "train", window)
    problems = _static_windows_problems(record, windows, window, where)
    excluded, weights = set(data.get("exclude") or []), data.get("weights") or {}
    weight = {name: 0.0 if name in excluded else float(weights.get(name, 1.0)) for name in windows}
    if driven:
        weight = {name: 0.0 for name in windows} | share_weights(shares or {}, windows)
    rule = sum(quotas({name: (0, n) for name, n in windows.items()}, weight, {}, window).values())
    if stated == rule:
        return problems
    mixture = f"the policy's last shares {shares}" if driven else f"data.weights {weights}"
    return [
        *problems,
        f"gates[GATE-DATA-001].measured.quota_windows is {stated}, but the quotas of the train windows "
        f"of {where} ({windows} at {window} targets) under {mixture} give {rule}",
    ]


def _shards(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The shards a manifest lists (those that are tables)."""
    return [shard for shard in manifest.get("shards") or [] if isinstance(shard, dict)]


def _static_windows_problems(
    record: EvidenceRecord, windows: dict[str, int], window: int, where: str
) -> list[str]:
    """GATE-DATA-008's check static derived a static policy's shares from `static_windows`: the
    windows of each source of the train split of the manifest at the run's window (the same
    contracts.curriculum.split_windows), which the record's shares events are held to."""
    measured = next((g.measured for g in record.gates if g.id == "GATE-DATA-008"), None)
    stated = measured.get("static_windows") if isinstance(measured, dict) else None
    if stated is None or stated == windows:
        return []
    return [
        f"gates[GATE-DATA-008].measured.static_windows is {stated}, but the train split of {where} holds "
        f"{windows} windows of {window} targets"
    ]


# -- the run an evaluation scored -----------------------------------------------------------------

# The run kinds whose record's checkpoint is the model the run made, not one it read.
MAKING_KINDS = TRAINING_KINDS | {"es"}
# The roles of the parent a model is made from without changing its architecture or its training
# data: a surgery's, a merge's or an export's source, and the model an ES run evolves.
SAME_MODEL_ROLES = (SOURCE, INIT)


def made_weights(record: EvidenceRecord) -> str | None:
    """The sha256 of the weights a record's run made: a training or ES run's checkpoint's, a derived
    model's `lineage.model_sha256` (`vouched_weights`); None for a record that made none."""
    derived = record.lineage is not None and record.lineage.model_sha256 is not None
    return vouched_weights(record) if record.run.kind in MAKING_KINDS or derived else None


def _made_by(records: Mapping[str, EvidenceRecord]) -> dict[str, EvidenceRecord]:
    """weights sha256 → the record of the run that made them (`made_weights`)."""
    made: dict[str, EvidenceRecord] = {}
    for record in records.values():
        weights = made_weights(record)
        if weights is not None:
            made.setdefault(weights, record)
    return made


def _makers(
    record: EvidenceRecord, records: Mapping[str, EvidenceRecord]
) -> tuple[list[EvidenceRecord], bool]:
    """`record` and the records of the models it was made from, in turn (a fine-tune's base too:
    its `init` parent), as far as the ledger holds them, and whether the chain ends where the
    lineage does rather than at a parent the ledger lacks (stack.train.lineage.recorded_data_dirs
    follows the same chain for the DATA_DIRs)."""
    chain = [record]
    while chain[-1].lineage is not None:
        ref = next((p for p in chain[-1].lineage.parents if p.role in SAME_MODEL_ROLES), None)
        if ref is None:
            break
        parent = records.get(ref.run) if ref.run is not None else None
        if parent is None or parent.run.id in {m.run.id for m in chain}:
            return chain, False
        chain.append(parent)
    return chain, True


def evaluated_problems(records: Mapping[str, EvidenceRecord]) -> list[tuple[str, str]]:
    """(run id, problem) for every evaluation (`stack eval`) that restates what the record of the
    model it scored (the run that made the weights its checkpoint holds, `_makers`) says: its
    windows are that model's context (`config.seq_len`), and the training data its overlap was
    measured against is that run's DATA_DIR, which is also the data it scored with `--split` and no
    `--data`."""
    made = _made_by(records)
    problems = []
    for run_id, record in records.items():
        hashed = record.checkpoint.files.get(WEIGHTS_FILE) if record.checkpoint is not None else None
        maker = made.get(hashed.sha256) if hashed is not None and record.run.kind == "eval" else None
        if maker is not None:
            problems += [(run_id, p) for p in _evaluated_problems(record, *_makers(maker, records))]
    return problems


def _evaluated_problems(record: EvidenceRecord, makers: list[EvidenceRecord], whole: bool) -> list[str]:
    """What an evaluation restates of the records of the model it scored (`makers`, nearest first;
    `whole`: the chain ends where the lineage does)."""
    problems = []
    model = next((m.config["model"] for m in makers if isinstance(m.config.get("model"), dict)), None)
    ctx, seq_len = (model or {}).get("ctx"), record.config.get("seq_len")
    if isinstance(ctx, int) and seq_len is not None and seq_len != ctx:
        problems.append(f"config.seq_len is {seq_len}, but the model it scored has a context of {ctx} tokens")
    maker = next((m for m in makers if isinstance(m.metrics.get("data_dir"), str)), None)
    if maker is None:
        return problems
    data_dir = maker.metrics["data_dir"]
    overlap = record.metrics.get("overlap")
    stated = {
        "metrics.overlap.training_data": overlap.get("training_data") if isinstance(overlap, dict) else None
    }
    if _given(record.run.argv, "--split") and not _given(record.run.argv, "--data"):
        stated["config.data"] = record.config.get("data")
    problems += [
        f"{field} is {value!r}, but the model it scored was trained on {data_dir!r} (run {maker.run.id!r})"
        for field, value in stated.items()
        if value is not None and value != data_dir
    ]
    gate = next((g for g in record.gates if g.id == "GATE-EVAL-003"), None)
    chained = gate is not None and gate.revision >= EARLIER_REVISION
    if isinstance(overlap, dict) and overlap.get("training_data") == data_dir and chained:
        problems += _earlier_problems(overlap.get("earlier_training_data", []), makers, whole)
    return problems


# The revision of GATE-EVAL-003 from which an evaluation states the DATA_DIRs the models the scored
# model was tuned from learned from (`earlier_training_data`).
EARLIER_REVISION = 9


def _earlier_problems(stated: Any, makers: list[EvidenceRecord], whole: bool) -> list[str]:
    """`earlier_training_data` names, in order, every DATA_DIR the models the scored model was
    tuned from learned from (the chain's DATA_DIRs after the first). It stops short only at a
    model of the chain it states was gone (a last row `{"model": ..., "gone": true}`), and the
    chain only at a parent the ledger lacks; up to there the two agree."""
    chain = list(
        dict.fromkeys(m.metrics["data_dir"] for m in makers if isinstance(m.metrics.get("data_dir"), str))
    )
    if not isinstance(stated, list) or not all(isinstance(row, dict) for row in stated):
        return [f"metrics.overlap.earlier_training_data is {stated!r}, not a list of DATA_DIRs"]
    named = [row.get("data") for row in stated if "model" not in row]
    lost = bool(stated) and "model" in stated[-1] and stated[-1].get("gone") is True
    earlier = chain[1:]
    shorter = min(len(named), len(earlier))
    if named[:shorter] == earlier[:shorter] and (
        len(named) == len(earlier)
        or (lost and len(named) < len(earlier))  # the record stops at the model it found gone
        or (not whole and len(earlier) < len(named))  # the ledger stops at the parent it lacks
    ):
        return []
    return [
        f"metrics.overlap.earlier_training_data names {named}, but the models the scored model was tuned "
        f"from learned from {earlier}"
    ]


def _given(argv: list[str], option: str) -> bool:
    """Whether a command line gave `option` (as `--opt VALUE` or `--opt=VALUE`)."""
    return any(arg == option or arg.startswith(option + "=") for arg in argv)
