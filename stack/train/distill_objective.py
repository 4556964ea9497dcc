"""The distillation objective (`train.task = "distill"`): a student trained against a frozen teacher.

Per token, with the student's logits s, the teacher's z, temperature T and weight α (the
`[distill]` section; stack.tune.distill holds the loss and its identities):

    L = α · T² · KL(softmax(z/T) ‖ softmax(s/T)) + (1 − α) · NLL(s)

The batches are pretraining's (contiguous windows of a DATA_DIR's train split), so the reader,
held-out batches, resume and devices are the loop's. What the task adds is the teacher: loaded
from `distill.teacher` at set-up, moved to the run's device, frozen and hashed (GATE-KD-002 is
judged on it after the last step). Before the first step the pairing is judged (GATE-KD-001:
one tokenizer and vocabulary, or a declared `distill.truncate_vocab`), and the loss against its
identities on the first batch (GATE-KD-003, as it is scored) and its T² on a planted case
(GATE-KD-004). On the loop's probe cadence, on the batch the loss just used, the KL and the NLL
the loss minimises are recomputed from the teacher's and the student's logits by another path,
and the loss it returns must be α·T²·KL + (1 − α)·NLL of those recomputed terms (GATE-KD-003).
The data must be tokenized by the teacher's tokenizer (GATE-DATA-007, judged at set-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from contracts.errors import BadInput
from stack.data.tokenizer import Tokenizer, load_tokenizer
from stack.model.gpt import GPT
from stack.train.config import DistillSection, RunConfig
from stack.train.objective import Forward, Pretrain, StepLoss
from stack.train.tokenizer_match import check_data_tokenizer
from stack.train.trained import Trained, load_trained, resolve_checkpoint
from stack.tune import distill, frozen


def vocabulary_measured(
    teacher: Trained, student: GPT, student_tokenizer: Tokenizer, truncate: int | None
) -> dict[str, Any]:
    """What GATE-KD-001 judges about a teacher and a student (the student reads the run's data)."""
    return {
        "teacher_tokenizer_identity": teacher.tokenizer.identity,
        "student_tokenizer_identity": student_tokenizer.identity,
        "teacher_vocab": teacher.model.config.vocab,
        "student_vocab": student.config.vocab,
        "tokenizer_ids": teacher.tokenizer.vocab_size,
        "truncate_to": truncate,
    }


def recomputed_kl(
    student: torch.Tensor, teacher: torch.Tensor, scored: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher_T ‖ student_T) per scored position, averaged, by torch's `kl_div`: the independent
    path GATE-KD-003 checks the minimised KL against (stack.tune.distill writes the sum out)."""
    log_q = torch.log_softmax(student.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher.float() / temperature, dim=-1)
    per_position = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    return per_position[scored].mean()


def recomputed_nll(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The student's mean −log p(target) over the scored positions, by gathering its log-softmax:
    the independent path GATE-KD-003 checks the minimised NLL against (the loss takes torch's
    cross_entropy)."""
    scored = targets >= 0
    logp = torch.log_softmax(student.float(), dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    return -logp.squeeze(-1)[scored].mean()


def distill_window(seq_len: int | None, ctx: int, teacher_ctx: int) -> int:
    """The windows a distillation reads: `distill.seq_len` (default: the student's context `ctx`),
    at most the student's context and the teacher's, since the teacher scores every window the
    student reads; else refused. The checker asks it of a record's teacher too (a teacher restated
    as a model the stack would have refused: tools/integrity/models/cross_reads.py)."""
    window = seq_len or ctx
    if window > ctx:
        raise BadInput(
            f"distill.seq_len (--seq-len) {window} is longer than the student's context of {ctx}; "
            f"give at most {ctx}"
        )
    if window > teacher_ctx:
        given = "--seq-len" if seq_len else f"the student's context of {ctx} (no --seq-len)"
        raise BadInput(
            f"windows of {window} tokens ({given}) are longer than the teacher's context of "
            f"{teacher_ctx}, so the teacher cannot score them; pass --seq-len {teacher_ctx} or less "
            "(distill.seq_len)"
        )
    return window


class Distill(Pretrain):
    """Pretraining's batches, scored by the distillation loss against a frozen teacher."""

    name = "distill"
    metric_names = ("kl", "nll")
    first_loss_is_ln_vocab = False  # α·T²·KL + (1 − α)·NLL is not ln(vocab) at initialisation
    logs_forward_loss = False  # and not the student's cross-entropy alone

    def bind(self, config: RunConfig, data_dir: Path, device: torch.device) -> None:
        """Load the teacher onto the run's device, once the data is found to be in its tokens."""
        if config.distill is None:
            raise BadInput(
                "train.task=distill needs a teacher: --set distill.teacher=RUN_DIR|CKPT, or `stack distill`"
            )
        self.settings: DistillSection = config.distill
        self.data_tokenizer = load_tokenizer(data_dir)
        self.teacher = load_trained(resolve_checkpoint(Path(self.settings.teacher)), device)
        check_data_tokenizer(self.data_tokenizer, self.teacher.checkpoint)  # GATE-DATA-007
        self.teacher.model.to(device)
        self.teacher_sha256 = frozen.freeze(self.teacher.model)
        self.teacher_watch = frozen.ForwardWatch(self.teacher.model)  # GATE-KD-002: how it ran
        self.started_sha256 = self.teacher_sha256  # the run's start; a resume restores it (`restore`)
        self.probed = False

    def window(self, data_dir: Path, ctx: int) -> int:
        """`distill.seq_len`, at most the student's context and the teacher's (`distill_window`)."""
        return distill_window(self.settings.seq_len, ctx, self.teacher.model.config.ctx)

    def _vocab(self, model: torch.nn.Module) -> int:
        """The ids distilled over: the declared truncation, else the whole vocabulary."""
        return self.settings.truncate_vocab or int(model.config.vocab)

    def loss(self, forward: Forward, model: torch.nn.Module, batch: torch.Tensor) -> StepLoss:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.no_grad():
            teacher_logits, _ = self.teacher.model(inputs)
        # The student's forward comes last: the loop reads its experts' auxiliary losses next.
        logits, nll = forward(inputs, targets)
        assert nll is not None  # targets were given
        if not self.probed:  # GATE-KD-003 on the invocation's first batch, before its first update
            self.probed = True
            probe = distill.identity_probe(logits.detach(), nll.detach(), targets, self.settings.temperature)
            distill.check_identities(probe)
        vocab = self._vocab(model)
        terms = distill.kd_terms(
            distill.common_logits(logits, vocab),
            distill.common_logits(teacher_logits, vocab),
            targets,
            self.settings.temperature,
            self.settings.alpha,
        )
        return StepLoss(backprop=terms.loss, logged=terms.loss, metrics={"kl": terms.kl, "nll": terms.nll})

    def probe(self, model: torch.nn.Module, batch: torch.Tensor, step: int) -> None:
        """GATE-KD-003 on the batch the loss just used: the loss, KL and NLL the objective minimises,
        by its own path, against the KL and NLL recomputed from the student's and the teacher's
        logits (`recomputed_kl`, `recomputed_nll`), for the judge to hold the loss to α·T²·KL +
        (1 − α)·NLL of those."""
        minimised = self.loss(model, model, batch)
        (stated,) = self.stated(batch)
        vocab = self._vocab(model)
        student, teacher = (m(stated.inputs)[0][..., :vocab] for m in (model, self.teacher.model))
        temperature = self.settings.temperature
        measured = {
            "alpha": self.settings.alpha,
            "temperature": temperature,
            "loss_minimised": float(minimised.backprop),
            "kl_minimised": float(minimised.metrics["kl"]),
            "kl_recomputed": float(recomputed_kl(student, teacher, stated.targets >= 0, temperature)),
            "nll_minimised": float(minimised.metrics["nll"]),
            "nll_recomputed": float(recomputed_nll(student, stated.targets)),
        }
        distill.check_minimised_kl(measured, step)

    def start(self, model: torch.nn.Module, heldout: list[Any]) -> None:
        """GATE-KD-001 on the pairing and GATE-KD-004 on the planted case, before the first step."""
        truncate = self.settings.truncate_vocab
        distill.check_vocabularies(vocabulary_measured(self.teacher, model, self.data_tokenizer, truncate))
        distill.check_temperature_scale()

    def finish(self, model: torch.nn.Module) -> None:
        """GATE-KD-002: the teacher's weights hash as they did at set-up, it is still frozen, and it
        ran every forward frozen."""
        frozen.check_teacher(self.teacher.model, self.teacher_sha256, self.teacher_watch)

    def state(self) -> dict[str, Any]:
        """The teacher's weights sha256 at the run's start, kept in every checkpoint."""
        return {"teacher_sha256": self.started_sha256}

    def restore(self, state: dict[str, Any] | None) -> None:
        """A resume reloads the teacher from its path: refuse one whose weights are not the start's."""
        recorded = (state or {}).get("teacher_sha256")
        if recorded is None:
            return  # a checkpoint from before the hash was recorded: nothing to compare
        self.started_sha256 = recorded
        if recorded != self.teacher_sha256:
            raise BadInput(
                f"the teacher {self.settings.teacher} changed since the run began (weights sha256 "
                f"{self.teacher_sha256[:12]}, recorded {recorded[:12]}): restore the teacher the run "
                "started with to resume, or start a new run with --out"
            )
