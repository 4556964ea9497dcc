"""The rewards a mixture bandit may be paid (data.bandit.reward; stack.data.bandit plays them).

They live in the contracts because GATE-DATA-008 holds every reward the bandit was paid to its
rule, applied to the held-out losses the run measured: the stack plays the rule, the judge and
the integrity check apply it again to the measured values. Both rewards are judged on held-out
windows of each source at every evaluation, never on the raw loss (which pays whatever is
easiest to predict: the post-mortem's repetitive sources).
"""

from __future__ import annotations

from collections.abc import Callable

Reward = Callable[[float, float | None, float | None], float]


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
