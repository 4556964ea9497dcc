"""Judges of GATE-TRAIN-007 and GATE-ES-005: what a loss consumed against what its batch states.

Imported at the end of contracts.judges, which registers them; pure functions of the counts and
hashes `stack.train.consumption.Tally` measured, like every judge. One rule (`consumed_problems`)
for both: a training step's loss and an evolution-strategies fitness are held to their batch alike.
"""

from __future__ import annotations

import math

from contracts.judges import (
    Malformed,
    Measured,
    Thresholds,
    count,
    has,
    judges,
    mode_problems,
    number,
    precision_problems,
    same_number,
)

# The mode a training step runs each scoring in, as the mode check's message says it.
_TRAINING_MODES = "a training step's (the trained model in training mode, a frozen one in evaluation mode)"
# What a difference at a position means, said in the message of each count that is not zero.
_MISMATCHES = {
    "mismatched_targets": "target position(s) differ from the batch's (another mask, or other ids)",
    "mismatched_inputs": "input token(s) differ from the batch's",
    "mismatched_docs": (
        "position(s) were given other document ids than the batch's (none at all: attention "
        "crossed the packed examples)"
    ),
}


# The measured keys of a comparison of what a loss consumed with what its batch states.
_CONSUMED = (
    "scorings",
    "stated_scorings",
    "targets",
    "stated_targets",
    "targets_sha256",
    "stated_targets_sha256",
    *_MISMATCHES,
)


@judges(
    "GATE-TRAIN-007",
    checks={
        "consumed": _CONSUMED,
        "gradient": ("loss_gradient_deviation",),
        "precision": ("precision", "logits_dtypes"),
        "mode": ("modes", "mismatched_modes"),
        "logged": ("logged_loss", "forward_loss"),
        "inference": ("inference_logits_deviation", "inference_loss_deviation"),
        # rev 6: over every window of each split, the statement names the manifest's supervised tokens
        "manifest": ("stated_split_targets+", "split_supervised_tokens+"),
        # rev 7: what each LoRA adapter's A read in a training forward shows the configured dropout
        "dropout": (
            "dropout_p",
            "dropout_adapters",
            "dropout_unread",
            "dropout_elements",
            "dropout_zeroed",
            "dropout_scale_error",
        ),
    },
)
def _consumed_as_stated(m: Measured, t: Thresholds) -> list[str]:
    """The loss read what the batch states (every step, from the tape) and, where a probe read its
    gradient at uniform logits, scored it as a mean cross-entropy: the same targets with another
    value (smoothed labels, a sum for a mean, a mean over positions it did not score) move the
    gradient off that identity. Each scoring ran in the mode a training step runs it in, and at a
    probe the loss read the logits the model serves."""
    problems = consumed_problems(m) if has(m, "scorings") else []
    if has(m, "precision", "logits_dtypes"):
        problems += precision_problems(m, "the loss")
    if has(m, "modes", "mismatched_modes"):
        problems += mode_problems(m, "the step's loss", _TRAINING_MODES)
    if has(m, "inference_logits_deviation", "inference_loss_deviation"):
        problems += _inference_problems(m, t["inference_rtol"])
    if has(m, "logged_loss", "forward_loss"):
        problems += logged_problems(m)
    if has(m, "stated_split_targets", "split_supervised_tokens"):
        problems += _statement_problems(m)
    if has(m, "dropout_p", "dropout_zeroed"):
        problems += _dropout_problems(m, t)
    if has(m, "loss_gradient_deviation"):
        deviation = number(m, "loss_gradient_deviation")
        if not deviation <= t["loss_gradient_atol"]:
            problems.append(
                f"the loss's gradient at uniform logits is {deviation:.3g} from the mean cross-entropy's "
                f"(atol {t['loss_gradient_atol']:g}): the targets are scored with another value "
                "(smoothed labels? a sum for a mean? a mean over unscored positions?)"
            )
    return problems


