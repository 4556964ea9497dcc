"""The rewards a mixture bandit may be paid (data.bandit.reward; stack.data.bandit plays them),
and EXP3's two moves on them: the step of its log-weights, and the probabilities it wants.

They live in the contracts because GATE-DATA-008 holds every reward the bandit was paid to its
rule, applied to the held-out losses the run measured, every step of its log-weights and every
set of probabilities it asked for to EXP3's rule written out here, apart from the bandit's own
code: the stack plays the rules, the judge and the integrity check apply them again to the
measured values (an update that subtracts the reward, or an exploration share of γ where it
is γ / K, moves the mixture and passes every other check). Both rewards are judged on held-out
windows of each source at every evaluation, never on the raw loss (which pays whatever is
easiest to predict: the post-mortem's repetitive sources).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Reward = Callable[[float, float | None, float | None], float]
# Every arm's log-weight before EXP3's first step.
EXP3_START = 0.0


def improvement(now: float, before: float | None, _reference: float | None) -> float:
    """Relative drop of the held-out loss since the last evaluation, (before − now) / before,
    clipped to [−1, 1] (0 at the first one)."""
    if before is None or before <= 0:
        return 0.0
    return min(1.0, max(-1.0, (before - now) / before))


def excess(now: float, _before: float | None, reference: float | None) -> float:
    """How far the held-out loss is above the source's reference loss, relative to the loss:
    max(now − reference, 0) / now (0 without a reference)."""
    if reference is None or now <= 0:
        return 0.0
    return max(0.0, now - reference) / now


REWARDS: dict[str, Reward] = {"improvement": improvement, "excess": excess}


def exp3_log_weights(before: Mapping[str, float], paid: Mapping[str, float], eta: float) -> dict[str, float]:
    """EXP3's step without importance weighting (every arm's loss is observed): each arm's
    log-weight plus η times the reward it was paid (an arm not paid keeps its log-weight)."""
    return {arm: weight + eta * paid[arm] if arm in paid else weight for arm, weight in before.items()}


def exp3_probabilities(
    log_weights: Mapping[str, float], arms: Sequence[str], gamma: float
) -> dict[str, float]:
    """The probabilities EXP3 wants over `arms` once it exploits: (1 − γ) · softmax(log-weights)
    + γ / K, K the number of arms (the softmax taken from the largest log-weight, which it does
    not change)."""
    top = max(log_weights[arm] for arm in arms)
    weights = {arm: math.exp(log_weights[arm] - top) for arm in arms}
    total = math.fsum(weights.values())
    return {arm: (1 - gamma) * w / total + gamma / len(arms) for arm, w in weights.items()}
