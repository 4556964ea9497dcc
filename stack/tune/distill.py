"""Knowledge distillation: the loss, and the checks that it is the loss it claims to be.

Per token t with a target, student logits s_t, teacher logits z_t, temperature T and weight α:

    KL_t = Σ_v softmax(z_t/T)_v · (log softmax(z_t/T)_v − log softmax(s_t/T)_v)
    L    = α · T² · mean_t KL_t + (1 − α) · mean_t (−log softmax(s_t)_{y_t})

(Hinton et al., 2015). The T² keeps the soft term's gradient the size it has at T = 1: the
gradient of KL at temperature T with respect to the student's logits is (q_T − p_T)/T, and
q_T − p_T itself shrinks like 1/T, so without T² the soft targets fade as T grows. The gates
bound here:

- GATE-KD-001 teacher and student share the tokenizer (identity) and vocabulary, or a declared
  truncation covers every id the tokenizer has (`check_vocabularies`);
- GATE-KD-003 α = 0 gives the plain NLL (to a rounding), and a student distilled from itself has KL 0
  (`check_identities`); on a cadence, the KL and NLL the loss minimised are those recomputed from
  the teacher's and the student's logits, and the loss is α·T²·KL + (1 − α)·NLL of them
  (`check_minimised_kl`);
- GATE-KD-004 the T² is there: on a planted case the soft term's gradient at the spec's probe
  temperature is the size it is at T = 1 (`check_temperature_scale`).

GATE-KD-002 (the teacher stays frozen) is in stack.tune.frozen, shared with DPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec

# The planted case of GATE-KD-004: a few positions over a small vocabulary, with logits near
# zero, where the gradient of the T²-scaled KL hardly depends on T.
PROBE_SHAPE = (8, 32)
PROBE_SEED = 0
# GATE-KD-004's thresholds the probe is drawn at: its temperature and the scale of its logits.
PROBE_THRESHOLDS = ("probe_temperature", "probe_logit_scale")


@dataclass(frozen=True)
class KdTerms:
    """The loss (with its graph) and its two parts, each a mean over the scored tokens."""

    loss: torch.Tensor
    kl: torch.Tensor
    nll: torch.Tensor

    def line(self) -> dict[str, float]:
        """The step's metrics."""
        return {
            "loss": float(self.loss.detach()),
            "kl": float(self.kl.detach()),
            "nll": float(self.nll.detach()),
        }


def kd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> KdTerms:
    """The distillation loss of logits (…, V) against targets (…); a target of −1 is not scored."""
    vocab = student_logits.shape[-1]
    scored = (targets != -1).reshape(-1)
    student = student_logits.float().reshape(-1, vocab)[scored]
    teacher = teacher_logits.float().reshape(-1, vocab)[scored]
    log_q = torch.log_softmax(student / temperature, dim=-1)
    log_p = torch.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    nll = F.cross_entropy(student_logits.float().flatten(0, -2), targets.flatten(), ignore_index=-1)
    return KdTerms(alpha * temperature**2 * kl + (1.0 - alpha) * nll, kl, nll)


# -- GATE-KD-001: one tokenizer, one vocabulary ---------------------------------------------


def vocabulary_outcome(measured: dict[str, Any]) -> Outcome:
    """GATE-KD-001 over both sides' tokenizer hashes, vocabularies and the declared truncation."""
    return measure("GATE-KD-001", measured, holds="teacher and student read the same tokens")


@gate_require("GATE-KD-001", lambda measured: vocabulary_outcome(measured))
def check_vocabularies(measured: dict[str, Any]) -> None:
    """Judge the pairing of teacher and student before anything is distilled."""


def common_logits(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """The first `vocab` logits: a declared truncation of a padded vocabulary (GATE-KD-001)."""
    return logits[..., :vocab]


# -- GATE-KD-003: the identities -------------------------------------------------------------


@torch.no_grad()
def identity_probe(
    student_logits: torch.Tensor, model_nll: torch.Tensor, targets: torch.Tensor, temperature: float
) -> dict[str, float]:
    """|L(α = 0) − the model's own NLL|, that NLL (the difference is judged relative to it: a compiled
    forward's cross-entropy is another kernel than the loss's), and the KL of the student to
    itself, on one batch."""
    plain = kd_terms(student_logits, student_logits, targets, temperature, 0.0)
    return {
        "alpha0_abs_diff": float((plain.loss - model_nll.float()).abs()),
        "model_nll": float(model_nll),
        "self_kl": float(plain.kl.abs()),
    }


def identities_outcome(measured: dict[str, float]) -> Outcome:
    """GATE-KD-003 over an identity probe."""
    return measure("GATE-KD-003", measured, holds="α = 0 is the NLL and a student's KL to itself is 0")


@gate_require("GATE-KD-003", lambda measured: identities_outcome(measured))
def check_identities(measured: dict[str, float]) -> None:
    """Judge the loss's identities on the run's first batch."""


def minimised_kl_outcome(measured: dict[str, float], step: int) -> Outcome:
    """GATE-KD-003 over the loss, KL and NLL a batch's loss minimised and their recomputation."""
    return measure(
        "GATE-KD-003",
        measured,
        step=step,
        holds="the loss minimised is α·T²·KL + (1 − α)·NLL of the teacher's KL",
    )


@gate_require("GATE-KD-003", lambda measured, step: minimised_kl_outcome(measured, step))
def check_minimised_kl(measured: dict[str, float], step: int) -> None:
    """Judge the KL and NLL the loss minimised against those recomputed from the same logits, and
    the loss against their mix."""


# -- GATE-KD-004: the T² is applied ----------------------------------------------------------


def _soft_grad_norm(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """‖∂(α = 1 loss)/∂ student logits‖ at `temperature`."""
    logits = student.clone().requires_grad_(True)
    targets = torch.zeros(student.shape[0], dtype=torch.long)
    kd_terms(logits, teacher, targets, temperature, 1.0).loss.backward()
    assert logits.grad is not None
    return float(logits.grad.norm())


def temperature_probe(thresholds: dict[str, Any] | None = None) -> dict[str, float]:
    """The soft term's gradient norm at the spec's probe temperature over its norm at T = 1.
    `thresholds`: GATE-KD-004's probe_temperature and probe_logit_scale as a record judged under
    them (the integrity checker re-runs the probe a record states); the spec's when None."""
    if thresholds is None:
        spec = load_spec()
        thresholds = {name: spec.threshold("GATE-KD-004", name) for name in PROBE_THRESHOLDS}
    temperature, scale = (float(thresholds[name]) for name in PROBE_THRESHOLDS)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    student = scale * torch.randn(PROBE_SHAPE, generator=generator)
    teacher = student + scale * torch.randn(PROBE_SHAPE, generator=generator)
    hot, cold = _soft_grad_norm(student, teacher, temperature), _soft_grad_norm(student, teacher, 1.0)
    return {"temperature": temperature, "logit_scale": scale, "grad_ratio": hot / cold}


def temperature_outcome() -> Outcome:
    """GATE-KD-004 on the planted case."""
    return measure("GATE-KD-004", temperature_probe(), holds="the soft term's gradient keeps its size at T")


@gate_require("GATE-KD-004", lambda: temperature_outcome())
def check_temperature_scale() -> None:
    """Judge the loss's temperature scaling before a run's first step."""
