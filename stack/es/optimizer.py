"""Adam on the flat parameter vector, stepped with an estimated gradient instead of `.grad`.

Evolution strategies never back-propagate, so nothing writes `.grad` (GATE-ES-001 checks that
nothing does); the estimate ĝ is handed to `ascend`, which climbs the fitness:

    m ← β₁m + (1 − β₁)ĝ,   v ← β₂v + (1 − β₂)ĝ²,   θ ← θ + lr · m̂ / (√v̂ + eps)

with m̂, v̂ the bias-corrected moments (Kingma & Ba; OpenAI-ES uses the same Adam). It is a
torch Optimizer so that its moments and step count are saved and restored by the checkpoint's
optimizer state like any other (stack.train.checkpoint), which is what makes a resume exact.
"""

from __future__ import annotations

import torch

# Adam's constants as OpenAI-ES uses them; GATE-ES-006 recomputes every step with these.
BETAS, EPS = (0.9, 0.999), 1e-8


class EsAdam(torch.optim.Optimizer):
    """Adam over one flat vector θ, ascending an estimated gradient."""

    def __init__(
        self, theta: torch.Tensor, lr: float, betas: tuple[float, float] = BETAS, eps: float = EPS
    ) -> None:
        super().__init__([theta], {"lr": lr, "betas": betas, "eps": eps})

    @property
    def theta(self) -> torch.Tensor:
        """The vector being optimised."""
        return self.param_groups[0]["params"][0]

    @torch.no_grad()
    def ascend(self, gradient: torch.Tensor) -> None:
        """One Adam step of θ along `gradient` (uphill: the fitness is maximised)."""
        group = self.param_groups[0]
        theta, (beta1, beta2) = self.theta, group["betas"]
        state = self.state[theta]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(theta)
            state["exp_avg_sq"] = torch.zeros_like(theta)
        state["step"] += 1
        step = int(state["step"])
        state["exp_avg"].mul_(beta1).add_(gradient, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        m_hat = state["exp_avg"] / (1 - beta1**step)
        v_hat = state["exp_avg_sq"] / (1 - beta2**step)
        theta.add_(m_hat / (v_hat.sqrt() + group["eps"]), alpha=group["lr"])
