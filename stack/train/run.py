"""A training run from start to evidence: set-up, resume, the loop, and the metadata.json record.

The run directory lives as every run-like directory does (stack.outputs.rundir): checked before
any work, held under RUN_DIR/.lock from before set-up to the end of the run (a second writer is
refused naming the holder's pid), and written only once set-up has passed (arguments, paths,
data, config, a resume's compatibility with its checkpoint, the start-up gates): a refusal
leaves a resumed run byte for byte as it was, and a new one as if never asked for. A gate that fires
during set-up still leaves evidence: with --evidence-dir its halted record is filed in the
ledger under an id of its own (`<run-id>-refused-<time>`), so the same command can be run again.

The record is written when the run starts (status `running`), at every evaluation and
checkpoint, and at the end, always through the one atomic writer. A gate that fires leaves the
record `halted` with the gate named; a signal leaves it `interrupted` after a last checkpoint;
the end of a corpus read with data.wrap=false leaves it `exhausted` after a last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from contracts.derive import Artifacts, Inputs, derive
from contracts.derive.training import COHERENCE_SHOWN, stated_determinism
from contracts.errors import BadInput, GateViolation, Interrupted
from contracts.evidence import (
    EVIDENCE_FILE,
    REFUSED,
    RESUMES,
    SCHEMA_VERSION,
    Artifact,
    CheckpointRef,
    DataRef,
    Determinism,
    EvidenceRecord,
    FileHash,
    Lineage,
    ParentRef,
    RunStatus,
    Verdict,
    Waiver,
    artifact,
    leg_of,
    new_record,
    now,
    places_named,
    read_evidence,
    spec_ref,
    write_evidence,
)
from contracts.evidence import run_id as evidence_run_id
from contracts.gates import contract_mode, weakest_mode
from contracts.ledger import Ledger, recording
from contracts.model_shape import TRAINING_MODEL_KEYS
from contracts.schedule import lr_at
from contracts.spec import load_spec
from stack.artifacts import RUN_CONFIG, require
from stack.data.manifest import load_manifest
from stack.data.tokenizer import Tokenizer, load_tokenizer
from stack.model.config import ModelConfig
from stack.model.targets import summary_lines
from stack.outputs import ledger, rundir
from stack.train import checkpoint as ckpt
from stack.train import determinism, tensorboard
from stack.train.config import SECTIONS, RunConfig, changed_keys, read_toml, resolve, save_config
from stack.train.fine_tune_length import no_length, steps_given
from stack.train.lineage import WEIGHTS_FILE, run_lineage
from stack.train.loop import COMMAND, Trainer, pick_device, speaker
from stack.train.lora_setup import finish as finish_lora
from stack.train.memory import check_fits
from stack.train.metrics import METRICS_FILE, ROLLED_BACK_FILE, read_lines, split_at
from stack.train.tasks import objective_for
from stack.train.tokenizer_match import check_data_tokenizer
from stack.train.trained import resolve_checkpoint

CONFIG_FILE = RUN_CONFIG
# The record's repeatability claim (determinism.flags), the verdict of its earlier parts, and the
# gate whose replay measurement backs it.
REPEATABLE = "repeatable"
REPEATABLE_BEFORE = "repeatable_before"
REPLAY_GATE = "GATE-CKPT-003"
# The run kinds of spec/run_kinds.yaml: which gates a run must judge is declared there.
TRAIN_KIND = "train"
FINETUNE_KIND = "finetune"  # --init-from: the first loss is meant to be far below ln(vocab)
SFT_KIND = "sft"  # --init-from with train.task=sft: finetune's gates and the SFT gates
DISTILL_KIND = "distill"  # train.task=distill, from --init-from or a fresh model: the KD gates too
DPO_KIND = "dpo"  # train.task=dpo, from --init-from: finetune's gates and the DPO gates
# The writer of a run directory: continued in place with --resume, under its lock (stack.outputs.rundir).
WRITER = rundir.Writer(
    COMMAND, resumable=True, continues=lambda out: ckpt.continuable(out, "training-run", True)
)
# The tasks whose runs a command of the same name writes and resumes (`stack sft`, ...).
TASK_COMMANDS = ("sft", "dpo", "distill")
# The commands whose loop options (stack.cli.tune_options) set train.steps by --steps, not --set.
STEPS_OPTION_COMMANDS = ("dpo", "distill")
# Keys a resume cannot change besides the model's (see `_shape_changes`).
FIXED_ON_RESUME = (
    "train.batch_size",
    "train.grad_accum",
    "train.seq_len",
    "train.seed",
    "train.task",
    "eval.batches",
)
# The record's status for each way `Trainer.run` returns.
FINAL_STATUS = {
    "completed": RunStatus.COMPLETED,
    "interrupted": RunStatus.INTERRUPTED,
    "exhausted": RunStatus.EXHAUSTED,
}


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

    @property
    def command(self) -> str:
        """The `stack` command typed (argv is `["stack", COMMAND, ...]`: the top-level parser takes
        no option before it but --version): the one place a refusal's advice reads it from."""
        return self.argv[1] if len(self.argv) > 1 else "train"


@dataclass
class Plan:
    """What set-up decided, before anything is written: where, with what, from which checkpoint."""

    run_dir: Path
    data_dir: Path
    config: RunConfig
    tokenizer: Tokenizer
    record: EvidenceRecord  # a new record, or the resumed run's, brought up to date in memory
    ledger: Ledger
    checkpoint: Path | None = None  # the checkpoint a resume continues from


