"""Judges of the preference-tuning and distillation gates (GATE-DPO-…, GATE-KD-…, GATE-SYNTH-…).

Imported at the end of contracts.judges, which registers them; each is a pure function of what
a `stack dpo`, `stack distill` or `stack synth` run measured and the thresholds of the gate.
"""

from __future__ import annotations

import math

from contracts.judges import (
    CHECKS,
    Malformed,
    Measured,
    Thresholds,
    count,
    flag,
    has,
    items,
    judges,
    number,
    seeded_problems,
)
from contracts.synth_budget import PARTS, part_budget, text_tokens


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


@judges(
    "GATE-DPO-002",
    "GATE-KD-002",
    checks={
        # read at the end of the invocation
        "frozen": ("sha256_before", "sha256_after", "training_mode", "requires_grad", "with_grad"),
        # counted at every forward it ran (rev 2; spec/run_kinds.yaml asks it of records from 1.15.0)
        "watched": ("forwards", "forwards_in_training", "forwards_tracking_weights"),
    },
)
def _stays_frozen(m: Measured, t: Thresholds) -> list[str]:
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
        "identities": ("alpha0_abs_diff", "self_kl"),
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
    if has(m, "alpha0_abs_diff", "self_kl"):
        diff, self_kl = number(m, "alpha0_abs_diff"), number(m, "self_kl")
        if not diff <= t["alpha0_atol"]:
            problems.append(
                f"at α = 0 the loss differs from the plain NLL by {diff:.3g} (allowed {t['alpha0_atol']:g})"
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


def _budget_problems(m: Measured) -> list[str]:
    """Each continuation of a synthesis against contracts.synth_budget: the tokens it drew are the
    budget of its part under the stated setting, the context and its prompt's length, and its text
    was decoded from the tokens drawn before the first end-of-text (all of them without one), so a
    part ends at its end-of-text or is exactly its budget long."""
    ctx = count(m, "ctx")
    asked = {part: count(m, f"max_{part}_tokens") for part in PARTS}
    short, cut = [], []
    for c in items(m, "continuations"):
        if not isinstance(c, dict) or c.get("part") not in PARTS:
            raise Malformed(f"a continuation {c!r} is not {{part, prompt_tokens, drawn, eot_at, text}}")
        drawn, eot_at = count(c, "drawn"), c.get("eot_at")
        if eot_at is not None and (isinstance(eot_at, bool) or not isinstance(eot_at, int)):
            raise Malformed(f"a continuation's eot_at is {eot_at!r}, not a position or null")
        budget = part_budget(c["part"], asked[c["part"]], ctx, count(c, "prompt_tokens"))
        if drawn != budget:
            short.append(f"{c['part']} drew {drawn} token(s), its budget {budget}")
        if count(c, "text") != text_tokens(drawn, eot_at):
            cut.append(f"{c['part']} keeps {c['text']} of {drawn} drawn (end-of-text at {eot_at})")
    problems = []
    if short:
        problems.append(
            f"{len(short)} continuation(s) drew other than the budget contracts.synth_budget gives "
            f"max_instruction_tokens {asked['instruction']}, max_response_tokens {asked['response']} and "
            f"ctx {ctx} (first: {short[0]}): a budget read from the wrong setting?"
        )
    if cut:
        problems.append(
            f"{len(cut)} continuation(s) keep other tokens than those drawn before the end-of-text "
            f"(first: {cut[0]})"
        )
    return problems


# The reasons `stack synth` may drop a sample for (stack.tune.synth reads them from here).
SYNTH_REASONS = ("short", "repetitive", "duplicate", "no_room")


@judges("GATE-SYNTH-001", needs=("generated", "kept", "lines", "dropped"))
def _counts_add_up(m: Measured, t: Thresholds) -> list[str]:
    generated, kept, lines = count(m, "generated"), count(m, "kept"), count(m, "lines")
    dropped = m.get("dropped")
    if not isinstance(dropped, dict):
        raise Malformed(f"'dropped' is {dropped!r}, not an object of counts by reason")
    problems = [
        f"drops under an unknown reason {reason!r}" for reason in dropped if reason not in SYNTH_REASONS
    ]
    drops = sum(count(dropped, reason) for reason in dropped)
    if kept + drops != generated:
        problems.append(
            f"{generated} generated but {kept} kept and {drops} dropped: "
            f"{generated - kept - drops} unaccounted for"
        )
    if lines != kept:
        problems.append(f"the file holds {lines} record(s), the report says {kept} were kept")
    return problems


@judges(
    "GATE-SYNTH-002",
    checks={
        "replay": ("replayed", "generated", "mismatched"),
        # rev 2: the samples were drawn from the state a generator seeded with the stated seed holds
        "seeded": ("seed", "generator_device", "generator_state_sha256", "seeded_state_sha256"),
        # rev 3: every continuation drew the budget contracts.synth_budget gives the stated length
        # setting, the context and its prompt, and its text is what it drew before the end-of-text
        "budgets": ("continuations", "ctx", "max_instruction_tokens", "max_response_tokens"),
    },
)
def _replays(m: Measured, t: Thresholds) -> list[str]:
    problems = seeded_problems(m) if has(m, *CHECKS["GATE-SYNTH-002"]["seeded"]) else []
    if has(m, *CHECKS["GATE-SYNTH-002"]["budgets"]):
        problems += _budget_problems(m)
    if not has(m, "replayed", "generated", "mismatched"):
        return problems
    replayed, generated, mismatched = count(m, "replayed"), count(m, "generated"), count(m, "mismatched")
    if replayed < min(int(t["replay_samples"]), generated):
        problems.append(
            f"only {replayed} sample(s) were replayed, not {min(int(t['replay_samples']), generated)}"
        )
    if mismatched:
        problems.append(f"{mismatched} of {replayed} sample(s) came out otherwise from the same seed")
    return problems
