"""A training run from start to evidence: set-up, resume, the loop, and the metadata.json record.

The record is written when the run starts (status `running`), at every evaluation and
checkpoint, and at the end, always through the one atomic writer. A gate that fires leaves the
record `halted` with the gate named; a signal leaves it `interrupted` after a last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput, GateViolation
from contracts.evidence import (
    EVIDENCE_FILE,
    RUN_ID_PATTERN,
    SCHEMA_VERSION,
    Artifact,
    CheckpointRef,
    DataRef,
    Determinism,
    EvidenceRecord,
    FileHash,
    RunStatus,
    Waiver,
    artifact,
    file_record,
    ledger_slot,
    new_record,
    now,
    read_evidence,
    write_evidence,
)
from contracts.gates import contract_mode, weakest_mode
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.data.manifest import load_manifest
from stack.data.tokenizer import load_tokenizer
from stack.model.config import ModelConfig
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig, changed_keys, read_toml, resolve, save_config
from stack.train.loop import Trainer
from stack.train.metrics import METRICS_FILE
from stack.train.trained import resolve_checkpoint

CONFIG_FILE = "config.toml"
# The run kinds of spec/run_kinds.yaml: which gates a run must judge is declared there.
TRAIN_KIND = "train"
FINETUNE_KIND = "finetune"  # --init-from: the first loss is meant to be far below ln(vocab)


@dataclass
class TrainRequest:
    """What the command line asked for."""

    data_dir: Path | None
    out: Path | None
    resume: Path | None
    preset: str | None
    config_file: Path | None
    sets: list[str]
    waivers: list[Waiver]
    evidence_dir: Path | None
    argv: list[str]
    init_from: Path | None = None


def _check_run_dir_name(run_dir: Path) -> str:
    name = run_dir.resolve().name
    if re.fullmatch(RUN_ID_PATTERN, name) is None:
        raise BadInput(f"run directory name {name!r} must use letters, digits, '.', '_' and '-' only")
    return name


def _is_main() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def _prepare(request: TrainRequest) -> tuple[Path, Path, RunConfig, Path | None, list[str]]:
    """Validate the request: run dir, data dir, config, and the checkpoint to resume from.

    The checkpoint is only located here; it is loaded (and verified, GATE-CKPT-002) once the
    run's ledger is recording, so the verification's verdict lands in the run's record.
    """
    if request.resume is not None:
        run_dir = request.resume
        if not (run_dir / CONFIG_FILE).is_file():
            raise BadInput(
                f"{run_dir} is not a run directory (no {CONFIG_FILE}); pass the --out of an earlier run"
            )
        saved = read_toml(run_dir / CONFIG_FILE)
        record = read_evidence(run_dir / EVIDENCE_FILE)
        if record.schema_version < SCHEMA_VERSION:
            raise BadInput(
                f"{run_dir}'s record has schema {record.schema_version}, older than the judges "
                f"(schema {SCHEMA_VERSION}): its verdicts cannot be re-judged; start a new run from it "
                f"with --init-from {run_dir}"
            )
        data_dir = request.data_dir or Path(str(record.metrics.get("data_dir", "")))
        path, notes = ckpt.latest_valid(run_dir)
        for note in notes:
            print(f"stack train: {note}", file=sys.stderr)
        if path is None:
            raise BadInput(f"{run_dir} has no valid checkpoint to resume from")
        if notes:
            print(f"stack train: resuming from {path.name} instead", file=sys.stderr)
        tokenizer = load_tokenizer(data_dir)
        config = resolve(None, request.config_file, request.sets, vocab=tokenizer.vocab_size, base=saved)
        changes = changed_keys(saved, config.as_dict())
        return run_dir, data_dir, config, path, changes
    if request.out is None or request.data_dir is None:
        raise BadInput("stack train needs --data DATA_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    run_dir = request.out
    # Only rank 0 judges: the other ranks of a data-parallel run start after it may have begun writing.
    if _is_main() and run_dir.exists() and any(run_dir.iterdir()):
        raise BadInput(
            f"{run_dir} already exists and is not empty; choose a new --out or continue it with --resume"
        )
    tokenizer = load_tokenizer(request.data_dir)
    config = resolve(request.preset, request.config_file, request.sets, vocab=tokenizer.vocab_size)
    if request.init_from is not None:
        config = _with_model_of(config, request.init_from)
    return run_dir, request.data_dir, config, None, []


def _with_model_of(config: RunConfig, init_from: Path) -> RunConfig:
    """The run's config with the model shape of the checkpoint it starts from (attention path kept)."""
    source = ckpt.load_checkpoint(resolve_checkpoint(init_from))
    model = {**source.state["config"]["model"], "attention": config.model.attention}
    if model["vocab"] != config.model.vocab:
        raise BadInput(
            f"--init-from {init_from} has vocab {model['vocab']} but the data's tokenizer has "
            f"{config.model.vocab}; prepare the data with the checkpoint's tokenizer"
        )
    return config.model_copy(update={"model": ModelConfig.model_validate(model)})