def _is_main() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def _world_size() -> int:
    """Processes of this launch, as torchrun announces them (a plain process is a world of one)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    if not raw.isdigit():
        raise BadInput(f"WORLD_SIZE={raw!r} is not an integer (set by torchrun)")
    return int(raw)


def _run_dir_of(request: TrainRequest) -> Path:
    """The run directory the request writes, checked before anything is read or written."""
    if request.resume is not None:
        rundir.check(request.resume, WRITER, resume=True, option="--resume")
        return request.resume
    if request.out is None or request.data_dir is None:
        raise BadInput("stack train needs --data DATA_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    rundir.check(request.out, _writer_for(request))
    return request.out


def task_of(run_dir: Path) -> str | None:
    """The train.task of the run in `run_dir` as its config.toml states it (None: pretraining, or no
    run there): which command resumes it."""
    config = Path(run_dir) / CONFIG_FILE
    return read_toml(config).get("train", {}).get("task") if config.is_file() else None


def command_of(task: str | None) -> str:
    """The command that writes (and resumes) a run of `task`: `stack train` for the others."""
    return f"stack {task}" if task in TASK_COMMANDS else "stack train"


def _writer_for(request: TrainRequest) -> rundir.Writer:
    """WRITER as the command typed sees it: `stack sft/dpo/distill --resume` continues only a run of
    its own task (stack.cli.tune_options.require_task), so a refusal offers --resume only for one."""
    if request.command not in TASK_COMMANDS:
        return WRITER
    takes = WRITER.continues or (lambda _out: False)
    return replace(WRITER, continues=lambda out: takes(out) and task_of(out) == request.command)


def _stamp(record: EvidenceRecord, config: RunConfig, data_dir: Path, tokenizer: Tokenizer) -> None:
    """What the record says about this part of the run: config, data, determinism, spec.

    The determinism switches are not stamped here: the record states the ones in force when the
    first step ran (`RunRecord.refresh`), not what set-up expected them to be. A resumed record
    keeps its earlier parts' repeatability verdict, which this part can only keep or lose.
    """
    record.config = config.as_dict()
    record.config_sha256 = config.sha256
    manifest = load_manifest(data_dir)
    record.data = DataRef(manifest_sha256=manifest.sha256, tokenizer_sha256=tokenizer.sha256)
    earlier = record.determinism.flags  # empty for a new record
    seeds, flags = stated_determinism(record.config)
    if earlier:
        flags[REPEATABLE_BEFORE] = earlier.get(REPEATABLE)
    record.determinism = Determinism(seeds=seeds, flags=flags)
    record.spec = spec_ref(load_spec())


def _combined(earlier: bool | None, now: bool | None) -> bool | None:
    """Whether a run is repeatable from the verdicts of its parts: any part not (False) makes it not;
    every part checked and held (True) makes it so; otherwise it is unchecked (None)."""
    if earlier is False or now is False:
        return False
    return True if earlier and now else None


def _new_plan(request: TrainRequest, run_dir: Path, run_id: str) -> Plan:
    """A new run: its data, resolved config and a fresh record (nothing written yet)."""
    assert request.data_dir is not None
    data_dir = request.data_dir
    tokenizer = load_tokenizer(data_dir)
    source_model = None
    if request.init_from is not None:  # the model is the checkpoint's, so no preset has to name one
        source_model = ckpt.load_checkpoint(resolve_checkpoint(request.init_from)).state["config"]["model"]
    # Its vocab is left to GATE-DATA-007 (judged in `_set_up`), not to resolve's check against the data.
    base = (
        None if source_model is None else {"model": {k: v for k, v in source_model.items() if k != "vocab"}}
    )
    # A run started from a model that nothing gives a length is refused with what one pass over its
    # data costs, once its other settings resolve (with a placeholder length, which goes no further)
    # and its data is of the task's kind.
    lengthless = base is not None and not steps_given(request.preset, request.config_file, request.sets)
    sets = [*request.sets, "train.steps=1"] if lengthless else request.sets
    config = resolve(request.preset, request.config_file, sets, vocab=tokenizer.vocab_size, base=base)
    check_task_data(config, data_dir, request.command)
    if lengthless:
        raise no_length(config, data_dir, _world_size())
    _check_lora_start(config, request.init_from is not None, request.command)
    if source_model is not None:
        assert request.init_from is not None
        asked = _asked_model_keys(request)
        config = _with_model_of(config, source_model, asked, _started_from(request))
    check_fits(config, pick_device(config.train.device))  # before the model is built
    device = "cuda" if config.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    kind = _kind_of(config, request.init_from)
    record = new_record(kind, run_id, request.argv, device, torch.version.cuda, contract_mode().value)
    record.waivers = request.waivers
    record.metrics["data_dir"] = str(Path(data_dir).resolve())
    record.lineage = run_lineage(request.init_from, config)
    _stamp(record, config, data_dir, tokenizer)
    return Plan(run_dir, data_dir, config, tokenizer, record, Ledger(request.waivers))


def check_task_data(config: RunConfig, data_dir: Path, command: str) -> None:
    """Refuse a DATA_DIR of another kind than the task's objective reads (stack.artifacts), in words
    that name both: chat examples given to pretraining say `stack sft`, not a shape mismatch."""
    objective = objective_for(config.train.task)
    require(data_dir, objective.data, f"`stack {command}` (train.task {objective.name})")


def _check_lora_start(config: RunConfig, started: bool, command: str) -> None:
    """Refuse `[lora]` on a run that starts from no trained model (`started`: --init-from or
    --student, or a resume of a run that had one): the adapters train on a frozen base, and a fresh
    base is random weights, so the run would learn next to nothing and say nothing (loss 5.52 -> 5.48
    in ten smoke steps where the same run without [lora] reaches 4.74), as train.task=sft without
    --init-from would, which is refused too. The fix names the option the user's command has."""
    if config.lora is not None and not started:
        option = "--student RUN|CKPT" if command == "distill" else "--init-from RUN_DIR"
        raise BadInput(
            "[lora] (a lora.* key) trains adapters on a frozen base, and this run starts from a randomly "
            f"initialised model: pass {option} (a trained run, or a model imported with "
            "`stack import-hf`), or drop the lora.* keys to train every weight"
        )