def _dropout_problems(m: Measured, t: Thresholds) -> list[str]:
    """What the adapters' A matrices read in a training forward against dropout(x) at the configured
    rate p: of the n input elements that are not 0, the share read as 0 within dropout_sigmas
    standard deviations of a Binomial(n, p) of n·p, every other element read as x / (1 − p) within
    dropout_scale_ulps units of its dtype's epsilon; at p = 0, the input exactly."""
    p, adapters = number(m, "dropout_p"), count(m, "dropout_adapters")
    n, zeroed, error = (
        count(m, "dropout_elements"),
        count(m, "dropout_zeroed"),
        number(m, "dropout_scale_error"),
    )
    if not adapters:
        return ["no LoRA adapter was handed an input in the training forward measured"]
    problems = []
    if unread := count(m, "dropout_unread"):
        problems.append(
            f"{unread} of {adapters} adapter(s) handed an input had their A read other inputs, or none: "
            "A's product is not over the adapter's own (dropped) input"
        )
    if p == 0:
        if zeroed or error:
            problems.append(
                f"lora.dropout is 0, but A read {zeroed} of {n} input element(s) as 0 and the rest up to "
                f"{error:.3g} ε from the input: a dropout drawn where none is configured"
            )
        return problems
    bound = t["dropout_sigmas"] * math.sqrt(n * p * (1 - p))
    if not n or abs(zeroed - n * p) > bound:
        problems.append(
            f"A read {zeroed} of {n} nonzero input element(s) as 0 where lora.dropout {p:g} zeroes "
            f"{n * p:.1f} ± {bound:.1f} ({t['dropout_sigmas']:g} σ): the configured dropout is not drawn "
            "on what A reads (skipped, drawn in the wrong mode, or at another rate)"
        )
    if not error <= t["dropout_scale_ulps"]:
        problems.append(
            f"the elements A read that dropout kept are up to {error:.3g} ε from x / (1 − p) (allowed "
            f"{t['dropout_scale_ulps']:g}): the survivors are not rescaled by 1 / (1 − {p:g}), or A read "
            "something the adapter was not handed"
        )
    return problems


def logged_problems(m: Measured) -> list[str]:
    """The loss a step logs against the loss its forwards computed: the same float."""
    logged, forward = number(m, "logged_loss"), number(m, "forward_loss")
    if same_number(logged, forward):
        return []
    return [
        f"the step logs a loss of {logged:.8g}, but its forwards computed {forward:.8g}: the "
        "loss was scaled, dropped or mislabelled between the model and the metrics line"
    ]


def _inference_problems(m: Measured, rtol: float) -> list[str]:
    """The logits the loss read, and the loss, against the model's plain inference forward's."""
    logits, loss = number(m, "inference_logits_deviation"), number(m, "inference_loss_deviation")
    if logits <= rtol and loss <= rtol:
        return []
    return [
        f"the logits the loss read are {logits:.3g} (× the largest logit) and the loss {loss:.3g} (× itself) "
        f"from the model's plain forward without targets and its mean cross-entropy (rtol {rtol:g}): the "
        "function the loss trains is not the one evaluated, saved and served (a norm, a scale or a "
        "layer the loss path skips or adds?)"
    ]


def _statement_problems(m: Measured) -> list[str]:
    """Per split, the targets the statement names over every window against the manifest's count."""
    stated, manifest = m.get("stated_split_targets"), m.get("split_supervised_tokens")
    if not isinstance(stated, dict) or not isinstance(manifest, dict) or set(stated) != set(manifest):
        raise Malformed("stated_split_targets and split_supervised_tokens must name the same splits")
    return [
        f"over every window of the {split} split the batches state {count(stated, split)} target(s) where "
        f"the manifest counts {count(manifest, split)} supervised token(s): the labels or the statement "
        "supervise padding, or positions no window scores"
        for split in sorted(manifest)
        if count(stated, split) != count(manifest, split)
    ]


def consumed_problems(m: Measured) -> list[str]:
    """What the loss read against what the batch states: scorings, targets, positions, hashes."""
    scorings, stated = count(m, "scorings"), count(m, "stated_scorings")
    hashes = (m.get("targets_sha256"), m.get("stated_targets_sha256"))
    if not all(isinstance(h, str) for h in hashes):
        raise Malformed("targets_sha256 and stated_targets_sha256 must be strings")
    problems = []
    if scorings != stated:
        problems.append(
            f"the loss recorded {scorings} scoring(s) of the batch where {stated} were due: a loss "
            "computed outside the model's forward or the preference scoring, or a scoring left out"
        )
    targets, stated_targets = count(m, "targets"), count(m, "stated_targets")
    if targets != stated_targets:
        problems.append(
            f"the loss scored {targets} target position(s), the batch marks {stated_targets}: it trains "
            "on tokens the data does not supervise, or skips ones it does"
        )
    problems += [f"{count(m, key)} {what}" for key, what in _MISMATCHES.items() if count(m, key)]
    if hashes[0] != hashes[1] and not problems:
        problems.append(
            f"the targets the loss consumed hash to {hashes[0][:12]}, the batch's to {hashes[1][:12]}"
        )
    return problems


@judges("GATE-ES-005", checks={"consumed": _CONSUMED, "logged": ("logged_loss", "forward_loss")})
def _fitness_consumed_as_stated(m: Measured, t: Thresholds) -> list[str]:
    """Every fitness evaluation of an ES step read what the step's batch states (the language-model
    fitness: its windows and each position's next token), and where the fitness is the negative of
    the loss it scored, the population loss the step logs is the one its forwards computed: by the
    rules a training step's loss is held to."""
    problems = consumed_problems(m) if has(m, "scorings") else []
    if has(m, "logged_loss", "forward_loss"):
        problems += logged_problems(m)
    return problems
