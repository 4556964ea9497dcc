"""Early stopping that judges signal, not noise (GATE-EVAL-001, GATE-EVAL-002).

A run stopped on one noisy evaluation loses everything it would have learnt after. Three guards
stand between noise and a stop: the held-out loss must be precise enough to tell early stopping's
minimum improvement from noise, or early stopping is off for the run (EVAL-001), the
configuration must be patient in evaluations and in epochs (EVAL-002), and an evaluation counts
as an improvement only when it beats the best loss by more than its own standard error (EVAL-002).
A small held-out set is no refusal: the run trains, without early stopping, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from contracts.derive.training import finite_or_text, improves, mean_and_stderr
from contracts.errors import GateViolation
from contracts.gates import Outcome, gate_require, measure
from contracts.judges.base import same_number
from contracts.judges.eval import heldout_precise
from contracts.spec import load_spec
from stack.data.heldout import set_size_measured


def _set_outcome(batches: list[torch.Tensor]) -> Outcome:
    return measure("GATE-EVAL-001", set_size_measured([batch.cpu().numpy() for batch in batches]))


@gate_require("GATE-EVAL-001", lambda batches: _set_outcome(batches))
def check_heldout_set(batches: list[torch.Tensor]) -> None:
    """Refuse a held-out set with no window, or one that holds a window twice."""


def judge_heldout_set(batches: list[torch.Tensor], repeats_remedy: Callable[[], str | None]) -> None:
    """`check_heldout_set`, whose halt names `repeats_remedy`'s remedy where the held-out split
    itself repeats windows (duplicated documents or examples); None from it means the run's reader
    repeated them, the stack's fault, which no setting mends. The record keeps the judge's message,
    which the checker derives again from the measured values; only the line the run halts with
    gains the remedy."""
    try:
        check_heldout_set(batches)
    except GateViolation as fired:
        remedy = repeats_remedy() if (fired.measured or {}).get("distinct_windows") else None
        if remedy is None:
            raise
        message = f"{fired.message}; {remedy}"
        raise GateViolation(fired.gate_id, fired.revision, message, fired.measured, fired.threshold) from None


def _noise_outcome(losses: list[float], early_stop: bool, step: int) -> Outcome:
    stderr = mean_and_stderr(losses)[1] if len(losses) >= 2 else math.nan
    measured = {
        "scored_losses": len(losses),
        "heldout_stderr": finite_or_text(stderr),
        "early_stop": early_stop,
    }
    return measure("GATE-EVAL-001", measured, step=step, holds="early stopping judges only a precise loss")


@gate_require("GATE-EVAL-001", _noise_outcome)
def check_heldout_noise(losses: list[float], early_stop: bool, step: int) -> None:
    """Every evaluation: early stopping (`early_stop`: whether it judges these per-batch `losses`)
    judges only a held-out loss whose standard error is within GATE-EVAL-001's min_improvement."""


def _config_outcome(patience: int, min_epochs: float) -> Outcome:
    return measure("GATE-EVAL-002", {"patience": patience, "min_epochs": min_epochs})


@gate_require("GATE-EVAL-002", lambda patience, min_epochs: _config_outcome(patience, min_epochs))
def check_early_stop_config(patience: int, min_epochs: float) -> None:
    """Refuse an impatient early-stopping configuration; a waiver of GATE-EVAL-002 lets it through."""


def _stderr_outcome(heldout_stderr: float, step: int) -> Outcome:
    stderr = heldout_stderr if math.isfinite(heldout_stderr) else str(heldout_stderr)
    return measure("GATE-EVAL-002", {"heldout_stderr": stderr}, step=step)


def _stop_outcome(epoch: float, evals_without_improvement: int, step: int) -> Outcome:
    measured = {"stop_epoch": epoch, "stop_evals": evals_without_improvement}
    return measure("GATE-EVAL-002", measured, step=step, holds="the stop is patient and past the epoch floor")


@gate_require("GATE-EVAL-002", _stop_outcome)
def check_stop(epoch: float, evals_without_improvement: int, step: int) -> None:
    """A stop about to fire is judged on the epoch and the patience it fires at."""


@gate_require("GATE-EVAL-002", lambda heldout_stderr, step: _stderr_outcome(heldout_stderr, step))
def check_stderr(heldout_stderr: float, step: int) -> None:
    """Every evaluation: the standard error that decides improvements is positive and finite."""


def _aggregated_outcome(
    losses: list[float],
    set_batches: int,
    asked_batches: int,
    reported: tuple[float, float],
    judged: tuple[float, float] | None,
    forwards: list[float] | None,
    step: int,
) -> Outcome:
    mean, stderr = mean_and_stderr(losses)
    measured = {
        "set_batches": set_batches,
        "asked_batches": asked_batches,
        "averaged_losses": len(losses),
        "losses_mean": mean,
        "losses_stderr": stderr,
        "reported_loss": reported[0],
        "reported_stderr": reported[1],
    }
    if judged is not None:
        measured |= {"judged_loss": judged[0], "judged_stderr": judged[1]}
    if forwards is not None:
        differ = sum(1 for a, b in zip(losses, forwards, strict=False) if not same_number(a, b))
        measured |= {"compared_losses": len(forwards), "mismatched_losses": differ}
    # JSON has no NaN: a non-finite value is kept as text, which the judge reads back.
    measured = {k: finite_or_text(v) for k, v in measured.items()}
    return measure("GATE-EVAL-002", measured, step=step, holds="the evaluation's numbers are every batch's")


