"""A `stack es` run directory: started from a checkpoint, resumed from its own, with evidence.

    OUT/config.toml                  the source's configuration (ES changes weights, not shapes)
    OUT/metrics.jsonl                one line per step: the population's mean and best fitness and
                                     the gradient estimate's norm (a resume keeps the lines up to
                                     its checkpoint, as `stack train`'s log does); filed with the
                                     record, which the integrity check re-derives from it
    OUT/checkpoints/step-NNNNNNN/    the weights after step N; Adam's moments and step count
                                     (optimizer.safetensors); in state.json the reader's position,
                                     the noise generator's state, the settings, the data and the
                                     source checkpoint with the sha256 of its manifest
    OUT/metadata.json                the evidence record of the latest invocation, run kind es

Every reader of a run reads OUT (`stack sample OUT`, `eval`, `trace`, `train --init-from`).
`--resume OUT` continues from OUT's newest valid checkpoint with everything a step depends on
restored, so it reaches the weights the uninterrupted run would have, bit for bit (at the same
number of workers); a resume on other data is refused. OUT lives as every run directory does
(stack.outputs.rundir): checked before any work, held under its one writer's lock, and written
only once set-up (loading, the data's tokenizer, GATE-DATA-007, a forward of the model on a few
tokens) has passed, so a refusal leaves it as it was. Each invocation then runs the estimator's
self-test (GATE-ES-004); a gate that fires from there on leaves its halted record as
OUT/metadata.json. SIGINT or SIGTERM from there on stops the run as `stack train`'s loop stops: the
step under way is finished and saved, the record says `interrupted`, and the command ends 130 or
143 naming the resume that continues it. A run killed outright (no record) is still an ES run by
its checkpoints' `es` state (stack.artifacts), which `--resume` continues. A resume writes a new
record over the previous one; `--evidence-dir` files every record, append-only.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch

from contracts.errors import BadInput, GateViolation, Interrupted
from contracts.evidence import (
    EVIDENCE_FILE,
    DataRef,
    EvidenceRecord,
    Lineage,
    RunStatus,
    canonical_sha256,
    places_named,
    read_evidence,
    sha256_file,
)
from contracts.spec import load_spec
from stack.artifacts import ES_RUN_KIND, ES_STATE, ES_WRITER, RUN_CONFIG
from stack.data.manifest import load_manifest
from stack.data.reader import TokenReader
from stack.data.tokenizer import load_tokenizer
from stack.data.tokenizer_record import tokenizer_state
from stack.es.loop import EsSettings, EsState, StepReport, evolve
from stack.es.optimizer import EsAdam
from stack.es.population import Fitness, Statement, flatten, graph_free, lm_fitness, statement_of
from stack.es.selftest import check_estimator
from stack.es.trend import check_trend
from stack.eval.evidence import CommandEvidence
from stack.model.gpt import GPT
from stack.outputs import rundir
from stack.train import checkpoint as ckpt
from stack.train import rng
from stack.train.config import save_config
from stack.train.lineage import lineage
from stack.train.loop import Signals
from stack.train.metrics import METRICS_FILE, MetricsLog
from stack.train.tokenizer_match import check_data_tokenizer
from stack.train.trained import Trained, load_trained, resolve_checkpoint

KIND, CONFIG_FILE = ES_RUN_KIND, RUN_CONFIG
# An ES run is continued in place with --resume, under its lock (stack.outputs.rundir).
WRITER = rundir.Writer(
    ES_WRITER, resumable=True, continues=lambda out: ckpt.continuable(out, "es-run", False)
)


@dataclass
class Invocation:
    """How this invocation was asked for, and what it reports to."""

    argv: list[str]
    evidence_dir: Path | None = None
    fitness: Fitness = lm_fitness
    # What each evaluation of `fitness` states it scores through the model's loss (GATE-ES-005);
    # None: `statement_of(fitness)`, the batch's next tokens for the language-model fitness and no
    # scoring for a reward of the caller's own.
    stated: Statement | None = None
    on_step: Callable[[StepReport], None] = lambda report: None
    reports: list[StepReport] = field(default_factory=list)


@dataclass
class Job:
    """Everything a run needs once its start (or resume) is set up."""

    trained: Trained
    reader: TokenReader
    state: EsState
    settings: EsSettings
    data: Path
    source: dict[str, Any]
    resumed_from: int | None
    # The command line of the start and of each resume up to this invocation (its own last), each
    # with the places its words named and, for a resume, the step it went on from: kept in every
    # checkpoint, so the record of a resume keeps the settings' own command line, as training's does.
    commands: list[dict[str, Any]] = field(default_factory=list)


def _encode(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode()


def _decode(text: str) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone())
    return generator


def _reader(data: Path, settings: EsSettings) -> TokenReader:
    return TokenReader(
        data, "train", batch_size=settings.batch_size, seq_len=settings.seq_len, seed=settings.seed
    )


def _checkpoint_state(job: Job) -> dict[str, Any]:
    """state.json of an ES checkpoint: every key GATE-CKPT-001 asks for, and the ES state under `es`."""
    return {
        "epoch": job.reader.epoch,
        "scheduler": {"kind": "constant", "lr": job.settings.lr},
        "scaler": None,
        "rng": rng.capture(),
        "reader": job.reader.state_dict(),
        "monitors": None,
        "config": job.trained.config.as_dict(),
        "spec_version": load_spec().version,
        "tokenizer": tokenizer_state(job.trained.tokenizer),
        ES_STATE: {
            "settings": asdict(job.settings),
            "generator": _encode(job.state.generator),
            "data": str(job.data),
            "source": job.source,
            "commands": job.commands,
        },
    }


def start(source: Path, data: Path, out: Path, settings: EsSettings, invocation: Invocation) -> Path:
    """A new ES run from `source` on `data` into `out`; returns its last checkpoint."""
    rundir.check(out, WRITER)
    evidence = CommandEvidence(KIND, invocation.argv, "cpu", invocation.evidence_dir)
    with rundir.opened(out, WRITER) as opened, _recorded(evidence, opened):
        checkpoint = resolve_checkpoint(source)
        trained = load_trained(checkpoint)
        settings = settings.resolved(trained.model.config.ctx)
        check_data_tokenizer(load_tokenizer(data), trained.checkpoint)
        check_runs(trained.model)
        theta = flatten(trained.model)
        state = EsState(0, torch.Generator().manual_seed(settings.seed), EsAdam(theta, settings.lr))
        provenance = {
            "checkpoint": str(checkpoint.resolve()),
            "manifest_sha256": sha256_file(checkpoint / ckpt.MANIFEST),
            # kept in every checkpoint, so a resume names the parent even if it has moved since
            "lineage": lineage({"init": source}).model_dump(mode="json"),
        }
        job = Job(trained, _reader(data, settings), state, settings, data.resolve(), provenance, None)
        job.commands = [_command(invocation.argv)]
        _commit(opened)
        save_config(trained.config, out / CONFIG_FILE)
        ended = _run(job, out, evidence, invocation)
    return ended.written()


def resume(out: Path, steps: int | None, data: Path | None, invocation: Invocation) -> Path:
    """Continue the ES run in `out` from its newest valid checkpoint up to `steps` in all (None:
    the run's own)."""
    rundir.check(out, WRITER, resume=True, option="--resume")
    evidence = CommandEvidence(KIND, invocation.argv, "cpu", invocation.evidence_dir)
    with rundir.opened(out, WRITER, resume=True, option="--resume") as opened, _recorded(evidence, opened):
        path, notes = ckpt.resume_point(out, resumable=False)
        for note in notes:
            print(f"{WRITER.command}: {note}", file=sys.stderr)
        trained = load_trained(path)
        job = _restored(out, trained, steps, data)
        job.commands += [_command(invocation.argv, from_step=job.resumed_from)]
        _commit(opened, resumed_from=job.resumed_from)
        ended = _run(job, out, evidence, invocation)
    return ended.written()


def check_runs(model: GPT) -> None:
    """A forward of a few tokens before OUT is written: a model this machine cannot run is refused
    at set-up, leaving OUT as it was, not after OUT became a run with no checkpoint to resume."""
    probe = torch.zeros((1, min(4, model.config.ctx)), dtype=torch.long, device=model.lm_head.weight.device)
    with graph_free():
        model(probe)


def _commit(opened: rundir.RunDir, resumed_from: int | None = None) -> None:
    """Set-up passed: OUT is the run's from here (what dead writers left among its checkpoints goes;
    a resume sets aside the checkpoints newer than the one it continues from, which it passed over)."""
    opened.commit()
    note = ckpt.leftovers_note(opened.out)
    notes = [] if note is None else [note]
    if resumed_from is not None:
        notes += [aside.line() for aside in ckpt.set_aside_newer(opened.out, resumed_from, resumable=False)]
    for line in notes:
        print(f"{WRITER.command}: {line}", file=sys.stderr)


def _restored(out: Path, trained: Trained, steps: int | None, data: Path | None) -> Job:
    """The job an ES checkpoint describes, to run on to `steps` (None: its own, as `stack train
    --resume` keeps a run's train.steps, so a resume never trains a 2-step run on to the option's
    default of 100); a resume on other data than the checkpoint's reader was
    reading is refused (stack.outputs.rundir.refuse_changes)."""
    checkpoint = trained.checkpoint
    es = checkpoint.state.get(ES_STATE)
    if not isinstance(es, dict):
        raise BadInput(
            f"{checkpoint.path} was not written by `stack es`; "
            "a training run resumes with `stack train --resume`"
        )
    steps = es["settings"]["steps"] if steps is None else steps
    if steps <= checkpoint.step:
        _nothing_left(out, checkpoint.step, steps)
    with ckpt.restoring(checkpoint, ES_STATE):
        settings = replace(EsSettings(**es["settings"]), steps=steps).resolved(trained.model.config.ctx)
        generator = _decode(es["generator"])
    data = data if data is not None else Path(es["data"])
    found = rundir.changes(
        {"data manifest": checkpoint.state["reader"].get("manifest_sha256")},
        {"data manifest": load_manifest(data).sha256},
    )
    rundir.refuse_changes(
        out, checkpoint.path, found, "resume with the run's own --data, or start a new run with --out"
    )
    check_data_tokenizer(load_tokenizer(data), checkpoint)
    reader = _reader(data, settings)
    reader.load_state_dict(checkpoint.state["reader"])
    optimizer = EsAdam(flatten(trained.model), settings.lr)
    ckpt.load_optimizer(checkpoint, optimizer)
    state = EsState(checkpoint.step, generator, optimizer)
    commands = list(es.get("commands") or [])  # a checkpoint older than the list keeps none
    return Job(trained, reader, state, settings, data.resolve(), es["source"], checkpoint.step, commands)


def _nothing_left(out: Path, step: int, steps: int) -> NoReturn:
    """End a resume with no step left before anything is written, as `stack train --resume` does
    (stack.train.run): a completed run resumed at its own steps is told so and left alone, exit 0
    (a retried job; it was refused with exit 2, unlike every other resumable command); any other
    resume from a checkpoint at or past its steps is refused."""
    to_train_on = f"to train on, give --steps N with N above {step}"
    if steps == step and _completed(out):
        raise rundir.NothingLeft(
            f"{out} is complete at step {step} (steps={steps}): nothing to resume; {to_train_on}"
        )
    raise BadInput(
        f"cannot resume {out}: it has reached step {step} and its steps are {steps}, so no step is left "
        f"to train; {to_train_on}"
    )


def _completed(out: Path) -> bool:
    """Whether OUT's record says the run completed; one missing or unreadable says nothing of it."""
    try:
        return read_evidence(out / EVIDENCE_FILE).run.status is RunStatus.COMPLETED
    except BadInput:
        return False


def _command(argv: list[str], from_step: int | None = None) -> dict[str, Any]:
    """One invocation's command line, the places its words name from here, and (a resume) its step."""
    command: dict[str, Any] = {"argv": argv, "places": places_named(argv)}
    return command if from_step is None else {"from_step": from_step, **command}


def _keep_command_lines(record: EvidenceRecord, commands: list[dict[str, Any]]) -> None:
    """The record's command lines as a training record keeps them: the start's as `run.argv` (with
    its places), each resume's in `metrics.resumes`. A run whose checkpoints predate the list keeps
    this invocation's line only."""
    if not commands or "from_step" in commands[0]:
        return
    record.run.argv, record.run.places = commands[0]["argv"], commands[0]["places"]
    record.metrics["resumes"] = commands[1:]


@dataclass(frozen=True)
class Ended:
    """Where an invocation's steps ended: its last checkpoint and its step, the steps the run is to
    reach, and the signal that stopped it first (None: it reached them)."""

    checkpoint: Path
    step: int
    steps: int
    signal: str | None

    def written(self) -> Path:
        """The last checkpoint, once OUT's record is written. A run a signal stopped is not completed:
        `Interrupted` (exit 130 or 143, as `stack train`'s), naming the step saved and the resume
        that continues the run to its steps."""
        if self.signal is None:
            return self.checkpoint
        out = self.checkpoint.parent.parent
        raise Interrupted(
            self.signal,
            f"stopped at step {self.step} of {self.steps}, which is saved in {self.checkpoint.name}; "
            f"continue with `stack es --resume {out} --steps {self.steps}`",
        )


def _run(job: Job, out: Path, evidence: CommandEvidence, invocation: Invocation) -> Ended:
    """Self-test the estimator, then step to the end, saving as the settings ask; judged throughout.
    SIGINT or SIGTERM from here on stops the run at the end of the step under way, which is saved,
    and the record says `interrupted` (as `stack train` stops): OUT is left for --resume."""
    record = evidence.record
    record.config = {"source": job.source, "data": str(job.data), **asdict(job.settings)}
    record.config_sha256 = canonical_sha256(record.config)
    record.data = DataRef(
        manifest_sha256=job.reader.manifest.sha256, tokenizer_sha256=job.trained.tokenizer.sha256
    )
    record.lineage = Lineage.model_validate(job.source["lineage"]) if "lineage" in job.source else None
    saved: list[Path] = []
    log = MetricsLog(out, resume_step=job.resumed_from)

    def report(step: StepReport) -> None:
        invocation.reports.append(step)
        log.write("step", **asdict(step))
        invocation.on_step(step)

    def save(state: EsState) -> None:
        saved.append(
            ckpt.save_checkpoint(out, state.step, job.trained.model, state.optimizer, _checkpoint_state(job))
        )

    signals = Signals()
    try:
        with signals.installed():
            check_estimator(job.settings.seed)
            fitness, stated = invocation.fitness, invocation.stated or statement_of(invocation.fitness)
            evolve(
                job.trained.model,
                job.state,
                job.reader,
                job.settings,
                fitness,
                stated,
                report,
                save,
                signals,
            )
    finally:
        log.close()
        # Halted or not, the record reports the steps its log holds (a gate may stop a later step).
        record.metrics = {
            "data_dir": str(job.data),  # what `stack eval` reads the held-out split of, as for a training run
            "resumed_from": job.resumed_from,
            **({"steps": [asdict(r) for r in invocation.reports]} if invocation.reports else {}),
        }
        _keep_command_lines(record, job.commands)
    check_trend(out / METRICS_FILE)  # the run's loss since its first steps, on the log as written
    evidence.note_checkpoint(saved[-1])
    if signals.stop is None:
        evidence.settle(RunStatus.COMPLETED)
    else:
        evidence.settle(RunStatus.INTERRUPTED, f"{signals.stop} received")
    return Ended(saved[-1], job.state.step, job.settings.steps, signals.stop)


@contextmanager
def _recorded(evidence: CommandEvidence, opened: rundir.RunDir) -> Iterator[None]:
    """Judge the work under the record's ledger; write the record into OUT (and the ledger) whether
    the work completes or a gate halts it. A gate that fires before OUT was committed (in set-up)
    leaves OUT as it was: its record goes to the ledger only."""
    try:
        with evidence.judging():
            yield
    except GateViolation:
        if opened.committed:
            _write(evidence, opened.out)
        else:
            evidence.file()
        raise
    _write(evidence, opened.out)


def _write(evidence: CommandEvidence, out: Path) -> None:
    """OUT/metadata.json naming config.toml, the metrics log and the last checkpoint's files; filed,
    when asked, with copies of config.toml and the metrics log (no weights)."""
    checkpoint = evidence.record.checkpoint
    kept = tuple(out / name for name in (CONFIG_FILE, METRICS_FILE) if (out / name).is_file())
    files = list(kept)
    if checkpoint is not None:
        files += sorted(p for p in (out / ckpt.CKPT_DIR / checkpoint.name).iterdir() if p.is_file())
    evidence.write(out, files)
    evidence.file(kept)
