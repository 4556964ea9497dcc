"""Corpus adequacy (GATE-DATA-004): is the planned training too repetitive, or the model data-starved?

Two ratios the training loop records before it starts:
  repeats              = planned tokens / unique train tokens (how many passes over the data)
  tokens_per_parameter = planned tokens / parameters (Chinchilla's ~20 is the threshold)
The gate is a warning: beyond either limit the ledger records WARN and training goes on.

Chinchilla's ratio sizes pretraining: a run that started from a checkpoint's weights (a fine-tune,
its start measured as GATE-TRAIN-008's check start measures it: `start_from` "checkpoint") is
judged on repeats alone: otherwise every `stack sft` of a few thousand examples would warn that
its model was data-starved, a line a user learns to skip.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, measure
from contracts.judges import judge
from contracts.spec import load_spec


@dataclass(frozen=True)
class CorpusAdequacy:
    """The two ratios, the limits they were judged against, and the verdict."""

    planned_tokens: int
    unique_train_tokens: int
    n_params: int
    repeats: float
    tokens_per_parameter: float
    max_repeats: float
    min_tokens_per_parameter: float
    start_from: str  # "seed": initialised weights; "checkpoint": a checkpoint's (a fine-tune)

    @property
    def measured(self) -> dict[str, float | str]:
        """The two ratios and the run's start as GATE-DATA-004's judge reads them."""
        return {
            "repeats": self.repeats,
            "tokens_per_parameter": self.tokens_per_parameter,
            "start_from": self.start_from,
        }

    @property
    def adequate(self) -> bool:
        """Whether both ratios are within their limits (the gate's judge decides)."""
        return not judge("GATE-DATA-004", self.measured)

    def outcome(self) -> Outcome:
        """GATE-DATA-004's outcome for the ledger."""
        return measure("GATE-DATA-004", self.measured, holds="corpus adequate for the planned run")


@gate_ensure("GATE-DATA-004", lambda result: result.outcome())
def corpus_adequacy(
    planned_tokens: int, unique_train_tokens: int, n_params: int, *, start_from: str
) -> CorpusAdequacy:
    """Both ratios for a planned run that started from `start_from` ("seed" or "checkpoint");
    recorded as PASS or WARN in the active ledger, never raised."""
    for name, value in (
        ("planned_tokens", planned_tokens),
        ("unique_train_tokens", unique_train_tokens),
        ("n_params", n_params),
    ):
        if value < 1:
            raise BadInput(f"{name}={value} must be >= 1 to judge corpus adequacy")
    spec = load_spec()
    return CorpusAdequacy(
        planned_tokens=planned_tokens,
        unique_train_tokens=unique_train_tokens,
        n_params=n_params,
        repeats=planned_tokens / unique_train_tokens,
        tokens_per_parameter=planned_tokens / n_params,
        max_repeats=float(spec.threshold("GATE-DATA-004", "max_repeats")),
        min_tokens_per_parameter=float(spec.threshold("GATE-DATA-004", "min_tokens_per_parameter")),
        start_from=start_from,
    )