def _kind_of(config: RunConfig, init_from: Path | None) -> str:
    """The run kind of spec/run_kinds.yaml this run's record is judged as.

    Supervised fine-tuning starts from a trained model: its loss is meant to start far below
    ln(vocab), and without --init-from there is no model whose behaviour it would tune.
    """
    if config.train.task == SFT_KIND:
        if init_from is None:
            raise BadInput(
                "train.task=sft fine-tunes a trained model: pass --init-from RUN_DIR (a run, or a model "
                "imported with `stack import-hf`)"
            )
        return SFT_KIND
    if config.train.task == DISTILL_KIND:
        return DISTILL_KIND
    if config.train.task == DPO_KIND:
        if init_from is None:
            raise BadInput(
                "train.task=dpo tunes a trained policy: pass --init-from RUN_DIR|CKPT (`stack dpo` does)"
            )
        return DPO_KIND
    return FINETUNE_KIND if init_from is not None else TRAIN_KIND


def _resume_plan(request: TrainRequest, run_dir: Path) -> Plan:
    """A resume: the checkpoint to continue from, and a config checked against it.

    Everything that cannot change under a checkpoint is refused here, before a byte of the run
    directory is written: a refused resume leaves config.toml and metadata.json as they were.
    """
    saved = read_toml(run_dir / CONFIG_FILE)
    record = read_evidence(run_dir / EVIDENCE_FILE)
    if record.schema_version < SCHEMA_VERSION:
        raise BadInput(
            f"{run_dir}'s record has schema {record.schema_version}, older than the judges "
            f"(schema {SCHEMA_VERSION}): its verdicts cannot be re-judged; start a new run from it "
            f"with --init-from {run_dir}"
        )
    data_dir = request.data_dir or Path(str(record.metrics.get("data_dir", "")))
    if request.data_dir is None and not data_dir.exists():
        raise BadInput(
            f"{run_dir} was trained on DATA_DIR {data_dir}, which is not there any more; if it moved, "
            "give its new place with --data DATA_DIR (the same prepared data: its manifest is checked)"
        )
    record.waivers = list({w.gate: w for w in [*record.waivers, *request.waivers]}.values())
    ledger = Ledger(record.waivers)
    # Verdicts of the earlier part are re-judged under this spec, never re-stamped as they were.
    rejudged = ledger.carry(tensorboard.unmeasured(record.gates))
    with recording(ledger):  # the checkpoint chosen is judged into the run's record (GATE-CKPT-002)
        path, notes = ckpt.resume_point(run_dir)
    adopted = ckpt.adoption_note(run_dir, path)  # the log and the disk agree before anything else
    notes += [adopted] if adopted is not None else []
    for note in notes:
        print(f"{speaker()}: {note}", file=sys.stderr)
    state = ckpt.read_state(path, ckpt.ResumableState)
    _refuse_other_data(run_dir, state, data_dir, str(record.metrics.get("data_dir", "")))
    # The same prepared data (its manifest checked): where it lies now is what eval, memorization,
    # sft --tokenizer and the next resume read (a moved DATA_DIR's new place is checked and used, and
    # must not then be forgotten).
    record.metrics["data_dir"] = str(Path(data_dir).resolve())
    tokenizer = load_tokenizer(data_dir)
    _refuse_changes(run_dir, path, _data_changes(state, data_dir, tokenizer))
    config = resolve(None, request.config_file, request.sets, vocab=tokenizer.vocab_size, base=saved)
    check_task_data(config, data_dir, request.command)
    _check_lora_start(config, "init_from" in record.metrics, request.command)
    _refuse_changes(run_dir, path, _shape_changes(state, config))
    _nothing_left(run_dir, record, state["step"], config.train.steps, request.command)
    check_fits(config, pick_device(config.train.device))
    record.run.status = RunStatus.RUNNING
    record.run.finished = None
    record.contract_mode = weakest_mode(record.contract_mode, contract_mode().value)
    resumes = list(record.metrics.get("resumes", []))  # type: ignore[arg-type]
    changes = changed_keys(saved, config.as_dict())
    resumes.append(
        {
            "from_step": state["step"],
            "argv": request.argv,
            "places": places_named(request.argv),
            "changed": changes,
        }
    )
    if rejudged:
        resumes[-1]["rejudged"] = rejudged
    record.metrics["resumes"] = resumes
    _stamp(record, config, data_dir, tokenizer)
    return Plan(run_dir, data_dir, config, tokenizer, record, ledger, path)


def _nothing_left(run_dir: Path, record: EvidenceRecord, step: int, steps: int, command: str) -> None:
    """Stop a resume with no step left to take, before anything is written: it ran no step and
    left a record the integrity check called false (an early-stopping verdict at no step; with
    train.steps below the run's step, a log ending past it). A completed run resumed as it was is
    told so and left alone (`rundir.NothingLeft`); any other, from a checkpoint at or past train.steps,
    is refused. Both name the way to train on, in `command`'s words."""
    if steps > step:
        return
    option = "--steps N" if command in STEPS_OPTION_COMMANDS else "--set train.steps=N"
    to_train_on = f"to train on, raise train.steps ({option} with N above {step})"
    if steps == step and record.run.status is RunStatus.COMPLETED:
        raise rundir.NothingLeft(
            f"{run_dir} is complete at step {step} (train.steps={steps}): nothing to resume; {to_train_on}"
        )
    raise BadInput(
        f"cannot resume {run_dir}: it has reached step {step} and train.steps is {steps}, so no step is "
        f"left to train; {to_train_on}"
    )


