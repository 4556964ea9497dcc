"""Corpus adequacy (GATE-DATA-004): is the planned training too repetitive, or the model data-starved?

Two ratios the training loop records before it starts:
  repeats              = planned tokens / unique train tokens (how many passes over the data)
  tokens_per_parameter = planned tokens / parameters (Chinchilla's ~20 is the threshold)
The gate is a warning: beyond either limit the ledger records WARN and training goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure
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

    @property
    def adequate(self) -> bool:
        """Whether both ratios are within their limits."""
        return self.repeats <= self.max_repeats and self.tokens_per_parameter >= self.min_tokens_per_parameter

    def outcome(self) -> Outcome:
        """GATE-DATA-004's outcome for the ledger."""
        problems = []
        if self.repeats > self.max_repeats:
            problems.append(f"the data would be repeated {self.repeats:.2f} times (limit {self.max_repeats})")
        if self.tokens_per_parameter < self.min_tokens_per_parameter:
            problems.append(
                f"{self.tokens_per_parameter:.2f} training tokens per parameter "
                f"(at least {self.min_tokens_per_parameter} wanted)"
            )
        return Outcome(
            ok=not problems,
            message="; ".join(problems) or "corpus adequate for the planned run",
            measured={"repeats": self.repeats, "tokens_per_parameter": self.tokens_per_parameter},
            threshold={
                "max_repeats": self.max_repeats,
                "min_tokens_per_parameter": self.min_tokens_per_parameter,
            },
        )


@gate_ensure("GATE-DATA-004", lambda result: result.outcome())
def corpus_adequacy(planned_tokens: int, unique_train_tokens: int, n_params: int) -> CorpusAdequacy:
    """Both ratios for a planned run; recorded as PASS or WARN in the active ledger, never raised."""
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
    )
