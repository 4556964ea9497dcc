"""Where a model came from, as its evidence record says it: the parent's record id and weights.

Every command that makes a model out of another (fine-tuning, SFT, DPO, distillation, LoRA and
its merge, laser, quantize, ES, export, import) names its parents in its record's `lineage`
(contracts.evidence.Lineage) with one call to `lineage`: for each model it read, the id of the
record that made it and the sha256 of the weights file it read. tools/integrity/lineage.py then checks the
chain: the parent's record is in the ledger, and it vouches for those very weights.

A parent is found from the directory it was read from:
- a run, a checkpoint, or a surgery's, merge's or import's output: its checkpoint's weights (the
  sha256 its manifest holds, verified when it was loaded), and the record in the run directory
  (RUN_DIR/metadata.json) that wrote the checkpoint;
- a Hugging Face directory: its weights file (or, when sharded, the digest of its shards), and
  the directory's own record when `stack export` wrote one. A model made elsewhere has no record:
  its `run` is None, and only its weights name it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, Lineage, ParentRef, canonical_sha256, sha256_file
from stack.artifacts import EXPORT_RECORD, weight_files
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig
from stack.train.trained import resolve_checkpoint

WEIGHTS_FILE = "model.safetensors"


def record_id(directory: Path) -> str | None:
    """The run id of the evidence record in `directory`, or None when it holds none (or an unreadable one)."""
    try:
        return str(json.loads((Path(directory) / EVIDENCE_FILE).read_text(encoding="utf-8"))["run"]["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weights_sha256(directory: Path) -> str:
    """The sha256 of a Hugging Face directory's weights: model.safetensors, or the digest of the
    sha256 of each shard its index names."""
    directory = Path(directory)
    if (directory / WEIGHTS_FILE).is_file():
        return sha256_file(directory / WEIGHTS_FILE)
    return canonical_sha256({p.name: sha256_file(p) for p in weight_files(directory)})


def parent(path: Path, role: str) -> ParentRef:
    """`path` (any directory a model is read from) as a parent of the given `role` (module docstring)."""
    path = Path(path)
    if (path / ckpt.CKPT_DIR).is_dir() or (path / ckpt.MANIFEST).is_file():
        checkpoint = resolve_checkpoint(path)
        sha = ckpt.read_manifest(checkpoint)["files"][WEIGHTS_FILE]["sha256"]
        owner = checkpoint.parent.parent if checkpoint.parent.name == ckpt.CKPT_DIR else checkpoint
        return ParentRef(role=role, run=record_id(owner), checkpoint_sha256=sha, path=str(path))
    return ParentRef(role=role, run=record_id(path), checkpoint_sha256=weights_sha256(path), path=str(path))


def lineage(parents: dict[str, Path | None], made: Path | None = None) -> Lineage:
    """The lineage of a record: role → the directory each parent was read from (None: no such
    parent), and `made`, the weights file the command wrote when its record's `checkpoint` names
    its input rather than its output (none when that file was not written)."""
    refs = [parent(path, role) for role, path in parents.items() if path is not None]
    sha = sha256_file(made) if made is not None and made.is_file() else None
    return Lineage(parents=refs, model_sha256=sha)


def run_lineage(init_from: Path | None, config: RunConfig) -> Lineage | None:
    """A training run's parents: the model it starts from (`--init-from`), and the frozen teacher
    (distill) or reference (dpo) it learns against; None for a model trained from scratch."""
    frozen = {
        "teacher": config.distill.teacher if config.distill is not None else None,
        "reference": config.dpo.reference if config.dpo is not None else None,
    }
    parents = {"init": init_from, **{role: Path(p) for role, p in frozen.items() if p is not None}}
    return lineage(parents) if any(path is not None for path in parents.values()) else None


def trained_on(checkpoint: Path) -> Path | None:
    """The DATA_DIR the model at `checkpoint` learned from (`recorded_data_dir`) where it is still
    there; None when none is recorded or the recorded one no longer exists."""
    recorded = recorded_data_dir(checkpoint)
    return recorded if recorded is not None and recorded.is_dir() else None


def recorded_data_dir(checkpoint: Path) -> Path | None:
    """The DATA_DIR the records say the model at `checkpoint` last learned from, there or not; None
    when none is recorded (a refusal tells the two apart): the first of `training_chain`'s."""
    return next(iter(training_chain(checkpoint).data_dirs), None)