def _refuse_other_data(run_dir: Path, state: dict[str, Any], data_dir: Path, recorded: str) -> None:
    """Refuse a resume whose DATA_DIR holds other prepared data than the checkpoint's batch stream
    was read from (its manifest's sha256), saying which way that came about: `--data` named another
    DATA_DIR, or the run's own (`recorded`) was prepared again since (`stack prepare --out DATA_DIR
    --force`). The generic refusal of a changed key would blame --set/--config keys no one gave."""
    old, new = state["reader"].get("manifest_sha256"), load_manifest(data_dir).sha256
    if old == new:
        return
    shas = rundir.change("data manifest", old, new)
    if str(Path(data_dir).resolve()) != recorded:
        raise BadInput(
            f"cannot resume {run_dir}: --data {data_dir} holds other prepared data than the run started "
            f"on, a changed {shas}; give the data it started on (prepared into {recorded}), or start a "
            "new run with --out"
        )
    raise BadInput(
        f"cannot resume {run_dir}: its DATA_DIR {data_dir} was prepared again since the run started, "
        f"which changed its {shas}; a resume needs the data it started on: prepare that data into "
        "another DATA_DIR and pass it with --data, or start a new run with --out"
    )


def _data_changes(state: dict[str, Any], data_dir: Path, tokenizer: Tokenizer) -> list[str]:
    """What the checkpoint's batch stream was made from and by, against this resume's."""
    reader = state["reader"]
    now = {
        "tokenizer": (state["tokenizer"]["sha256"], tokenizer.sha256),
        "world_size": (reader.get("world_size"), _world_size()),
    }
    return [rundir.change(key, old, new) for key, (old, new) in now.items() if old != new]


def _shape_changes(state: dict[str, Any], config: RunConfig) -> list[str]:
    """Keys whose new value the checkpoint cannot continue with.

    Every model key but the attention path (the weights have the old shape and meaning), the
    batch size and the accumulation (the reader's position counts batches of them, and a step's
    tokens are the unit the run's plan, epochs and corpus adequacy are judged in), the seed (the
    batch order is drawn from it), the held-out batches (every evaluation scores one set, whose
    losses early stopping compares) and a change to or from fp16 (the checkpoint holds a loss
    scaler only for fp16).
    """
    before, after = state["config"], config.as_dict()
    fixed = [
        key
        for key in changed_keys(before, after)
        if (key.startswith("model.") and key != "model.attention")
        # the adapters' shapes, scale and dropout draws are in the checkpoint (their decay is not)
        or (key.startswith("lora.") and key != "lora.weight_decay")
        or key.startswith(("distill.", "dpo."))  # the frozen model and loss the optimizer's state follows
        or key in FIXED_ON_RESUME
    ]
    old, new = before.get("train", {}).get("precision"), config.train.precision
    if (old == "fp16") != (new == "fp16"):
        fixed.append("train.precision")
    return [rundir.change(key, saved_value(before, key), saved_value(after, key)) for key in fixed]


