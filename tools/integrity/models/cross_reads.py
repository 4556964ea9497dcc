"""What a record states of a model or a file another record of the ledger made, held to that record.

A record that read what another run made restates it, and the restatement was compared only with
the record's own other fields: a distillation's teacher restated as another run's model (command
line, places, config, lineage parent with that record's id and weights, GATE-KD-002's digests), a
model whose context (32) is below the windows the student read (64), which the stack refuses; a
lens reading's lens digest restated, though the ledger's lens-train record that saved the path it
read says otherwise. Here:

* a distillation's teacher, where its lineage names the teacher's record (or the teacher is a
  committed model, tools/integrity/models/committed_models.py), must be one the stack would have accepted: its
  context long enough for the windows the student read (`stack.train.distill_objective
  .distill_window`, the stack's own rule, over the student's config and the teacher's model);
  GATE-KD-001's `teacher_vocab` is that model's vocabulary;
* a lens reading of a lens file that a completed lens-train record of the ledger saved (the same
  place, `run.places`, its run finished before the reading started; the last such) states that
  record's lens digest (`config.lens_sha256`), and GATE-LENS-004's `lens_model_sha256` is the model
  that lens was trained on;
* two records that read the same frozen model's weights file (a distillation's teacher, a DPO
  reference, a memorization's fine-tuned checkpoint: FROZEN_READS) state the same digest of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord, RunStatus
from stack.train.distill_objective import distill_window
from tools.integrity.models.committed_models import UNREADABLE, committed_directory, read_model

TEACHER = "teacher"  # the role of a distillation's teacher among its lineage parents (stack.train.lineage)


def cross_read_problems(
    records: Mapping[str, EvidenceRecord], root: Path = REPO_ROOT
) -> list[tuple[str, str]]:
    """(run id, problem) for every record among `records` (run id → record) that restates what the
    record of the model or file it read says (module doc)."""
    problems = []
    for run_id, record in records.items():
        problems += [(run_id, p) for p in _teacher_problems(record, records, root)]
        problems += [(run_id, p) for p in _lens_problems(record, records)]
    return problems + _frozen_digest_problems(records)


def _teacher_model(
    record: EvidenceRecord, records: Mapping[str, EvidenceRecord], root: Path
) -> tuple[str, dict[str, Any]] | None:
    """The teacher a distillation names, and its [model]: by its record, where its lineage parent
    names one of `records`, else the committed model its config names; None where neither is."""
    parents = record.lineage.parents if record.lineage is not None else []
    ref = next((p for p in parents if p.role == TEACHER and p.run is not None), None)
    parent = records.get(ref.run) if ref is not None and ref.run is not None else None
    if parent is not None:
        model = parent.config.get("model") if isinstance(parent.config, dict) else None
        return (f"record {parent.run.id!r}", model) if isinstance(model, dict) else None
    distill = record.config.get("distill") if isinstance(record.config, dict) else None
    directory = committed_directory(record, (distill or {}).get(TEACHER), root)
    if directory is None:
        return None
    try:
        return f"committed model {directory.name}", read_model(directory).state["config"]["model"]
    except UNREADABLE:
        return None  # tools/committed_models names a committed model that does not read


def _teacher_problems(record: EvidenceRecord, records: Mapping[str, EvidenceRecord], root: Path) -> list[str]:
    """A distillation's teacher: one whose context the stack accepts for the student's windows, and
    whose vocabulary GATE-KD-001 states."""
    config = record.config if isinstance(record.config, dict) else {}
    distill, student = config.get("distill"), config.get("model")
    if record.run.kind != "distill" or not isinstance(distill, dict) or not isinstance(student, dict):
        return []
    found = _teacher_model(record, records, root)
    if found is None:
        return []
    where, teacher = found
    problems = []
    ctx, teacher_ctx = student.get("ctx"), teacher.get("ctx")
    if isinstance(ctx, int) and isinstance(teacher_ctx, int):
        try:
            distill_window(distill.get("seq_len"), ctx, teacher_ctx)
        except BadInput as exc:
            problems.append(f"its teacher ({where}) is one the stack refuses for this student: {exc}")
    stated = next((g.measured for g in record.gates if g.id == "GATE-KD-001"), None)
    vocab = stated.get("teacher_vocab") if isinstance(stated, dict) else None
    if vocab is not None and teacher.get("vocab") is not None and vocab != teacher["vocab"]:
        problems.append(
            f"gates[GATE-KD-001].measured.teacher_vocab is {vocab!r}, but its teacher ({where}) has a "
            f"vocabulary of {teacher['vocab']!r}"
        )
    return problems


def _place(record: EvidenceRecord, word: Any) -> str | None:
    """Where a word of the record's command line led (`run.places`), else the word when absolute."""
    if not isinstance(word, str):
        return None
    place = (record.run.places or {}).get(word)
    return place if isinstance(place, str) else word if Path(word).is_absolute() else None


