"""Direct preference optimisation: sequence log-probabilities, the loss, the implicit rewards.

For a pair (x, y_c, y_r), with log π(y|x) summed over the completion's tokens only:

    h = β · ((log π(y_c|x) − log π(y_r|x)) − (log π_ref(y_c|x) − log π_ref(y_r|x)))
    L = −(1 − ε) · log σ(h) − ε · log σ(−h)          (ε: label noise, 0 by default)

and the implicit rewards r_c = β (log π(y_c|x) − log π_ref(y_c|x)), r_r likewise; the margin is
r_c − r_r = h and a pair is ranked right when it is positive. With the policy equal to the
reference every h is 0 and L = ln 2 whatever ε is: the identity GATE-DPO-001 checks before the
first step. The gates bound here:

- GATE-DPO-001 the loss at the start is ln 2 and the rewards 0 (`check_start_identity`);
- GATE-DPO-003 appending padding changes no sequence's log-probability (`check_padding`);
- GATE-DPO-004 β > 0, something trains, and the margin and accuracy move (`check_progress`);
- GATE-DPO-005 only completion tokens are scored, by the loss written above: the mask, on every
  batch (`check_scored_tokens`); on a cadence, the sums the loss takes against an independent
  path, the loss and rewards against the formula over those sums, and the loss's gradient at
  zero logits against its value at h = 0 (`gradient_reading`, `check_recomputed`).

GATE-DPO-002 (the reference stays frozen) is in stack.tune.frozen, shared with distillation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec
from stack.model.consumed import Consumed, mode_of, record, taping
from stack.model.gpt import GPT
from stack.tune.pairs import PairBatch, collate_width


def sequence_logprobs(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t log p(tokens[b, t] | tokens[b, :t]) over the positions `mask` marks, per row (fp32).

    Position 0 has no prediction; a marked position there is never scored. `torch.where` (not a
    product) keeps an unmarked position's value out even when it is −inf. The sum is taken over
    the scored targets it records (stack.model.consumed), so what GATE-TRAIN-007 compares with
    the pairs' labels is what was summed.
    """
    targets = torch.where(mask[:, 1:], tokens[:, 1:], torch.full_like(tokens[:, 1:], -1))
    logits, _ = model(tokens[:, :-1])
    if taping():  # what it read, and how the model ran (stack.model.consumed)
        record(Consumed(tokens[:, :-1], targets, logits_dtype=logits.dtype, mode=mode_of(model)))
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return torch.where(targets >= 0, logp, torch.zeros_like(logp)).sum(dim=-1)


@dataclass(frozen=True)
class DpoTerms:
    """The loss (with its graph) and, detached, each pair's rewards."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margin(self) -> float:
        """The mean reward margin r_c − r_r over the batch."""
        return float((self.chosen_rewards - self.rejected_rewards).mean())

    @property
    def accuracy(self) -> float:
        """The share of pairs whose chosen completion has the larger reward (ties count as wrong)."""
        return float((self.chosen_rewards > self.rejected_rewards).float().mean())

    def line(self) -> dict[str, float]:
        """The step's metrics: loss, mean rewards, margin and accuracy."""
        return {
            "loss": float(self.loss.detach()),
            "chosen_reward": float(self.chosen_rewards.mean()),
            "rejected_reward": float(self.rejected_rewards.mean()),
            "margin": self.margin,
            "accuracy": self.accuracy,
        }


def dpo_terms(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float, label_noise: float = 0.0
) -> DpoTerms:
    """The DPO loss of a batch whose rows are the chosen sequences, then the rejected ones; with
    `label_noise` ε, conservative DPO's: the expected loss when each pair's preference is flipped
    with probability ε."""
    pairs = policy_logps.shape[0] // 2
    chosen = policy_logps[:pairs] - reference_logps[:pairs]
    rejected = policy_logps[pairs:] - reference_logps[pairs:]
    h = beta * (chosen - rejected)
    loss = -(1.0 - label_noise) * F.logsigmoid(h) - label_noise * F.logsigmoid(-h)
    return DpoTerms(loss.mean(), beta * chosen.detach(), beta * rejected.detach())


# -- GATE-DPO-001: at the start the loss is ln 2 and the rewards are 0 ------------------------


def start_identity_outcome(terms: DpoTerms) -> Outcome:
    """GATE-DPO-001 over the terms of the first batch scored by the starting policy."""
    rewards = torch.cat([terms.chosen_rewards, terms.rejected_rewards])
    measured = {
        "loss": float(terms.loss.detach()),
        "ln2": math.log(2.0),
        "max_abs_reward": float(rewards.abs().max()),
    }
    return measure("GATE-DPO-001", measured, holds="at the start the loss is ln 2 and every reward 0")


@gate_require("GATE-DPO-001", lambda terms: start_identity_outcome(terms))
def check_start_identity(terms: DpoTerms) -> None:
    """Judge the starting policy against the reference before the first update."""


# -- GATE-DPO-003: padding changes nothing ----------------------------------------------------


@torch.no_grad()
def padding_probe(model: GPT, batch: PairBatch, pad_id: int) -> dict[str, Any]:
    """The batch scored at its own width and with pad tokens appended (as many as the spec's
    probe_pad_tokens, as far as the context allows): the largest change of a row's log-prob."""
    wanted = int(load_spec().threshold("GATE-DPO-003", "probe_pad_tokens"))
    width = batch.tokens.shape[1]
    room = model.config.ctx + 1 - width
    wider = collate_width(batch, pad_id, width + min(wanted, room))
    narrow = sequence_logprobs(model, batch.tokens, batch.mask)
    wide = sequence_logprobs(model, wider.tokens, wider.mask)
    return {
        "max_abs_diff": float((narrow - wide).abs().max()),
        "appended": wider.tokens.shape[1] - width,
        "room": room,
    }