class RunRecord:
    """The run's evidence record and how it is refreshed from the trainer."""

    def __init__(
        self, run_dir: Path, record: EvidenceRecord, ledger: Ledger, evidence_dir: Path | None
    ) -> None:
        self.main = _is_main()  # only rank 0 writes evidence
        self.run_dir = run_dir
        self.record = record
        self.ledger = ledger
        self.evidence_dir = evidence_dir

    def refresh(
        self, trainer: Trainer | None, status: RunStatus | None = None, reason: str | None = None
    ) -> None:
        """Bring the record up to date with the trainer and write it (rank 0 only)."""
        if not self.main:
            return
        record = self.record
        if status is not None:
            record.run.status = status
            if status is not RunStatus.RUNNING:
                record.run.finished = now()
        if reason is not None:
            record.run.stop_reason = reason
        if trainer is not None:
            record.determinism.flags["world_size"] = trainer.world.size
            record.determinism.flags["backend"] = trainer.world.backend
            state = trainer.state
            adequacy = trainer.adequacy
            record.metrics.update(
                {
                    "step": state.step,
                    "tokens_seen": state.tokens_seen,
                    "parameters": trainer.model.num_params(),
                    "last_heldout_loss": state.last_heldout,
                    "best_heldout_loss": state.best_heldout,
                    "best_checkpoint": state.best_checkpoint,
                    "planned_tokens": trainer.config.train.steps * trainer.tokens_per_step,
                    "unique_train_tokens": trainer.reader.unique_tokens,
                    "repeats": adequacy.repeats,
                    "tokens_per_parameter": adequacy.tokens_per_parameter,
                    "coherence_scores": [score for _, score in state.monitor.history][-20:],
                    "loss_spikes": len(state.spikes.spikes),
                    "overfit_at_step": state.overfit.detected_at_step,
                }
            )
        record.gates = self.ledger.gate_results(expected=load_spec().required_gates(record.run.kind))
        record.artifacts = self._artifacts()
        record.checkpoint = self._checkpoint_ref()
        write_evidence(self.run_dir, record)

    def _artifacts(self) -> list[Artifact]:
        files = [self.run_dir / CONFIG_FILE, self.run_dir / METRICS_FILE]
        latest = ckpt.list_checkpoints(self.run_dir)
        if latest:
            files += [latest[-1] / name for name in (*ckpt.FILES, ckpt.MANIFEST)]
        return [artifact(f, self.run_dir) for f in files if f.is_file()]

    def _checkpoint_ref(self) -> CheckpointRef | None:
        """The newest checkpoint by content, from its manifest (kept when the record is filed)."""
        latest = ckpt.list_checkpoints(self.run_dir)
        if not latest:
            return None
        manifest = ckpt.read_manifest(latest[-1])
        files = {name: FileHash(**entry) for name, entry in manifest["files"].items()}
        return CheckpointRef(name=latest[-1].name, step=manifest["step"], files=files)

    def file_in_ledger(self) -> Path | None:
        """File the record with copies of config and metrics as EVIDENCE_DIR/<run-id>/ (no weights)."""
        if self.evidence_dir is None or not self.main:
            return None
        files = (self.run_dir / CONFIG_FILE, self.run_dir / METRICS_FILE)
        return file_record(self.evidence_dir, self.record, files)


