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

tools/check_integrity.py files each problem as a GATE-INTEG-001 violation; tools/site_lineage.py
draws the trees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.evidence import RESUMES, EvidenceRecord, ParentRef, RunStatus, leg_of

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
# The spec version from which a derived model's record must name its parents (issue #37).
LINEAGE_SINCE = (1, 7, 0)
WEIGHTS_FILE = "model.safetensors"


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
    release's weights, and `metrics.init_from.step` the step of the checkpoint its record hashed."""
    problems = []
    for run_id, record in records.items():
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


def prepared_tokens_problems(records: Mapping[str, EvidenceRecord]) -> list[tuple[str, str]]:
    """(run id, problem) for every training record whose `unique_train_tokens` is not the train split's
    tokens of the prepare record in the ledger that made its data (the manifest sha256 both name),
    when the run read every source of it (no source excluded or weighted 0)."""
    prepared: dict[str, tuple[str, int]] = {}
    for run_id, record in records.items():
        totals = record.metrics.get("totals") if record.run.kind == "prepare" else None
        tokens = (totals.get("train") or {}).get("tokens") if isinstance(totals, dict) else None
        manifest = record.data.manifest_sha256 if record.data is not None else None
        if isinstance(tokens, int) and manifest:
            prepared.setdefault(manifest, (run_id, tokens))
    problems = []
    for run_id, record in records.items():
        manifest = record.data.manifest_sha256 if record.data is not None else None
        if record.run.kind not in TRAINING_KINDS or manifest not in prepared:
            continue
        data = record.config.get("data", {}) if isinstance(record.config, dict) else {}
        weights = data.get("weights") or {}
        if data.get("exclude") or any(not w for w in weights.values()):
            continue
        source, tokens = prepared[manifest]  # type: ignore[index]
        unique = record.metrics.get("unique_train_tokens")
        if unique is not None and unique != tokens:
            problems.append(
                (
                    run_id,
                    f"metrics.unique_train_tokens is {unique}, but the train split of its data (prepare "
                    f"record {source!r}, manifest {manifest[:12]}) holds {tokens} tokens",  # type: ignore[index]
                )
            )
    return problems
