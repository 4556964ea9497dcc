"""The judges of the preference-tuning gates (spec/gates/dpo.yaml): pure functions of what a
`stack dpo` run measured and the thresholds of the gate.

A frozen model is judged by one rule wherever it stands (`stays_frozen`): DPO's reference here,
the distillation teacher in contracts/judges/kd.py.
"""

from __future__ import annotations

import math

from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has, items, number

judges = Judges()


@judges("GATE-DPO-001", needs=("loss", "ln2", "max_abs_reward"))
def _starts_at_ln2(m: Measured, t: Thresholds) -> list[str]:
    loss, ln2, reward = number(m, "loss"), number(m, "ln2"), number(m, "max_abs_reward")
    problems = []
    if not abs(loss - ln2) <= t["loss_atol"]:
        problems.append(
            f"with the policy equal to the reference the loss is {loss:.9g}, not ln 2 = {ln2:.9g} "
            f"(|Δ| {abs(loss - ln2):.3g} > {t['loss_atol']:g}): the reference is not the starting policy"
        )
    if not reward <= t["reward_atol"]:
        problems.append(
            f"an implicit reward of {reward:.3g} at the start (allowed {t['reward_atol']:g}): "
            "the reference scores differently (another checkpoint, dtype or mode?)"
        )
    return problems


# The checks of a frozen model (DPO's reference, the distillation teacher).
FROZEN_CHECKS = {
    # read at the end of the invocation
    "frozen": ("sha256_before", "sha256_after", "training_mode", "requires_grad", "with_grad"),
    # counted at every forward it ran (spec/run_kinds.yaml says which records must hold it)
    "watched": ("forwards", "forwards_in_training", "forwards_tracking_weights"),
}


@judges("GATE-DPO-002", checks=FROZEN_CHECKS)
def stays_frozen(m: Measured, t: Thresholds) -> list[str]:
    before, after = m.get("sha256_before"), m.get("sha256_after")
    if not isinstance(before, str) or not isinstance(after, str):
        raise Malformed("sha256_before and sha256_after must be strings")
    problems = []
    if before != after:
        problems.append("the frozen model's weights changed during the run (sha256 differs)")
    if flag(m, "training_mode"):
        problems.append("the frozen model is in train mode")
    if requires := count(m, "requires_grad"):
        problems.append(f"{requires} of the frozen model's parameters require a gradient")
    if graded := count(m, "with_grad"):
        problems.append(f"{graded} of the frozen model's parameters hold a .grad")
    if has(m, "forwards", "forwards_in_training", "forwards_tracking_weights"):
        ran = count(m, "forwards")
        if training := count(m, "forwards_in_training"):
            problems.append(
                f"{training} of the frozen model's {ran} forward(s) ran with a module in train mode: the "
                "loss got targets from another model than the frozen one"
            )
        if tracking := count(m, "forwards_tracking_weights"):
            problems.append(
                f"{tracking} of the frozen model's {ran} forward(s) ran with autograd on over weights "
                "that require a gradient"
            )
    return problems


@judges("GATE-DPO-003", needs=("max_abs_diff", "appended", "room"))
def _padding_invariant(m: Measured, t: Thresholds) -> list[str]:
    diff, appended, room = number(m, "max_abs_diff"), count(m, "appended"), number(m, "room")
    problems = []
    wanted = min(int(t["probe_pad_tokens"]), max(int(room), 0))
    if appended < wanted:
        problems.append(f"the probe appended {appended} pad token(s), not {wanted}")
    if not diff <= t["max_abs_diff"]:
        problems.append(
            f"appending {appended} pad token(s) moved a sequence's log-probability by {diff:.3g} nats "
            f"(allowed {t['max_abs_diff']:g}): padding is scored or attended to"
        )
    return problems


