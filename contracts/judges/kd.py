"""The judges of the distillation gates (spec/gates/kd.yaml): pure functions of what a
`stack distill` run measured and the thresholds of the gate.
"""

from __future__ import annotations

from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, has, number
from contracts.judges.dpo import FROZEN_CHECKS, stays_frozen

judges = Judges()


@judges("GATE-KD-002", checks=FROZEN_CHECKS)
def _teacher_stays_frozen(m: Measured, t: Thresholds) -> list[str]:
    """The teacher is a frozen model as DPO's reference is, held to the same rule."""
    return stays_frozen(m, t)


@judges(
    "GATE-KD-001",
    needs=(
        "teacher_tokenizer_identity",
        "student_tokenizer_identity",
        "teacher_vocab",
        "student_vocab",
        "tokenizer_ids",
    ),
)
def _same_tokens(m: Measured, t: Thresholds) -> list[str]:
    shas = (m.get("teacher_tokenizer_identity"), m.get("student_tokenizer_identity"))
    if not all(isinstance(sha, str) for sha in shas):
        raise Malformed("teacher_tokenizer_identity and student_tokenizer_identity must be strings")
    teacher, student, ids = count(m, "teacher_vocab"), count(m, "student_vocab"), count(m, "tokenizer_ids")
    declared = m.get("truncate_to")
    if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
        raise Malformed(f"truncate_to is {declared!r}, not a count or null")
    problems = []
    if shas[0] != shas[1]:
        problems.append("teacher and student have different tokenizers (identity); distillation compares ids")
    if teacher != student and declared is None:
        problems.append(
            f"the teacher's vocabulary has {teacher} rows and the student's {student}; "
            "declare a truncation to the smaller to distil over the common ids"
        )
    if declared is not None and declared != min(teacher, student):
        problems.append(
            f"the declared truncation to {declared} is not the smaller vocabulary, {min(teacher, student)}"
        )
    if declared is not None and declared < ids:
        problems.append(f"the declared truncation to {declared} cuts ids of the {ids}-id tokenizer")
    return problems


@judges(
    "GATE-KD-003",
    checks={
        "identities": ("alpha0_abs_diff", "model_nll", "self_kl"),
        "minimised": ("kl_minimised", "kl_recomputed"),
        "loss": (
            "alpha",
            "temperature",
            "loss_minimised",
            "kl_recomputed",
            "nll_minimised",
            "nll_recomputed",
        ),
    },
)
def _identities(m: Measured, t: Thresholds) -> list[str]:
    """The identities on the first batch, the minimised KL against its recomputation, the loss and
    NLL against theirs, or several of these."""
    problems = []
    if has(m, "loss_minimised", "nll_minimised", "nll_recomputed"):
        problems += _kd_loss_written_out(m, t)
    if has(m, "alpha0_abs_diff", "model_nll", "self_kl"):
        diff, nll, self_kl = (number(m, key) for key in ("alpha0_abs_diff", "model_nll", "self_kl"))
        allowed = t["loss_rtol"] * abs(nll)
        if not diff <= allowed:
            problems.append(
                f"at α = 0 the loss differs from the student's own NLL {nll:.6g} by {diff:.3g} "
                f"(allowed {allowed:.3g}: loss_rtol × that NLL)"
            )
        if not self_kl <= t["self_kl_atol"]:
            problems.append(
                f"the KL of the student to itself is {self_kl:.3g}, not 0 (allowed {t['self_kl_atol']:g})"
            )
    if has(m, "kl_minimised", "kl_recomputed"):
        minimised, recomputed = number(m, "kl_minimised"), number(m, "kl_recomputed")
        allowed = t["kl_atol"] + t["kl_rtol"] * abs(recomputed)
        if not abs(minimised - recomputed) <= allowed:
            problems.append(
                f"the loss minimised a KL of {minimised:.6g} where the teacher's and the student's logits "
                f"give {recomputed:.6g} (allowed {allowed:.3g}): the soft term is not KL(teacher_T ‖ "
                "student_T) over the scored tokens (a temperature on one side, the KL reversed, other "
                "positions)"
            )
    return problems


def _kd_loss_written_out(m: Measured, t: Thresholds) -> list[str]:
    """The NLL minimised against its recomputation, and the loss against α·T²·KL + (1 − α)·NLL of the
    recomputed terms: within loss_rtol of each, beyond what the KL check itself allows the KL."""
    alpha, temperature = number(m, "alpha"), number(m, "temperature")
    kl, nll = number(m, "kl_recomputed"), number(m, "nll_recomputed")
    nll_minimised, loss = number(m, "nll_minimised"), number(m, "loss_minimised")
    problems = []
    if not abs(nll_minimised - nll) <= t["loss_rtol"] * abs(nll):
        problems.append(
            f"the loss minimised an NLL of {nll_minimised:.9g} where the student's logits give {nll:.9g}: "
            "the hard term is not the student's cross-entropy of the scored targets (another model's "
            "logits, a temperature on it, other positions?)"
        )
    soft = alpha * temperature**2
    expected = soft * kl + (1 - alpha) * nll
    allowed = soft * (t["kl_atol"] + t["kl_rtol"] * abs(kl)) + t["loss_rtol"] * abs(expected)
    if not abs(loss - expected) <= allowed:
        problems.append(
            f"the loss minimised is {loss:.9g} where α·T²·KL + (1 − α)·NLL of the recomputed terms is "
            f"{expected:.9g} (α {alpha:g}, T {temperature:g}; allowed {allowed:.3g}): the terms are mixed "
            "with other weights"
        )
    return problems


@judges("GATE-KD-004", needs=("temperature", "logit_scale", "grad_ratio"))
def _temperature_squared(m: Measured, t: Thresholds) -> list[str]:
    problems = [
        f"the probe ran with {key} {number(m, key):g}, the spec's case has {t[name]:g}"
        for key, name in (("temperature", "probe_temperature"), ("logit_scale", "probe_logit_scale"))
        if number(m, key) != t[name]
    ]
    ratio = number(m, "grad_ratio")
    if not t["min_grad_ratio"] <= ratio <= t["max_grad_ratio"]:
        problems.append(
            f"the soft term's gradient at T = {t['probe_temperature']:g} is {ratio:.3g} times its size "
            f"at T = 1 (allowed {t['min_grad_ratio']:g}..{t['max_grad_ratio']:g}): "
            "the T² factor is missing or doubled"
        )
    return problems