def train(request: TrainRequest, progress_factory: Any) -> int:
    """Run (or resume) one training run; returns the exit code."""
    run_dir, data_dir, config, checkpoint_path, changes = _prepare(request)
    run_id = _check_run_dir_name(run_dir)
    if request.evidence_dir is not None and _is_main():
        ledger_slot(request.evidence_dir, run_id)  # refuse a clash now, not after hours of training
    manifest = load_manifest(data_dir)
    tokenizer = load_tokenizer(data_dir)
    resumed = checkpoint_path is not None
    if resumed:
        record = read_evidence(run_dir / EVIDENCE_FILE)
        record.waivers = list({w.gate: w for w in [*record.waivers, *request.waivers]}.values())
        ledger = Ledger(record.waivers)
        # Verdicts of the earlier part are re-judged under this spec, never re-stamped as they were.
        rejudged = ledger.carry(record.gates)
        record.run.status = RunStatus.RUNNING
        record.run.finished = None
        record.contract_mode = weakest_mode(record.contract_mode, contract_mode().value)
        resumes = list(record.metrics.get("resumes", []))  # type: ignore[arg-type]
        from_step = ckpt.read_manifest(checkpoint_path)["step"]
        resumes.append({"from_step": from_step, "argv": request.argv, "changed": changes})
        if rejudged:
            resumes[-1]["rejudged"] = rejudged
        record.metrics["resumes"] = resumes
    else:
        device = "cuda" if config.train.device != "cpu" and torch.cuda.is_available() else "cpu"
        kind = FINETUNE_KIND if request.init_from is not None else TRAIN_KIND
        record = new_record(kind, run_id, request.argv, device, torch.version.cuda, contract_mode().value)
        record.waivers = request.waivers
        ledger = Ledger(request.waivers)
        record.metrics["data_dir"] = str(Path(data_dir).resolve())
    record.config = config.as_dict()
    record.config_sha256 = config.sha256
    record.data = DataRef(manifest_sha256=manifest.sha256, tokenizer_sha256=tokenizer.sha256)
    record.determinism = Determinism(
        seeds={"train": config.train.seed},
        flags={
            "precision": config.train.precision,
            "compile": config.train.compile,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        },
    )
    record.spec.version = load_spec().version
    record.spec.sha256 = load_spec().sha256
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)
        (run_dir / METRICS_FILE).touch()
    evidence = RunRecord(run_dir, record, ledger, request.evidence_dir)
    trainer: Trainer | None = None
    with recording(ledger):
        try:
            evidence.refresh(None, RunStatus.RUNNING)
            # Rank 0 speaks for a data-parallel run; the other ranks train quietly.
            shown = progress_factory(config.train.steps, config.train.log_every)
            quiet = contextlib.nullcontext(lambda _step, _line: None)
            with shown if _is_main() else quiet as progress:
                trainer = Trainer(
                    config, data_dir, run_dir, tokenizer, lambda _e, t: evidence.refresh(t), progress
                )
                if checkpoint_path is not None:
                    checkpoint = ckpt.load_checkpoint(checkpoint_path)  # GATE-CKPT-002, recorded
                    trainer.restore(checkpoint)
                elif request.init_from is not None:
                    source = ckpt.load_checkpoint(resolve_checkpoint(request.init_from))
                    trainer.start_from(source)
                    record.metrics["init_from"] = {"path": str(source.path), "step": source.step}
                status = trainer.run(resumed=resumed)
                if _is_main():  # the last checkpoint reads back as written (GATE-CKPT-002)
                    ckpt.load_checkpoint(ckpt.step_dir(run_dir, trainer.state.step))
        except GateViolation as exc:
            evidence.refresh(trainer, RunStatus.HALTED, str(exc))
            evidence.file_in_ledger()
            raise
        except BadInput as exc:
            evidence.refresh(trainer, RunStatus.FAILED, str(exc))
            raise
        except Exception as exc:
            evidence.refresh(trainer, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
    final = RunStatus.INTERRUPTED if status == "interrupted" else RunStatus.COMPLETED
    evidence.refresh(trainer, final, trainer.state.stop_reason)
    filed = evidence.file_in_ledger()
    if not _is_main():
        return 0
    state = trainer.state
    print(f"stack train: {final.value} at step {state.step} ({state.stop_reason}); run in {run_dir}")
    if filed is not None:
        print(f"stack train: evidence filed at {filed}")
    return 0