@dataclass(frozen=True)
class TrainingChain:
    """The DATA_DIRs a model learned from, the last first, and `lost`: the model its chain goes on
    to that is not there any more (what that one learned from is unknown here), or None."""

    data_dirs: list[Path]
    lost: str | None = None


def training_chain(checkpoint: Path) -> TrainingChain:
    """Every DATA_DIR the records say the model at `checkpoint` learned from, there or not, the
    last first: a fine-tuned model learned from its run's data and from all its base learned.

    A training or ES run records its DATA_DIR (`metrics.data_dir` of RUN_DIR/metadata.json; a
    resume given the moved DATA_DIR's new place with --data records that place), and the model
    it started from as its lineage's `init` parent (`--init-from`, where the run resolved it:
    `run.places`), followed on where it is still there, else named `lost`. A surgery's, merge's
    or import's checkpoint learned nothing itself: its state names the source checkpoint it was
    made from (`imported_from.checkpoint`), or, for an import of a stack export, the export
    directory whose export.json names the checkpoint it was written from (`_exported_from`),
    followed on as far as the chain goes.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    current: Path | None = Path(checkpoint).resolve()
    while current is not None and current not in seen:
        seen.add(current)
        record = _run_record(current)
        data_dir = (record.get("metrics") or {}).get("data_dir") if record is not None else None
        if isinstance(data_dir, str):
            found.append(Path(data_dir))
            parent = _init_parent(record)
            if isinstance(parent, str):
                return TrainingChain(list(dict.fromkeys(found)), lost=parent)
            current = parent
            continue
        try:
            source = ckpt.read_state(current).get("imported_from") or {}
        except BadInput:
            break
        current = (
            Path(source["checkpoint"])
            if isinstance(source.get("checkpoint"), str)
            else _exported_from(source)
        )
    return TrainingChain(list(dict.fromkeys(found)))


def _run_record(checkpoint: Path) -> dict[str, Any] | None:
    """The evidence record of the run directory a checkpoint is in (None outside one, or unreadable)."""
    if checkpoint.parent.name != ckpt.CKPT_DIR:
        return None
    try:
        record = json.loads((checkpoint.parent.parent / EVIDENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _init_parent(record: dict[str, Any]) -> Path | str | None:
    """A checkpoint of the model a training run started from: its lineage's `init` parent, at the
    place the run resolved it to (`run.places`); the path as named where it is not there any
    more; None for a run from scratch. Only the records are read, never the weights: a chain of
    large models is followed in the time it takes to read a few small files."""
    parents = (record.get("lineage") or {}).get("parents") or []
    path = next((p.get("path") for p in parents if isinstance(p, dict) and p.get("role") == "init"), None)
    if not isinstance(path, str):
        return None
    places = (record.get("run") or {}).get("places") or {}
    placed = Path(places.get(path, path) if isinstance(places, dict) else path)
    if (placed / ckpt.STATE_FILE).is_file():  # a checkpoint named itself
        return placed.resolve()
    saved = ckpt.list_checkpoints(placed)
    return saved[-1].resolve() if saved else str(placed)


def _exported_from(source: dict[str, object]) -> Path | None:
    """The checkpoint a Hugging Face directory an import read was exported from: the one its
    export.json names, where the weights imported are the very ones that export wrote (the sha256
    the import recorded of its model.safetensors is the export's); None for any other directory."""
    files, path = source.get("files"), source.get("path")
    if not isinstance(files, dict) or not isinstance(path, str):
        return None
    try:
        export = json.loads((Path(path) / EXPORT_RECORD).read_text(encoding="utf-8"))
        written = export["files"][WEIGHTS_FILE]["sha256"]
        checkpoint = export["source_checkpoint"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = written == files.get(WEIGHTS_FILE) and isinstance(checkpoint, str)
    return Path(checkpoint) if same else None