def saved_value(config: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in a saved configuration (config.toml as a dict): where absent, the
    default the key held, since a saved configuration leaves out an option at its default
    (stack.model.config's `_option`) and TOML has no null; None for a key of an optional section
    (lora, distill, dpo), or one without a default. A refusal names an old value by it, and the
    integrity check holds a command line's `--set` to it (tools/integrity/settings/argv_config.py)."""
    section, name = key.split(".", 1)
    values = config.get(section)
    if isinstance(values, dict) and name in values:
        return values[name]
    schema = {"model": ModelConfig, **SECTIONS}.get(section)
    field = schema.model_fields.get(name) if schema is not None else None
    if field is None or field.is_required():
        return None
    return field.get_default(call_default_factory=True)


def _refuse_changes(run_dir: Path, checkpoint: Path, changes: list[str]) -> None:
    """One line naming every key that cannot change, with the ways forward."""
    ways = (
        "drop those --set/--config keys, use the run's own --data and --nproc, or start a new run with --out"
    )
    rundir.refuse_changes(run_dir, checkpoint, changes, ways)


def _asked_model_keys(request: TrainRequest) -> dict[str, Any]:
    """The model settings the command line asked for itself: its --config file's [model] table and
    its --set model.* keys (a preset's model is a fresh model's, so a started run ignores it)."""
    from stack.train.config import parse_sets

    asked: dict[str, Any] = {}
    if request.config_file is not None:
        table = read_toml(request.config_file).get("model", {})
        asked.update(table if isinstance(table, dict) else {})
    asked.update(parse_sets(request.sets).get("model", {}))
    return asked


def _started_from(request: TrainRequest) -> tuple[str, bool]:
    """How the command line named the model the run starts from, and whether the command also
    trains a fresh model from a --preset (`stack train` and `stack distill` do; sft and dpo don't)."""
    if "--student" in request.argv:
        return f"--student {request.init_from}", True
    if "--init-from" in request.argv:
        return f"--init-from {request.init_from}", request.command == "train"
    return f"the policy {request.init_from}", False  # stack dpo's RUN_DIR|CKPT


def _with_model_of(
    config: RunConfig, source_model: dict[str, Any], asked: dict[str, Any], started: tuple[str, bool]
) -> RunConfig:
    """The run's config with the model of the checkpoint it starts from, and the TRAINING_MODEL_KEYS
    the command line set over it; a setting that would change the architecture is refused naming
    its key, never dropped in silence (--set model.moe_experts=4 would train a dense model).

    Whether the data suits that model is GATE-DATA-007's to say (`check_data_tokenizer`), judged
    in `_set_up` so that its verdict is in the run's ledger.
    """
    source = ModelConfig.from_dict(source_model)
    changed = []
    for key, value in asked.items():
        if key in TRAINING_MODEL_KEYS or key not in ModelConfig.model_fields:
            continue  # an unknown key was refused by resolve already
        if value != getattr(source, key):
            changed.append(f"model.{key} ({getattr(source, key)!r} -> {value!r})")
    if changed:
        named, fresh = started
        them = "that setting" if len(changed) == 1 else "those settings"
        takes = ", ".join(f"model.{k}" for k in TRAINING_MODEL_KEYS)
        preset = ", or train a new model from a --preset with the architecture you want" if fresh else ""
        raise BadInput(
            f"{named} keeps the architecture of the model it starts from, and {', '.join(changed)} "
            f"would change it; drop {them} (a started model takes only {takes}){preset}"
        )
    knobs = {key: asked[key] for key in TRAINING_MODEL_KEYS if key in asked and key != "attention"}
    model = {**source_model, "attention": config.model.attention, **knobs}
    return config.model_copy(update={"model": ModelConfig.from_dict(model)})


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
            self._determinism(trainer)
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
                    # what GATE-DATA-004 judged at set-up (a phase that reweights the reader later
                    # changes the reader's count, not the judged one)
                    "unique_train_tokens": adequacy.unique_train_tokens,
                    "repeats": adequacy.repeats,
                    "tokens_per_parameter": adequacy.tokens_per_parameter,
                    "coherence_scores": [score for _, score in state.monitor.history][-COHERENCE_SHOWN:],
                    "loss_spikes": len(state.spikes.spikes),
                    "overfit_at_step": state.overfit.detected_at_step,
                }
            )
            if trainer.device.type == "cuda":  # what the presets' memory estimate is checked against
                record.metrics["peak_memory_bytes"] = torch.cuda.max_memory_allocated(trainer.device)
            if trainer.policy.switches:  # the curriculum's switches, as GATE-DATA-009 judged them
                record.metrics["phase_switches"] = trainer.policy.switches
        record.gates = self.ledger.gate_results(expected=load_spec().required_gates(record.run.kind))
        if trainer is not None and trainer.board is not None:
            trainer.board.gates(record.gates)
        record.artifacts = self._artifacts()
        record.checkpoint = self._checkpoint_ref()
        if status is not None and status is not RunStatus.RUNNING:
            self._summarise()
        write_evidence(self.run_dir, record)

    def _summarise(self) -> None:
        summarise(self.record, self.run_dir)

    def _determinism(self, trainer: Trainer) -> None:
        """The switches in force at the first step, the non-deterministic ops PyTorch reported, the
        replay's price, and whether the run is repeatable: True only when its replay held bit for
        bit (tools/integrity/repeatability.py refuses the claim without it), False when train.deterministic
        is off or a replay failed, None when nothing checked it."""
        flags, record = self.record.determinism.flags, self.record
        if trainer.switches is not None:
            flags.update(trainer.switches.as_flags())
        flags["non_deterministic_ops"] = trainer.alerts.as_flags()
        replay = trainer.repeatability
        if replay is not None:
            record.metrics["repeatability"] = replay
        judged = self.ledger.results.get(REPLAY_GATE)
        if not trainer.config.train.deterministic:
            now: bool | None = False
        elif replay is None or judged is None:
            now = None
        else:
            now = replay["bit_for_bit"] and judged.verdict is Verdict.PASS
        flags[REPEATABLE] = _combined(flags.get(REPEATABLE_BEFORE, True), now)

    def _artifacts(self) -> list[Artifact]:
        files = [self.run_dir / CONFIG_FILE, self.run_dir / METRICS_FILE]
        latest = ckpt.latest_manifest(self.run_dir)
        if latest is not None:
            files += [latest[0] / name for name in (*ckpt.FILES, ckpt.MANIFEST)]
        return [artifact(f, self.run_dir) for f in files if f.is_file()]

    def _checkpoint_ref(self) -> CheckpointRef | None:
        """The newest checkpoint by content, from its manifest (kept when the record is filed)."""
        latest = ckpt.latest_manifest(self.run_dir)
        if latest is None:
            return None
        path, manifest = latest
        files = {name: FileHash(**entry) for name, entry in manifest["files"].items()}
        return CheckpointRef(name=path.name, step=manifest["step"], files=files)

    def file_in_ledger(self) -> Path | None:
        """File the record with copies of config and metrics as EVIDENCE_DIR/<run-id>/ (no weights)."""
        if self.evidence_dir is None or not self.main:
            return None
        files = (self.run_dir / CONFIG_FILE, self.run_dir / METRICS_FILE)
        return ledger.file(self.evidence_dir, self.record, files)


def train(request: TrainRequest, progress_factory: Any) -> int:
    """Run (or resume) one training run; returns the exit code.

    Order: every argument is checked (paths included), the run directory's lock is taken, set-up
    runs (config, data, the start-up gates) writing nothing, and only then is the run directory
    written (stack.outputs.rundir's commit).
    """
    run_dir = _run_dir_of(request)
    run_id = rundir.run_id_of(run_dir)
    resume = request.resume is not None
    leg = None
    if request.evidence_dir is not None and _is_main():  # refuse a clash now, not after hours of training
        if resume:  # a resumed leg is filed under an id of its own (stack.outputs.ledger)
            started = read_evidence(run_dir / EVIDENCE_FILE).run.started
            leg = ledger.claim_leg(request.evidence_dir, run_id, started)
        else:
            ledger.claim(request.evidence_dir, run_id)
    option = "--resume" if resume else "--out"
    with rundir.opened(run_dir, WRITER, resume=resume, option=option, main=_is_main()) as opened:
        if request.resume is not None:
            try:
                plan = _resume_plan(request, run_dir)
            except rundir.NothingLeft as done:
                if _is_main():  # rank 0 speaks for a data-parallel run
                    print(f"{speaker()}: {done}", file=sys.stderr)
                    if request.evidence_dir is not None:
                        _file_finished(run_dir, request.evidence_dir)
                return 0
            if leg is not None:
                _as_leg(plan, leg)
        else:
            plan = _new_plan(request, run_dir, run_id)
        with recording(plan.ledger), determinism.kernels(plan.config.train.deterministic) as alerts:
            try:
                trainer = _set_up(plan, request.init_from)
            except GateViolation as exc:  # nothing was written: the refusal's record goes to the ledger
                _file_refusal(plan, request.evidence_dir, exc)
                raise
            trainer.alerts = alerts  # one count of non-deterministic ops for set-up and run
            opened.commit()
            return _run(plan, trainer, request.evidence_dir, progress_factory)