@judges("GATE-DPO-004", needs=("beta", "trainable_parameters", "margins", "accuracies"))
def _learns(m: Measured, t: Thresholds) -> list[str]:
    beta, trainable = number(m, "beta"), count(m, "trainable_parameters")
    margins, accuracies = items(m, "margins"), items(m, "accuracies")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in margins + accuracies):
        raise Malformed("margins and accuracies must be lists of numbers")
    problems = []
    if not beta > 0:
        problems.append(f"β is {beta:g}; the DPO loss is then ln 2 whatever the policy does")
    if not trainable:
        problems.append("the policy has no trainable parameters")
    span = max(margins) - min(margins) if margins else 0.0
    if not span >= t["min_margin_span"]:
        problems.append(
            f"over {len(margins)} step(s) the mean reward margin spans {span:.3g} "
            f"(at least {t['min_margin_span']:g} wanted): the loss is stuck at ln 2"
        )
    if len(set(accuracies)) < 2 and set(accuracies) != {1}:  # all 1: every pair preferred throughout
        problems.append(f"the accuracy never moved over {len(accuracies)} step(s)")
    return problems


_MASK_COUNTS = {
    "scored_prompt_tokens": "prompt token(s) are scored",
    "scored_padding_tokens": "padding token(s) are scored",
    "unscored_completion_tokens": "completion token(s) are not scored",
}


_SETTINGS = ("beta", "label_noise")


@judges(
    "GATE-DPO-005",
    checks={
        "mask": (*_MASK_COUNTS, "completion_tokens"),
        "recomputed": ("max_abs_logprob_diff", "rows_compared"),
        "loss": (
            *_SETTINGS,
            "max_abs_logprob_diff",
            "loss",
            "chosen_rewards+",
            "rejected_rewards+",
            "policy_logps+",
            "reference_logps+",
        ),
        "gradient": (*_SETTINGS, "chosen_gradient+", "rejected_gradient+", "gradient_residual"),
    },
)
def _completion_only(m: Measured, t: Thresholds) -> list[str]:
    """The batch's mask against its rows' bounds, the loss's sums against their recomputation
    by a plain forward masked by the labels, the loss and rewards against the formula over those
    sums, the loss's gradient at h = 0 against the formula's, or several of these."""
    problems = []
    if has(m, "loss", "policy_logps", "reference_logps"):
        problems += _dpo_loss_written_out(m, t["identity_tol"])
    if has(m, "chosen_gradient", "rejected_gradient", "gradient_residual"):
        problems += _dpo_gradient_at_zero(m, t["gradient_rtol"])
    if has(m, *_MASK_COUNTS, "completion_tokens"):
        problems += [f"{count(m, key)} {text}" for key, text in _MASK_COUNTS.items() if count(m, key)]
        if not count(m, "completion_tokens"):
            problems.append("the batch holds no completion token to score")
    if has(m, "max_abs_logprob_diff", "rows_compared"):
        diff, rows = number(m, "max_abs_logprob_diff"), count(m, "rows_compared")
        if not rows:
            problems.append("no row's log-probability sum was recomputed")
        if not diff <= t["max_abs_logprob_diff"]:
            problems.append(
                f"a row's summed log-probability as the loss took it differs by {diff:.3g} nats from a plain "
                f"forward masked by the pairs' labels (allowed {t['max_abs_logprob_diff']:g}, {rows} rows): "
                "the loss sums other tokens than the completions (a token skipped, a prompt token added)"
            )
    return problems