def padding_outcome(model: GPT, batch: PairBatch, pad_id: int) -> Outcome:
    """GATE-DPO-003 on one batch."""
    return measure("GATE-DPO-003", padding_probe(model, batch, pad_id), holds="padding changes no log-prob")


@gate_require("GATE-DPO-003", lambda model, batch, pad_id: padding_outcome(model, batch, pad_id))
def check_padding(model: GPT, batch: PairBatch, pad_id: int) -> None:
    """Judge the scoring's padding invariance on the run's first batch."""


# -- GATE-DPO-004: the run learns something -------------------------------------------------


def progress_outcome(beta: float, trainable: int, lines: list[dict[str, float]]) -> Outcome:
    """GATE-DPO-004 over a run's step lines."""
    measured = {
        "beta": beta,
        "trainable_parameters": trainable,
        "margins": [line["margin"] for line in lines],
        "accuracies": [line["accuracy"] for line in lines],
    }
    return measure("GATE-DPO-004", measured, holds="the reward margin and accuracy moved")


@gate_require("GATE-DPO-004", lambda beta, trainable, lines: progress_outcome(beta, trainable, lines))
def check_progress(beta: float, trainable: int, lines: list[dict[str, float]]) -> None:
    """Judge, at the end of an invocation, that its steps moved the margin and the accuracy."""


# -- GATE-DPO-005: only completion tokens are scored -----------------------------------------


def scored_counts(batch: PairBatch) -> dict[str, int]:
    """How the batch's mask departs from its rows' prompt and sequence ends, by kind."""
    counts = {"scored_prompt_tokens": 0, "scored_padding_tokens": 0, "unscored_completion_tokens": 0}
    for row, (start, end) in enumerate(zip(batch.prompt_lens, batch.lengths, strict=True)):
        mask = batch.mask[row]
        counts["scored_prompt_tokens"] += int(mask[:start].sum())
        counts["scored_padding_tokens"] += int(mask[end:].sum())
        counts["unscored_completion_tokens"] += int((~mask[start:end]).sum())
    return {
        **counts,
        "completion_tokens": sum(e - s for s, e in zip(batch.prompt_lens, batch.lengths, strict=True)),
    }


def scored_outcome(batch: PairBatch) -> Outcome:
    """GATE-DPO-005 on one batch."""
    return measure("GATE-DPO-005", scored_counts(batch), holds="only completion tokens are scored")


@gate_require("GATE-DPO-005", lambda batch: scored_outcome(batch))
def check_scored_tokens(batch: PairBatch) -> None:
    """Judge a batch's mask before it is scored."""


def _largest(values: torch.Tensor) -> float:
    """The largest magnitude among `values`, 0 for none."""
    return float(values.abs().max()) if values.numel() else 0.0


def gradient_reading(grad: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """What the loss's gradient at the policy's logits (2B, T, V) shows, taken with every logit of
    policy and reference set to zero: each row's sum is then −n·ln V under both models, so h = 0,
    and at a scored position t of row b the gradient is c_b·(onehot(y_bt) − 1/V), c_b the loss's
    derivative by the row's summed log-probability.

    `targets` (2B, T') are the rows' stated next tokens, −1 where nothing is scored, chosen rows
    first. Returns c read at every stated target (times B, so in units of one pair's share) as
    [least, largest] over the chosen rows and over the rejected rows, and, in the same units, the
    largest departure of the gradient from that shape, a gradient at an unscored position
    included. A stated target the gradient does not reach reads c = 0.
    """
    rows, vocab = targets.shape[0], grad.shape[-1]
    width = min(grad.shape[1], targets.shape[1])
    coefficients = torch.zeros(targets.shape, dtype=torch.float32)
    residual = 0.0
    for row in range(rows):
        g = grad[row].float()
        wanted = targets[row, :width].to(g.device)
        ids = wanted.clamp(min=0).unsqueeze(-1)
        c = torch.where(wanted >= 0, g[:width].gather(-1, ids).squeeze(-1) * vocab / (vocab - 1), 0.0)
        shape = (-c / vocab).unsqueeze(-1).expand(-1, vocab).scatter_add(-1, ids, c.unsqueeze(-1))
        residual = max(residual, _largest(g[:width] - shape), _largest(g[width:]))
        coefficients[row, :width] = c.cpu()
    pairs, scored = rows // 2, targets.cpu() >= 0

    def span(part: slice) -> list[float]:
        read = coefficients[part][scored[part]] * pairs
        return [float(read.min()), float(read.max())] if read.numel() else []

    return {
        "chosen_gradient": span(slice(0, pairs)),
        "rejected_gradient": span(slice(pairs, rows)),
        "gradient_residual": residual * pairs,
    }


def recomputed_outcome(measured: dict[str, Any], step: int) -> Outcome:
    """GATE-DPO-005 over a batch's sums, loss, rewards and loss gradient against their recomputations."""
    return measure(
        "GATE-DPO-005",
        measured,
        step=step,
        holds="the summed log-probabilities are the completions', and the loss is DPO's over them",
    )


@gate_require("GATE-DPO-005", lambda measured, step: recomputed_outcome(measured, step))
def check_recomputed(measured: dict[str, Any], step: int) -> None:
    """Judge the loss's log-probability sums against a plain forward masked by the pairs' labels, and
    the loss, its rewards and its gradient against the formula over those sums."""