def _file_finished(run_dir: Path, evidence_dir: Path) -> None:
    """File a finished run's record as it stands, for a run trained without --evidence-dir: the
    record, config and metrics its last step wrote are what filing at that step would have filed,
    and the checker holds them to each other the same way. A run already filed there is told so
    (a retried job ends as it did); one whose filed legs end before its last leg cannot be filed
    after it, since that leg's record does not name the filed leg it continues."""
    record = read_evidence(run_dir / EVIDENCE_FILE)
    legs = ledger.filed_legs(evidence_dir, leg_of(record.run.id)[0], record.run.started)
    if not legs:
        filed = ledger.file(evidence_dir, record, (run_dir / CONFIG_FILE, run_dir / METRICS_FILE))
        print(f"{speaker()}: its record is filed now at {filed.parent}")
        return
    newest = Path(evidence_dir) / legs[-1][1]
    if read_evidence(newest / EVIDENCE_FILE).run.finished != record.run.finished:
        raise BadInput(
            f"{run_dir}'s last leg was trained without --evidence-dir after the leg filed at {newest}, "
            "and its record does not name that leg: it cannot be filed after it; the filed leg's "
            "weights can be released from that record"
        )
    print(f"{speaker()}: its record is filed already at {newest}")


def _as_leg(plan: Plan, leg: ledger.Leg) -> None:
    """The resumed record as the leg it will be filed as: that leg's id, and as its first parent the
    newest filed leg of the run, with the weights this leg resumed from (contracts.evidence.RESUMES).
    The run directory's record takes the id too, so a model made from the run later names the leg
    that vouches for its weights."""
    assert plan.checkpoint is not None
    record = plan.record
    record.run.id = leg.run_id
    before = record.lineage
    parents = [p for p in (before.parents if before is not None else []) if p.role != RESUMES]
    if leg.continues is not None:
        weights = ckpt.read_manifest(plan.checkpoint)["files"][WEIGHTS_FILE]["sha256"]
        resumed = ParentRef(
            role=RESUMES, run=leg.continues, checkpoint_sha256=weights, path=str(plan.checkpoint)
        )
        parents.insert(0, resumed)
    if parents or before is not None:
        record.lineage = Lineage(parents=parents, model_sha256=before.model_sha256 if before else None)


def _set_up(plan: Plan, init_from: Path | None) -> Trainer:
    """Build the trainer (its start-up gates judge the config) and load --init-from's weights, once
    GATE-DATA-007 has found the data tokenized by that checkpoint's own tokenizer; then judge the
    corpus's adequacy (GATE-DATA-004), which depends on whether the weights came from a checkpoint
    (this start's, or for a resume, the run's first).

    Nothing here writes: the trainer's event and progress callbacks, which do, are attached by
    `_run` once the run directory is open.
    """
    source = None
    if plan.config.train.tensorboard:
        tensorboard.require()
    if init_from is not None:  # before the trainer: a model on the wrong data is not worth building
        source = ckpt.load_checkpoint(resolve_checkpoint(init_from))
        check_data_tokenizer(plan.tokenizer, source)
    trainer = Trainer(
        plan.config, plan.data_dir, plan.run_dir, plan.tokenizer, lambda _e, _t: None, lambda _s, _l: None
    )
    if source is not None:
        start = trainer.start_from(source)
        if start.said is not None and _is_main():
            print(f"{speaker()}: {start.said}", file=sys.stderr)
        plan.record.metrics["init_from"] = {
            "path": str(source.path),
            "step": source.step,
            **({"adapter": start.note} if start.note is not None else {}),
        }
    elif "init_from" in plan.record.metrics:  # a resumed fine-tune: its start loaded a checkpoint's weights
        trainer.fine_tuning = True
    trainer.judge_adequacy()
    if trainer.lora is not None:  # which matrices carry adapters, and why the others do not
        plan.record.metrics["lora_matrices"] = selection = trainer.lora.as_record()
        if _is_main():
            print("\n".join(f"lora: {line}" for line in summary_lines(selection)), flush=True)
    return trainer


def summarise(record: EvidenceRecord, directory: Path) -> None:
    """The record's summary as the metrics log and config it cites derive it (contracts.derive): a
    run ends its record with the function the integrity check re-runs, so a summary that disagrees
    with the log can only come from an edit."""
    artifacts = Artifacts(directory, [a.path for a in record.artifacts])
    derivation = derive(record.run.kind, Inputs(record, artifacts, load_spec()))
    for path, value in derivation.fields.items():
        if len(path) == 2 and path[0] == "metrics":
            record.metrics[path[1]] = value


def _refusal_id(ledger_dir: Path, run_id: str) -> str:
    """The ledger id of a set-up refusal of `run_id`: `<run-id>-refused-<UTC time>` (and `.2`, `.3`
    … within one second), so the run id itself stays free for the run that passes set-up."""
    stamped = evidence_run_id(f"{run_id}{REFUSED}")
    ids = itertools.chain([stamped], (f"{stamped}.{n}" for n in itertools.count(2)))
    return next(rid for rid in ids if not (Path(ledger_dir) / rid).exists())