def _lens_model(record: EvidenceRecord) -> Any:
    """GATE-LENS-004's `lens_model_sha256`: the model the lens read through was trained on."""
    measured = next((g.measured for g in record.gates if g.id == "GATE-LENS-004"), None)
    return measured.get("lens_model_sha256") if isinstance(measured, dict) else None


def _lens_problems(record: EvidenceRecord, records: Mapping[str, EvidenceRecord]) -> list[str]:
    """A lens reading's lens digest and the model it was trained on, against the lens-train record
    that last saved the place it read before it started."""
    config = record.config if isinstance(record.config, dict) else {}
    place = _place(record, config.get("lens"))
    if record.run.kind != "lens" or place is None:
        return []
    saved = [
        other
        for other in records.values()
        if other.run.kind == "lens-train"
        and other.run.status is RunStatus.COMPLETED
        and isinstance(other.config, dict)
        and _place(other, other.config.get("save")) == place
        and other.run.finished is not None
        and other.run.finished <= record.run.started
    ]
    if not saved:
        return []
    maker = max(saved, key=lambda other: other.run.finished or other.run.started)
    made = {
        "config.lens_sha256": (config.get("lens_sha256"), maker.config.get("lens_sha256")),
        "gates[GATE-LENS-004].measured.lens_model_sha256": (_lens_model(record), _lens_model(maker)),
    }
    return [
        f"{field} is {stated!r}, but lens-train record {maker.run.id!r} saved the lens it read ({place}) "
        f"with {wanted!r}"
        for field, (stated, wanted) in made.items()
        if stated is not None and wanted is not None and stated != wanted
    ]


# Where a record names the weights file of a frozen model it read (the sha256 of its
# model.safetensors) and the digest it measured of those weights (`stack.tune.frozen
# .weights_sha256`): (run kind, the file's place, the gate, the digest's measured key). A
# distillation's teacher and a DPO reference by their lineage parent; a memorization's fine-tuned
# model by the checkpoint it read.
FROZEN_READS = (
    ("distill", ("lineage", TEACHER), "GATE-KD-002", ("sha256_before",)),
    ("dpo", ("lineage", "reference"), "GATE-DPO-002", ("sha256_before",)),
    ("memorization", ("checkpoint", "model.safetensors"), "GATE-FT-003", ("models_measured", "fine-tuned")),
)


def _frozen_read(record: EvidenceRecord) -> tuple[str, str, str] | None:
    """(weights file sha256, digest measured, where it is stated) of the frozen model `record` read."""
    for kind, (block, name), gate_id, key in FROZEN_READS:
        if record.run.kind != kind:
            continue
        if block == "lineage":
            parents = record.lineage.parents if record.lineage is not None else []
            file = next((p.checkpoint_sha256 for p in parents if p.role == name), None)
        else:
            ref = record.checkpoint.files.get(name) if record.checkpoint is not None else None
            file = ref.sha256 if ref is not None else None
        measured: Any = next((g.measured for g in record.gates if g.id == gate_id), None)
        for part in key:
            measured = measured.get(part) if isinstance(measured, dict) else None
        if isinstance(file, str) and isinstance(measured, str):
            return file, measured, f"gates[{gate_id}].measured.{'.'.join(key)}"
    return None


def _frozen_digest_problems(records: Mapping[str, EvidenceRecord]) -> list[tuple[str, str]]:
    """Two records that read the same weights file (by its sha256) measured the same frozen digest
    of it: the digest is a function of the weights (a distillation's teacher
    re-pointed to a fine-tune's checkpoint with an invented digest, which the ledger's memorization
    record of that checkpoint measured otherwise). Each record is named with the other."""
    read = {run_id: found for run_id, record in records.items() if (found := _frozen_read(record))}
    return [
        (
            run_id,
            f"{where} is {digest[:12]}, but record {other!r} measured the weights of the same model file "
            f"(model.safetensors {file[:12]}) as {read[other][1][:12]}",
        )
        for run_id, (file, digest, where) in sorted(read.items())
        for other in sorted(read)
        if other != run_id and read[other][0] == file and read[other][1] != digest
    ]
