"""`stack distill`: a student trained on a DATA_DIR against a frozen teacher, as a new run dir.

The teacher is a checkpoint (a gatestack run, or a Hugging Face model brought in with
`stack import-hf`), frozen (GATE-KD-002). The student is another checkpoint or a fresh model of
a preset, built over the teacher's tokenizer and vocabulary. Before anything is distilled the
two must read the same tokens (GATE-KD-001; `--truncate-vocab N` declares the common ids of
padded vocabularies, and the record keeps it); before the first update the loss is checked
against its identities on the first batch (GATE-KD-003) and its T² on a planted case
(GATE-KD-004). A mixture-of-experts student adds its weighted auxiliary losses, as `stack train`
does. See stack.tune.rundir for the directory and the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.evidence import DataRef
from stack.data.reader import TokenReader
from stack.data.tokenizer import Tokenizer, load_tokenizer
from stack.model.gpt import GPT
from stack.model.moe import weighted_aux
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig, resolve
from stack.train.run import check_data_tokenizer
from stack.train.trained import Trained, load_trained, resolve_checkpoint
from stack.tune import distill, frozen, rundir
from stack.tune.settings import DistillSettings

KIND = "distill"


class DistillTask:
    """One distillation run's models, data and settings (the `Task` of stack.tune.rundir)."""

    kind = KIND

    def __init__(
        self,
        student: GPT,
        run_config: RunConfig,
        teacher: Trained,
        reader: TokenReader,
        sources: dict[str, Any],
        settings: DistillSettings,
    ) -> None:
        self.model, self.run_config, self.teacher = student, run_config, teacher.model
        self.teacher_sha256 = frozen.freeze(self.teacher)
        self.tokenizer: Tokenizer = teacher.tokenizer
        self.reader, self.sources, self.settings = reader, sources, settings
        self.vocab = settings.truncate_vocab or student.config.vocab

    def record(self) -> tuple[dict[str, Any], DataRef]:
        config = {**self.sources, **asdict(self.settings)}
        return config, DataRef(
            manifest_sha256=self.reader.manifest.sha256, tokenizer_sha256=self.tokenizer.sha256
        )

    def loss(self, first: bool) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.reader.next_batch()
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits, nll = self.model(inputs, targets)
        assert nll is not None  # targets were given
        with torch.no_grad():
            teacher_logits, _ = self.teacher(inputs)
        temperature, alpha = self.settings.temperature, self.settings.alpha
        if first:
            distill.check_temperature_scale()
            distill.check_identities(
                distill.identity_probe(logits.detach(), nll.detach(), targets, temperature)
            )
        terms = distill.kd_terms(
            distill.common_logits(logits, self.vocab),
            distill.common_logits(teacher_logits, self.vocab),
            targets,
            temperature,
            alpha,
        )
        aux = weighted_aux(self.model.aux_losses())
        line = terms.line()
        if isinstance(aux, torch.Tensor):
            line["aux"] = float(aux.detach())
        return terms.loss + aux, line

    def finish(self, history: list[dict[str, float]]) -> None:
        frozen.check_teacher(self.teacher, self.teacher_sha256)

    def state(self) -> dict[str, Any]:
        return dict(self.sources)

    def position(self) -> tuple[int, dict[str, Any]]:
        return self.reader.epoch, self.reader.state_dict()


def vocabulary_measured(
    teacher: Trained, student: GPT, student_tokenizer: Tokenizer, truncate: int | None
) -> dict[str, Any]:
    """What GATE-KD-001 judges about a teacher and a student."""
    return {
        "teacher_tokenizer_sha256": teacher.tokenizer.sha256,
        "student_tokenizer_sha256": student_tokenizer.sha256,
        "teacher_vocab": teacher.model.config.vocab,
        "student_vocab": student.config.vocab,
        "tokenizer_ids": teacher.tokenizer.vocab_size,
        "truncate_to": truncate,
    }


def _reader(data: Path, settings: DistillSettings) -> TokenReader:
    assert settings.seq_len is not None  # resolved against the student's context
    return TokenReader(
        data, "train", batch_size=settings.batch_size, seq_len=settings.seq_len, seed=settings.seed
    )