def _file_refusal(plan: Plan, evidence_dir: Path | None, exc: GateViolation) -> None:
    """File the record of a run a gate stopped during set-up: status `halted`, the gate's FAIL and
    every verdict judged before it, the config and data it was asked for, and as its artifacts
    that config and an empty metrics log (no step was taken), its summary derived from them. The
    run directory stays as if never asked for (a resumed one, as it was), so the same command can
    simply be run again; without --evidence-dir the refusal's one line is all."""
    if evidence_dir is None or not _is_main():
        return
    record = plan.record.model_copy(deep=True)
    record.run.id = _refusal_id(evidence_dir, plan.record.run.id)
    record.run.status = RunStatus.HALTED
    record.run.finished = now()
    record.run.stop_reason = f"refused at set-up: {exc}"
    record.gates = plan.ledger.gate_results()
    record.checkpoint = None
    # What the record's numbers derive from (contracts.derive): the config it was asked for, and the
    # log of a run that took no step, empty.
    with tempfile.TemporaryDirectory() as scratch:
        config, log = Path(scratch) / CONFIG_FILE, Path(scratch) / METRICS_FILE
        save_config(plan.config, config)
        log.touch()
        record.artifacts = [artifact(path, Path(scratch)) for path in (config, log)]
        summarise(record, Path(scratch))
        filed = ledger.file(evidence_dir, record, (config, log))
    print(f"{speaker()}: the refusal is filed at {filed}", file=sys.stderr)


def _open_run_dir(run_dir: Path, config: RunConfig) -> None:
    """The first writes of a run that passed set-up: leftovers of dead writers go, config is saved."""
    note = ckpt.leftovers_note(run_dir)
    if note is not None:
        print(f"{speaker()}: {note}", file=sys.stderr)
    save_config(config, run_dir / CONFIG_FILE)
    (run_dir / METRICS_FILE).touch()


def _unreached_phases(config: RunConfig) -> list[str]:
    """A note for each curriculum phase that starts at or after the run's last step: it never
    applies (a phase serves the steps after its after_step), unless a resume raises train.steps,
    which is why it is a note and not a refusal; without it such a run ends with exit 0 and no word."""
    steps = config.train.steps
    return [
        f"data.phases[{i}] (phase {i + 1}) starts after step {phase.after_step}, but train.steps is "
        f"{steps}: it never applies in this run (a --resume with a larger train.steps reaches it)"
        for i, phase in enumerate(config.data.phases or [])
        if phase.after_step >= steps
    ]


def _unfinished_warmup(config: RunConfig) -> list[str]:
    """A note when the run ends before its learning-rate warmup does: train.lr is never reached
    (a short run of a preset: `--set train.steps=50` on `small`, whose warmup is 200 steps, rises
    to a quarter of it). A note and not a refusal, as for an unreached phase: a benchmark may mean
    it, and a resume with a larger train.steps goes on from there."""
    train = config.train
    steps, warmup = train.steps, train.warmup_steps
    if warmup <= steps:
        return []
    last = lr_at(steps, lr=train.lr, min_lr=train.min_lr, warmup_steps=warmup, total_steps=steps)
    return [
        f"train.warmup_steps {warmup} is more than train.steps {steps}: the learning rate never reaches "
        f"train.lr {train.lr:g} (it rises to {last:.3g} at the last step, {last / train.lr:.0%} of it); "
        "lower train.warmup_steps for a short run"
    ]


def _on_event(evidence: RunRecord, event: str, trainer: Trainer) -> None:
    """A wrap of the corpus is said on stderr; evaluations and checkpoints refresh the record."""
    if event != "wrap":
        evidence.refresh(trainer)
    elif evidence.main:
        print(
            f"{speaker()}: step {trainer.state.step}: the train split wrapped to epoch "
            f"{trainer.reader.epoch} (data.wrap=true)",
            file=sys.stderr,
        )