def _softplus(x: float) -> float:
    """log(1 + eˣ) without overflow: −log σ(−x)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _numbers(m: Measured, key: str) -> list[float]:
    """A list of real numbers."""
    values = items(m, key)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise Malformed(f"{key!r} must be a list of numbers")
    return [float(v) for v in values]


def _dpo_loss_written_out(m: Measured, tol: float) -> list[str]:
    """The objective's loss and rewards against DPO's formula over the plain forward's sums (chosen
    rows first): r = β·(log π − log π_ref), h = r_c − r_r, L = mean of −(1 − ε)·log σ(h) − ε·log σ(−h).
    Each sum may differ from the loss's own by the measured max_abs_logprob_diff d, so a reward may
    move by 2βd and the loss by 4βd; beyond that, tol × (1 + |value|) of float32 rounding."""
    beta, noise, d = number(m, "beta"), number(m, "label_noise"), number(m, "max_abs_logprob_diff")
    policy, reference = _numbers(m, "policy_logps"), _numbers(m, "reference_logps")
    chosen, rejected = _numbers(m, "chosen_rewards"), _numbers(m, "rejected_rewards")
    pairs = len(chosen)
    if len(rejected) != pairs or len(policy) != 2 * pairs or len(reference) != 2 * pairs:
        raise Malformed(
            f"{pairs} chosen and {len(rejected)} rejected rewards for {len(policy)} policy and "
            f"{len(reference)} reference sums"
        )
    rewards = [beta * (p - r) for p, r in zip(policy, reference, strict=True)]
    margins = [rc - rr for rc, rr in zip(rewards[:pairs], rewards[pairs:], strict=True)]
    loss = sum((1 - noise) * _softplus(-h) + noise * _softplus(h) for h in margins) / pairs
    problems = []
    off = [
        (abs(got - want), 2 * beta * d + tol * (1 + abs(want)))
        for got, want in zip(chosen + rejected, rewards, strict=True)
    ]
    if not all(diff <= allowed for diff, allowed in off):
        diff, allowed = max(off)
        problems.append(
            f"a reward the loss gives is {diff:.3g} from β·(log π − log π_ref) over the plain sums (allowed "
            f"{allowed:.3g}): the rewards are not β times the policy's log-ratio to the reference"
        )
    got = number(m, "loss")
    if not abs(got - loss) <= 4 * beta * d + tol * (1 + abs(loss)):
        problems.append(
            f"the loss is {got:.9g} where −(1 − ε)·log σ(h) − ε·log σ(−h) of the plain sums gives {loss:.9g} "
            f"(β {beta:g}, ε {noise:g}; allowed {4 * beta * d + tol * (1 + abs(loss)):.3g})"
        )
    return problems


def _dpo_gradient_at_zero(m: Measured, rtol: float) -> list[str]:
    """The loss's derivative by each row's log-probability, read with every logit zero (h = 0), in
    units of one pair's share: −β(1 − 2ε)/2 on the chosen rows, +β(1 − 2ε)/2 on the rejected, and a
    gradient of that shape at every scored position and nowhere else, each within rtol of β(1 − 2ε)/2."""
    beta, noise = number(m, "beta"), number(m, "label_noise")
    size = beta * (1 - 2 * noise) / 2
    allowed = rtol * abs(size)
    read = {side: _numbers(m, f"{side}_gradient") for side in ("chosen", "rejected")}
    if any(len(values) != 2 for values in read.values()):
        raise Malformed("'chosen_gradient' and 'rejected_gradient' must each be [least, largest]")
    problems = []
    wanted = {"chosen": -size, "rejected": size}
    if not all(abs(v - wanted[side]) <= allowed for side, values in read.items() for v in values):
        problems.append(
            "at h = 0 the loss's derivative per pair by log π(y_c) reads {0[0]:.6g}..{0[1]:.6g} and by "
            "log π(y_r) {1[0]:.6g}..{1[1]:.6g}, not ∓β(1 − 2ε)/2 = ∓{2:.6g} (allowed ±{3:.3g}): the loss is "
            "not −(1 − ε)·log σ(h) − ε·log σ(−h) of h = β·(policy − reference log-ratios) (policy and "
            "reference swapped, β left out, the label noise on the other side?)".format(
                read["chosen"], read["rejected"], size, allowed
            )
        )
    residual = number(m, "gradient_residual")
    if not residual <= allowed:
        problems.append(
            f"the loss's gradient at zero logits departs by {residual:.3g} per pair (allowed {allowed:.3g}) "
            "from a row's log-probability of its stated targets: it scores other tokens or positions"
        )
    return problems