@gate_require("GATE-EVAL-002", _aggregated_outcome)
def check_aggregated(
    losses: list[float],
    set_batches: int,
    asked_batches: int,
    reported: tuple[float, float],
    judged: tuple[float, float] | None,
    forwards: list[float] | None,
    step: int,
) -> None:
    """Every evaluation, before its line is written: the held-out loss and standard error it
    reports, and those early stopping judged (`judged`, None when it is off), are mean_and_stderr
    of `losses`, each of the set's `set_batches` batches' loss; and, for an objective whose loss is
    the model's cross-entropy, each of those is the one its forward recorded (`forwards`, else
    None); and `set_batches`, the batches the evaluation's forwards scored, are `asked_batches`, the
    set the run's recorded config asks for (contracts.heldout, check asked). A mean that leaves out a
    batch, a stopper handed some of the losses, a held-out loss altered after the forward, or a set
    sized by a default the config overrode moves them; the forwards' reads are GATE-EVAL-001's."""


def _remedy(losses: int, stderr: float, wanted: float) -> str:
    """What turns early stopping on: a standard error falls as one over the root of the held-out
    batches averaged, so about losses × (stderr / wanted)² batches bring it within `wanted`; a
    split too small for them needs more held out."""
    if losses < 2 or not math.isfinite(stderr):
        return "hold out more examples or text to turn it on (at least 2 held-out batches)"
    needed = math.ceil(losses * (stderr / wanted) ** 2)
    return (
        f"about {needed:,} held-out batches would bring it within (--set eval.batches={needed}, where "
        "the held-out split holds that many), or hold out more examples or text to turn it on"
    )


class EarlyStopper:
    """Decides when held-out loss has stopped improving; prevents stopping a run on noise.

    Improvement is measured against the best loss at the last significant improvement, so a slow
    steady descent whose single steps are each within the noise still adds up to an improvement.
    The patience and epoch floor are judged by `check_early_stop_config`, which the loop calls at
    start-up only when early stopping is on (a stopper may exist in a run that never consults it).
    """

    def __init__(self, patience: int, min_epochs: float) -> None:
        self.patience = patience
        self.min_epochs = min_epochs
        self.stderr_multiple = load_spec().threshold("GATE-EVAL-002", "improvement_stderr_multiple")
        self.best: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.stop_reason: str | None = None
        self.judged: tuple[float, float] | None = None  # the last evaluation's mean and error, as judged
        self.min_improvement = load_spec().threshold("GATE-EVAL-001", "min_improvement")
        self.off: str | None = None  # why early stopping no longer judges this run (None: it does)

    def judges(self, heldout_losses: list[float]) -> bool:
        """Whether early stopping may judge these per-batch held-out losses: only while their
        standard error is within GATE-EVAL-001's min_improvement. The first evaluation that is not
        turns early stopping off for the run (`off` says why): a set that noisy once is that noisy
        throughout, and a stop on it would be a stop on noise."""
        if self.off is not None:
            return False
        n = len(heldout_losses)
        stderr = mean_and_stderr(heldout_losses)[1] if n >= 2 else math.nan
        if heldout_precise(n, stderr, self.min_improvement):
            return True
        self.judged = None
        self.off = (
            f"early stopping is off: the held-out loss's standard error is {stderr:.3g} over {n} "
            f"held-out losses, above the {self.min_improvement} nats early stopping must tell from "
            f"noise (GATE-EVAL-001 min_improvement); {_remedy(n, stderr, self.min_improvement)}"
        )
        return False

    def observe(self, heldout_losses: list[float], epoch: float, step: int) -> bool:
        """Take one held-out evaluation's per-batch losses; True means stop now (`stop_reason` says why).

        The standard error is computed here from the losses, so no caller can hand the stopper a
        shrunken one that makes noise look like improvement.
        """
        heldout_loss, heldout_stderr = mean_and_stderr(heldout_losses)
        self.judged = (heldout_loss, heldout_stderr)  # what GATE-EVAL-002's judged check compares
        check_stderr(heldout_stderr, step)
        if improves(self.best, heldout_loss, heldout_stderr, self.stderr_multiple):
            self.best = heldout_loss
            self.best_step = step
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        if self.evals_without_improvement >= self.patience and epoch >= self.min_epochs:
            check_stop(epoch, self.evals_without_improvement, step)
            self.stop_reason = (
                f"held-out loss has not improved by more than {self.stderr_multiple} standard "
                f"error(s) on {self.best:.6g} (step {self.best_step}) for "
                f"{self.evals_without_improvement} evaluations; epoch {epoch:.3g} >= {self.min_epochs}"
            )
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """The best loss, where it was reached and the patience spent, JSON-serialisable."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "stop_reason": self.stop_reason,
            "off": self.off,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so a resumed run keeps the patience it has spent."""
        self.best = state["best"]
        self.best_step = state["best_step"]
        self.evals_without_improvement = int(state["evals_without_improvement"])
        self.stop_reason = state["stop_reason"]
        self.off = state.get("off")  # absent from a checkpoint written before early stopping could turn off