def _run(plan: Plan, trainer: Trainer, evidence_dir: Path | None, progress_factory: Any) -> int:
    """Train from a passed set-up to a settled record; a gate or a crash leaves it halted or failed."""
    run_dir, config = plan.run_dir, plan.config
    if _is_main():
        _open_run_dir(run_dir, config)
        if not config.train.deterministic:
            print(
                f"{speaker()}: train.deterministic=false: non-deterministic kernels may run; the run is not "
                "claimed repeatable, and a replay of its steps is judged within GATE-CKPT-003's "
                "nondeterministic_loss_rtol",
                file=sys.stderr,
            )
        for note in _unreached_phases(config) + _unfinished_warmup(config):
            print(f"{speaker()}: {note}", file=sys.stderr)
        if config.train.parallel == "fsdp" and _world_size() == 1:
            print(
                f"{speaker()}: train.parallel='fsdp' shards over the processes of --nproc N; this run has "
                "one process and trains unsharded",
                file=sys.stderr,
            )
    evidence = RunRecord(run_dir, plan.record, plan.ledger, evidence_dir)
    trainer.on_event = lambda event, t: _on_event(evidence, event, t)
    try:
        evidence.refresh(None, RunStatus.RUNNING)
        # Rank 0 speaks for a data-parallel run; the other ranks train quietly.
        shown = progress_factory(config.train.steps, config.train.log_every)
        quiet = contextlib.nullcontext(lambda _step, _line: None)
        with shown if _is_main() else quiet as progress:
            trainer.progress = progress
            if plan.checkpoint is not None:
                trainer.restore(ckpt.load_checkpoint(plan.checkpoint))  # GATE-CKPT-002, recorded
                _record_resume_changes(plan.record, trainer)
                if _is_main():
                    print(f"{speaker()}: {_resume_note(run_dir, trainer.state.step)}", file=sys.stderr)
            if config.train.tensorboard and _is_main():  # from the step the run continues at
                resumed = trainer.state.step if plan.checkpoint is not None else None
                trainer.board = tensorboard.Board(run_dir, resumed)
            status = trainer.run(resumed=plan.checkpoint is not None)
            if _is_main():  # the last checkpoint reads back as written (GATE-CKPT-002)
                ckpt.load_checkpoint(ckpt.step_dir(run_dir, trainer.state.step))
                finish_lora(trainer.model, run_dir, config)  # [lora]: GATE-LORA-004, RUN_DIR/adapter
            if trainer.board is not None:  # the curves read back are the metrics lines' (GATE-TRAIN-001)
                _close_board(trainer, evidence)
                tensorboard.check_mirrored(run_dir, trainer.state.step)
    except GateViolation as exc:
        evidence.refresh(trainer, RunStatus.HALTED, str(exc))
        evidence.file_in_ledger()
        raise
    except BadInput as exc:
        evidence.refresh(trainer, RunStatus.FAILED, str(exc))
        raise
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            _failed(evidence, trainer, f"{type(exc).__name__}: {exc}")
            raise
        line = _disk_full(run_dir, exc)
        if not _failed(evidence, trainer, line):
            line += f"; {EVIDENCE_FILE} could not be written either, and still says the run is running"
        raise BadInput(line) from exc
    except Exception as exc:
        evidence.refresh(trainer, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _close_board(trainer, evidence)
    final = FINAL_STATUS[status]
    state = trainer.state
    evidence.refresh(trainer, final, state.stop_reason)
    filed = evidence.file_in_ledger()
    if final is RunStatus.EXHAUSTED:
        raise _exhausted(run_dir, state.step)
    if _is_main() and final is not RunStatus.INTERRUPTED:
        print(f"{speaker()}: {final.value} at step {state.step} ({state.stop_reason}); run in {run_dir}")
    if _is_main() and filed is not None:
        print(f"{speaker()}: evidence filed at {filed}")
    if final is RunStatus.INTERRUPTED:  # not a completed run: exit 130 or 143, never 0 (contracts.errors)
        assert trainer.interrupted_by is not None, "only a signal interrupts the loop"
        raise Interrupted(
            trainer.interrupted_by,
            f"stopped at step {state.step} of {config.train.steps}, which is saved in "
            f"{ckpt.step_dir(run_dir, state.step).name}; continue with --resume {run_dir}",
        )
    return 0


# The operating system's refusals that free space cures: the run stops, and continues once there is room.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _failed(evidence: RunRecord, trainer: Trainer, reason: str) -> bool:
    """Record the run `failed` for `reason` in its metadata.json; False when that write failed too
    (a disk still full), so the error that stopped the run is the one said, not the record's."""
    try:
        evidence.refresh(trainer, RunStatus.FAILED, reason)
    except OSError:
        return False
    return True


def _disk_full(run_dir: Path, exc: OSError) -> str:
    """The line for a run the disk filled under: what was being written (a checkpoint by its name;
    what it had staged is removed, ckpt.NotWritten), and the way on that works: --resume from its
    newest checkpoint, or, for a run that has none, a new start in a place the failed one leaves."""
    full = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is used up"
    if isinstance(exc, ckpt.NotWritten):
        what = f"checkpoint {exc.checkpoint} ({exc.filename}; what it had written is removed)"
    else:
        what = str(exc.filename) if exc.filename is not None else f"a file of the run {run_dir}"
    newest, _ = ckpt.latest_valid(run_dir, resumable=True)
    if newest is not None:
        way = f"free space, then continue from {newest.name} with: stack train --resume {run_dir}"
    else:
        way = (
            f"{run_dir} holds no checkpoint to resume: free space, then remove {run_dir} and run the same "
            "command again, or choose another --out"
        )
    return f"{full} writing {what}; {way}"


def _close_board(trainer: Trainer, evidence: RunRecord) -> None:
    """Write the last verdicts into the TensorBoard files (when the run keeps them) and close them;
    the final record's verdicts are the ones refreshed here or before."""
    if trainer.board is not None:
        expected = load_spec().required_gates(evidence.record.run.kind)
        trainer.board.gates(evidence.ledger.gate_results(expected=expected))
        trainer.board.close()
        trainer.board = None


def _resume_note(run_dir: Path, step: int) -> str:
    """The line a resume starts with: the step it continues from and, where a process that died
    later logged past it, how many lines the log rolls back and where they go (otherwise the steps
    redone would be said nowhere)."""
    _, later = split_at(read_lines(run_dir / METRICS_FILE), step)
    note = f"resuming from {ckpt.step_dir(run_dir, step).name} (step {step})"
    if not later:
        return note
    steps = [ln["step"] for ln in later if ln.get("type") == "step"]
    redone = f", steps {steps[0]}-{steps[-1]} to be trained again" if steps else ""
    return f"{note}; {len(later)} line(s) logged after it{redone} move to {ROLLED_BACK_FILE}"


def _record_resume_changes(record: EvidenceRecord, trainer: Trainer) -> None:
    """A resume with a new mixture (the polish pivot) names, in its resume entry, where the replaced
    mixture and policy state were archived; one that changed an optimizer setting (weight decay,
    betas, eps) names each group's old and new value, and says so on stderr. The changed keys are
    already listed there."""
    resumes = record.metrics["resumes"]
    assert isinstance(resumes, list)
    if trainer.policy_archive is not None:
        resumes[-1]["policy_archive"] = str(trainer.policy_archive.relative_to(trainer.run_dir))
    if trainer.optimizer_changes:
        resumes[-1]["optimizer_settings"] = trainer.optimizer_changes
        if _is_main():
            said = ", ".join(
                f"group {c['group']} {c['key']} {c['was']} -> {c['now']}" for c in trainer.optimizer_changes
            )
            print(
                f"{speaker()}: the restored optimizer steps with this resume's settings: {said}",
                file=sys.stderr,
            )


def _exhausted(run_dir: Path, step: int) -> GateViolation:
    """The one line of a run stopped by the end of an unwrapped corpus, in GATE-DATA-001's name.

    The gate held (the reader served no placeholder); the run did not reach its steps, so it
    ends with exit 3, its record `exhausted`, and every step kept in its last checkpoint.
    """
    gate = load_spec().gate("GATE-DATA-001")
    return GateViolation(
        gate.id,
        gate.revision,
        f"the train split is exhausted and data.wrap=false: stopped at step {step}, which is saved in "
        f"{ckpt.step_dir(run_dir, step).name}; continue with `stack train --resume {run_dir} --set "
        "data.wrap=true`, or prepare more data",
    )