def _resolved(settings: DistillSettings, ctx: int) -> DistillSettings:
    """The settings with the sequence length filled in (the student's context) and checked."""
    settings = replace(settings, seq_len=ctx) if settings.seq_len is None else settings
    settings.check()
    if settings.seq_len is None or settings.seq_len > ctx:
        raise BadInput(
            f"--seq-len {settings.seq_len} is longer than the student's context of {ctx}; give at most {ctx}"
        )
    return settings


def _fresh_student(teacher: Trained, preset: str, sets: list[str], seed: int) -> tuple[GPT, RunConfig]:
    """A new model of `preset` (with `sets`) over the teacher's tokenizer and vocabulary."""
    config = resolve(
        preset, None, [f"model.vocab={teacher.model.config.vocab}", *sets], vocab=teacher.tokenizer.vocab_size
    )
    return GPT(config.model, seed=seed), config


def start(
    teacher_path: Path,
    data: Path,
    out: Path,
    student: Path | tuple[str, list[str]],
    settings: DistillSettings,
    argv: list[str],
    evidence_dir: Path | None,
    on_step: Callable[[int, dict[str, float]], None],
) -> Path:
    """A new distillation from the teacher at `teacher_path` into `student` (a checkpoint, or a
    preset and its --set overrides) on `data`; returns the student's last checkpoint."""
    evidence = rundir.new_evidence(KIND, argv, evidence_dir, out, fresh=True)
    with rundir.recorded(evidence, out):
        teacher_checkpoint = resolve_checkpoint(teacher_path)
        teacher = load_trained(teacher_checkpoint)
        if isinstance(student, Path):
            student_checkpoint = resolve_checkpoint(student)
            loaded = load_trained(student_checkpoint)
            model, config, tokenizer = loaded.model, loaded.config, loaded.tokenizer
            student_source: dict[str, Any] = {"checkpoint": rundir.source_record(student_checkpoint)}
        else:
            model, config = _fresh_student(teacher, *student, seed=settings.seed)
            tokenizer = teacher.tokenizer
            student_source = {"preset": student[0], "sets": student[1]}
        distill.check_vocabularies(vocabulary_measured(teacher, model, tokenizer, settings.truncate_vocab))
        check_data_tokenizer(load_tokenizer(data), teacher.checkpoint)
        settings = _resolved(settings, model.config.ctx)
        sources = {
            "teacher": rundir.source_record(teacher_checkpoint),
            "student": student_source,
            "data": str(data.resolve()),
        }
        task = DistillTask(model, config, teacher, _reader(data, settings), sources, settings)
        return rundir.train(task, out, evidence, tokenizer, (0, [], None), on_step)


def resume(
    out: Path,
    steps: int,
    argv: list[str],
    evidence_dir: Path | None,
    on_step: Callable[[int, dict[str, float]], None],
) -> Path:
    """Continue the distillation in `out` from its newest valid checkpoint up to `steps` in all."""
    path = rundir.latest(out, KIND)
    evidence = rundir.new_evidence(KIND, argv, evidence_dir, out, fresh=False)
    with rundir.recorded(evidence, out):
        student = load_trained(path)
        checkpoint = student.checkpoint
        tune = rundir.restored_tune_state(checkpoint, KIND, steps)
        with ckpt.restoring(checkpoint, "tune"):
            settings = replace(DistillSettings(**tune["settings"]), steps=steps)
            sources = {key: tune[key] for key in ("teacher", "student", "data")}
            data = Path(tune["data"])
        teacher = load_trained(rundir.checked_source(sources["teacher"]))
        distill.check_vocabularies(
            vocabulary_measured(teacher, student.model, student.tokenizer, settings.truncate_vocab)
        )
        check_data_tokenizer(load_tokenizer(data), teacher.checkpoint)
        reader = _reader(data, settings)
        with ckpt.restoring(checkpoint, "reader"):
            reader.load_state_dict(checkpoint.state["reader"])
        task = DistillTask(student.model, student.config, teacher, reader, sources, settings)
        history = list(tune["history"])
        return rundir.train(
            task, out, evidence, student.tokenizer, (checkpoint.step, history, checkpoint), on_step
        )
