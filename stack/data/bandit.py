"""EXP3 over the sources of a mixture (data.policy = "bandit"), with a reward that cannot feed on repetition.

The reward is the lesson of the post-mortem. A bandit paid by the raw loss of a source (or by how
far that loss falls in absolute terms) prefers whatever is easiest to predict: list-shaped,
repetitive sources lower the cross-entropy trivially, the bandit sends more of them, and the
model degenerates. Two rewards are offered instead, both judged on held-out windows of each
source at every evaluation:

- `improvement` (learning progress): the relative drop of the source's held-out loss since the
  last evaluation, (before − now) / before, clipped to [−1, 1]. A repetitive source is learned
  quickly and then stops paying; a source that is still being learned keeps paying.
- `excess` (DoReMi-style): how far the source's loss is above a reference loss the user gives
  per source (`data.bandit.reference`, e.g. each source's loss under a reference model),
  max(now − reference, 0) / now. A source the model already predicts as well as it can pays 0.

The rewards' rules live in contracts.rewards, where GATE-DATA-008 (check paid) applies them
again to the losses the run measured. Every arm's loss is observed at every evaluation, so the
update is EXP3's exponential weights without importance weighting (which would only add
variance). The probabilities are uniform over
the eligible arms during `warmup_steps` and until every eligible arm has been pulled (served at
least one window); after that they are (1 − γ) · softmax(log-weights) + γ / K. Caps and floors
are applied on top by the policy (stack.data.policy). Arms are the sources that are not
excluded: a restored state is read for those arms only, so an excluded source's residual
weight (the zombie arm) is dropped with a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from contracts.rewards import EXP3_START, REWARDS

log = logging.getLogger(__name__)


class Exp3:
    """The bandit's state and its two moves: the probabilities it wants, and an update by rewards."""

    def __init__(
        self,
        arms: Iterable[str],
        *,
        reward: str,
        gamma: float,
        eta: float,
        warmup_steps: int,
        reference: Mapping[str, float],
    ) -> None:
        self.arms = sorted(arms)
        self.reward, self.gamma, self.eta, self.warmup_steps = reward, gamma, eta, warmup_steps
        self.reference = dict(reference)
        self.log_weights = dict.fromkeys(self.arms, EXP3_START)
        self.pulls = dict.fromkeys(self.arms, 0)
        self.last_loss: dict[str, float | None] = dict.fromkeys(self.arms)
        self.last_reward: dict[str, float] = dict.fromkeys(self.arms, 0.0)
        self.updates = 0

    def exploiting(self, step: int, eligible: Iterable[str]) -> bool:
        """After the warmup, and only once every eligible arm has been pulled."""
        return step > self.warmup_steps and all(self.pulls[arm] > 0 for arm in eligible)

    def wanted(self, step: int, eligible: Iterable[str]) -> dict[str, float]:
        """The probabilities over the eligible arms, before caps and floors."""
        arms = [arm for arm in self.arms if arm in set(eligible)]
        if not arms:
            return {}
        if not self.exploiting(step, arms):
            return {arm: 1.0 / len(arms) for arm in arms}
        top = max(self.log_weights[arm] for arm in arms)
        weights = {arm: math.exp(self.log_weights[arm] - top) for arm in arms}
        total = math.fsum(weights.values())
        return {arm: (1 - self.gamma) * w / total + self.gamma / len(arms) for arm, w in weights.items()}

    def record_pulls(self, served: Mapping[str, int]) -> None:
        """Count the windows each arm served."""
        for arm in self.arms:
            self.pulls[arm] += served.get(arm, 0)

    def update(self, losses: Mapping[str, float]) -> dict[str, float]:
        """One EXP3 step from each arm's held-out loss; returns the rewards paid."""
        reward = REWARDS[self.reward]
        paid = {}
        for arm in self.arms:
            if arm not in losses:
                continue
            now = float(losses[arm])
            paid[arm] = reward(now, self.last_loss[arm], self.reference.get(arm))
            self.log_weights[arm] += self.eta * paid[arm]
            self.last_loss[arm] = now
        self.last_reward.update(paid)
        self.updates += 1
        return paid

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot: the next probabilities follow from it exactly."""
        return {
            "log_weights": dict(self.log_weights),
            "pulls": dict(self.pulls),
            "last_loss": dict(self.last_loss),
            "last_reward": dict(self.last_reward),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the arms this bandit has; an arm the state carries but this one lacks is dropped."""
        for zombie in sorted(set(state["log_weights"]) - set(self.arms)):
            log.warning(
                "bandit state carries arm %r, which is excluded or gone: dropped (GATE-DATA-008)", zombie
            )
        known = self.known_arms(state["log_weights"])
        self.log_weights.update({arm: float(state["log_weights"][arm]) for arm in known})
        self.pulls.update({arm: int(state["pulls"][arm]) for arm in known})
        self.last_loss.update({arm: state["last_loss"][arm] for arm in known})
        self.last_reward.update({arm: float(state["last_reward"][arm]) for arm in known})
        self.updates = int(state["updates"])

    def known_arms(self, saved: Iterable[str]) -> list[str]:
        """The saved arms that are arms of this bandit (the zombie filter)."""
        return sorted(set(saved) & set(self.arms))
