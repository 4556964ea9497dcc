"""The judges of the training gates (spec/gates/train.yaml).

Two rules here are shared with evolution strategies (contracts/judges/es.py): what a loss
consumed against what its batch states (`consumed_problems`, over the counts and hashes
`stack.train.consumption.Tally` measured), and a step's update against its optimizer's
(`update_problems`, over what `stack.train.stepping` measured).
"""

from __future__ import annotations

import math

from contracts.judges.base import (
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    flag,
    has,
    items,
    number,
    same_number,
)

judges = Judges()


@judges(
    "GATE-TRAIN-001",
    checks={
        "line": ("missing", "step"),
        "counted": ("served_tokens", "step_tokens"),
        "tensorboard": (
            "tensorboard_scalars",
            "tensorboard_expected",
            "tensorboard_texts",
            "tensorboard_texts_expected",
            "tensorboard_mismatches",
            "tensorboard_first",
        ),
    },
)
def _metrics_line(m: Measured, t: Thresholds) -> list[str]:
    """The line is complete and follows the step before it; the tokens the run counts a step (its
    throughput, tokens seen and the plan corpus adequacy judged) are those its batches served; and
    the scalars TensorBoard shows of the run are those its lines give (contracts.curves)."""
    problems = _curves_mirrored(m)
    if has(m, "missing", "step"):
        missing = items(m, "missing")
        step = count(m, "step")
        previous = m.get("previous_step")
        problems += [f"the metrics line lacks {', '.join(map(str, missing))}"] if missing else []
        if previous is not None and step != count(m, "previous_step") + 1:
            problems.append(f"the metrics jump from step {previous} to {step}")
    if has(m, "served_tokens", "step_tokens"):
        served, counted = count(m, "served_tokens"), count(m, "step_tokens")
        if served != counted:
            problems.append(
                f"the step's batches served {served} tokens, but the run counts {counted} a step: its "
                "throughput, tokens seen, epochs and the corpus adequacy it planned are off by "
                f"{counted / served if served else float('inf'):.3g}×"
            )
    return problems


def _curves_mirrored(m: Measured) -> list[str]:
    """Check tensorboard: no (tag, step) where the event files read back and metrics.jsonl disagree,
    no `samples` or `events` text read back that no line gives nor one a line gives missing, and as
    many points and texts shown as the lines give."""
    if not has(m, "tensorboard_mismatches"):
        return []
    wrong, read = count(m, "tensorboard_mismatches"), count(m, "tensorboard_scalars")
    given = count(m, "tensorboard_expected")
    texts, texts_given = count(m, "tensorboard_texts"), count(m, "tensorboard_texts_expected")
    if not wrong and read == given and texts == texts_given:
        return []
    return [
        f"TensorBoard shows {read} scalar point(s) and {texts} text(s) of the run and its metrics lines "
        f"give {given} and {texts_given}; {wrong} of them disagree: {m['tensorboard_first']}; the curves "
        "and texts users read are not what the run did"
    ]


@judges(
    "GATE-TRAIN-002",
    checks={
        "config": ("clip_norm", "warmup_steps", "weight_decay"),
        "clip": ("post_clip_norm", "clip_norm"),
        "warmup": ("warmup_lr", "warmup_step", "warmup_steps", "peak_lr"),
        "decay": ("undecayed_matrices", "decayed_vectors", "matrix_weight_decay"),
    },
)
def _stability(m: Measured, t: Thresholds) -> list[str]:
    """Configured on, and seen working: the clip bounds the norm, warmup rises, matrices decay."""
    problems = []
    if has(m, "clip_norm"):
        clip = number(m, "clip_norm")
        if not 0 < clip <= t["max_clip_norm"]:
            problems.append(f"gradient clip {clip:g} is not in (0, {t['max_clip_norm']}]")
    if has(m, "post_clip_norm"):
        post, clip = number(m, "post_clip_norm"), number(m, "clip_norm")
        if not post <= clip * (1 + t["post_clip_rtol"]):
            problems.append(f"the gradient norm after clipping is {post:.6g}, above the clip {clip:g}")
    if has(m, "warmup_steps") and not number(m, "warmup_steps") >= t["min_warmup_steps"]:
        problems.append(f"warmup of {number(m, 'warmup_steps'):g} steps < {t['min_warmup_steps']}")
    if has(m, "weight_decay") and not number(m, "weight_decay") >= t["min_weight_decay"]:
        problems.append(f"weight decay {number(m, 'weight_decay'):g} < {t['min_weight_decay']}")
    if has(m, "warmup_lr"):
        lr, step, peak = number(m, "warmup_lr"), count(m, "warmup_step"), number(m, "peak_lr")
        previous = m.get("previous_warmup_lr")
        if previous is not None and not lr > number(m, "previous_warmup_lr"):
            problems.append(f"the applied learning rate did not rise during warmup (step {step}: {lr:.3g})")
        if step < number(m, "warmup_steps") and not lr < peak:
            problems.append(f"the applied learning rate is already {lr:.3g} = peak at warmup step {step}")
    if has(m, "undecayed_matrices"):
        undecayed, decayed_vectors = count(m, "undecayed_matrices"), count(m, "decayed_vectors")
        # None: only LoRA adapters train, and their decay is judged below
        matrix_decay = None if m.get("matrix_weight_decay") is None else number(m, "matrix_weight_decay")
        if undecayed or (matrix_decay is not None and not matrix_decay >= t["min_weight_decay"]):
            smallest = "none" if matrix_decay is None else f"{matrix_decay:g}"
            problems.append(
                f"{undecayed} weight matri(x/ces) outside decoupled weight decay (smallest decay "
                f"{smallest} < {t['min_weight_decay']})"
            )
        if decayed_vectors:
            problems.append(f"{decayed_vectors} norm/bias vector(s) are weight-decayed")
    if has(m, "adapter_matrices"):
        decays, configured = items(m, "adapter_weight_decays"), number(m, "lora_weight_decay")
        if [float(d) for d in decays] != [configured]:
            problems.append(
                f"the LoRA adapters' matrices decay at {', '.join(f'{float(d):g}' for d in decays)}, not at "
                f"lora.weight_decay {configured:g}"
            )
    return problems


@judges("GATE-TRAIN-003", needs=("loss", "grad_norm"))
def _finite(m: Measured, t: Thresholds) -> list[str]:
    """The step's loss and gradient norm finite (judged before its optimizer step, or after one the
    device skipped for them); under fp16 loss scaling an overflowing gradient with a finite
    loss is a step the scaler skipped (`loss_scale`, the scale it left), allowed while that scale
    stays at least min_loss_scale: below it the gradients overflow at any scale."""
    loss, grad_norm = number(m, "loss"), number(m, "grad_norm")
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return []
    if math.isfinite(loss) and has(m, "loss_scale"):
        scale = number(m, "loss_scale")
        if scale >= t["min_loss_scale"]:
            return []
        return [
            f"the gradient norm is {grad_norm} at every loss scale down to {scale:g} (below "
            f"{t['min_loss_scale']:g}): the gradients are not finite at any scale, not just for fp16"
        ]
    return [f"loss {loss} / gradient norm {grad_norm} is not finite: the step must not reach the weights"]


@judges("GATE-TRAIN-004", needs=("loss", "vocab"))
def _first_loss(m: Measured, t: Thresholds) -> list[str]:
    loss, vocab = number(m, "loss"), count(m, "vocab")
    if vocab < 2:
        raise Malformed(f"vocab {vocab} has no uniform loss to compare with")
    expected, tolerance = math.log(vocab), t["first_loss_tolerance"]
    if abs(loss - expected) <= tolerance:
        return []
    return [f"first loss {loss:.4f} is not within {tolerance} of ln({vocab}) = {expected:.4f}"]


@judges(
    "GATE-TRAIN-005",
    checks={
        "streak": ("recent_scores+",),
        "ran": ("samples_scored", "steps", "sample_every"),
        "drawn": (
            "temperature",
            "top_k",
            "draws",
            "mismatched_draws",
            "probe_draws",
            "mismatched_probe_draws",
        ),
        "context": ("context_logits_deviation",),
        "scored": ("texts_score", "observed_score", "logged_score"),
        # the texts scored are the text of the tokens the generations drew
        "texts": ("texts_scored", "texts_not_drawn"),
        # `stack sample` continued the prompt its record names
        "prompt": ("prompt_tokens", "prompt_tokens_differing"),
        # the draws started from the state a generator seeded with the stated seed holds
        "seeded": ("seed", "generator_device", "generator_state_sha256", "seeded_state_sha256"),
    },
)
def _coherence(m: Measured, t: Thresholds) -> list[str]:
    problems = seeded_problems(m) if has(m, *judges.checks["GATE-TRAIN-005"]["seeded"]) else []
    if has(m, "prompt_tokens", "prompt_tokens_differing") and (differ := count(m, "prompt_tokens_differing")):
        problems.append(
            f"the generation continued another text than its prompt: {differ} of the prompt's "
            f"{count(m, 'prompt_tokens')} token(s) differ from the ids it continued"
        )
    if has(m, "texts_scored", "texts_not_drawn") and (not_drawn := count(m, "texts_not_drawn")):
        problems.append(
            f"{not_drawn} of the {count(m, 'texts_scored')} texts scored are not the text of the tokens "
            "their generation drew: the score is of something the model did not write"
        )
    if has(m, "texts_score", "observed_score", "logged_score"):
        want = number(m, "texts_score")
        read = (("the monitor observed", "observed_score"), ("the sample line logs", "logged_score"))
        for what, key in read:
            if not same_number(number(m, key), want):
                problems.append(
                    f"{what} a score of {number(m, key):.6g}, but the texts sampled score {want:.6g} "
                    "(the mean of each prompt's coherence): the streak is not judged on the samples"
                )
    if has(m, "context_logits_deviation"):
        deviation = number(m, "context_logits_deviation")
        if not deviation <= t["context_logits_rtol"]:
            problems.append(
                f"the logits the draws were made from are {deviation:.3g} (× the largest logit) from a "
                f"plain forward of the sampled text, past the model's context of its window (rtol "
                f"{t['context_logits_rtol']:g}): the sampler did not see the text it sampled (a lost KV "
                "cache? restarted positions? another part of a long text?)"
            )
    if has(m, "draws", "mismatched_draws", "probe_draws", "mismatched_probe_draws"):
        named = ("temperature", "top_k", "top_p", "repetition_penalty")
        settings = ", ".join(f"{key} {m[key]}" for key in named if key in m)
        for what, drawn, mismatched in (
            ("the samples", "draws", "mismatched_draws"),
            ("the sampler's draws on spread logits", "probe_draws", "mismatched_probe_draws"),
        ):
            if count(m, mismatched) > t["max_mismatched_draws"]:
                problems.append(
                    f"{count(m, mismatched)} of {count(m, drawn)} of {what} are not what the configured "
                    f"distribution ({settings}) draws from the same generator state: the samples are not "
                    "drawn as configured"
                )
    if has(m, "recent_scores"):
        scores = [number({"score": s}, "score") for s in items(m, "recent_scores")]
        window = int(t["max_consecutive_low"])
        tail = scores[-window:]
        if len(tail) >= window and all(s < t["min_coherence_score"] for s in tail):
            problems.append(
                f"{window} consecutive samples scored below the coherence floor {t['min_coherence_score']} "
                f"(last {tail[-1]:.1f}): the model is degenerate"
            )
    if has(m, "samples_scored", "steps", "sample_every"):
        scored, steps, every = count(m, "samples_scored"), count(m, "steps"), number(m, "sample_every")
        if scored == 0 and not (every > 0 and steps < every):
            what = (
                f"sampling is switched off (sample_every={every:g})"
                if every <= 0
                else f"{steps} steps ran with sampling every {every:g} steps but no sample was scored"
            )
            problems.append(f"{what}: this training path skips the coherence monitor")
    return problems


def seeded_problems(m: Measured) -> list[str]:
    """The state the draws' generator started from against the one a generator freshly seeded with
    the stated seed holds (contracts.seeds), by sha256: GATE-TRAIN-005's and GATE-SYNTH-002's check
    seeded."""
    started, seeded = m.get("generator_state_sha256"), m.get("seeded_state_sha256")
    if isinstance(started, str) and started == seeded:
        return []
    return [
        f"the draws started from a generator state (sha256 {str(started)[:12]}) other than the one a "
        f"{m.get('generator_device')} generator seeded with the stated seed {m.get('seed')!r} holds "
        f"({str(seeded)[:12]}): the sampler drew from another seed than the one asked for"
    ]


# The dtype of the logits a forward reads under each train.precision: the autocast dtype, or float32
# without autocast (torch's names, as `str(dtype)` gives them after "torch.").
COMPUTE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def precision_problems(m: Measured, reader: str) -> list[str]:
    """The logits every scoring of `reader` (the loss, the evaluation) read are in the compute dtype
    the run's precision names: GATE-TRAIN-007's and GATE-EVAL-001's precision checks."""
    precision, dtypes = m.get("precision"), items(m, "logits_dtypes")
    if precision not in COMPUTE_DTYPES:
        raise Malformed(f"precision must be one of {sorted(COMPUTE_DTYPES)}; got {precision!r}")
    if not dtypes and has(m, "scorings") and count(m, "scorings"):
        return [f"no scoring of {reader} stated the dtype of the logits it read: its precision is unshown"]
    other = sorted({str(d) for d in dtypes} - {COMPUTE_DTYPES[precision]})
    if other:
        return [
            f"{reader} read logits in {', '.join(other)} where train.precision={precision} computes in "
            f"{COMPUTE_DTYPES[precision]}: the run computes in another precision than it states"
        ]
    return []


def mode_problems(m: Measured, reader: str, wanted: str) -> list[str]:
    """No scoring of `reader` (a training step's loss, an evaluation's forwards) ran in another mode
    than the one it is due to run in (`wanted`): GATE-TRAIN-007's and GATE-EVAL-001's mode checks."""
    modes, mismatched = items(m, "modes"), count(m, "mismatched_modes")
    if not mismatched:
        return []
    seen = ", ".join(str(mode) for mode in modes) or "none stated"
    return [
        f"{mismatched} scoring(s) of {reader} ran with the model in another mode than {wanted} "
        f"(modes seen: {seen}): its dropout was drawn, or not, against what the run computes"
    ]


@judges("GATE-TRAIN-006", needs=("loss", "window_mean", "window_std", "window_len"))
def _spike(m: Measured, t: Thresholds) -> list[str]:
    loss, mean, std = number(m, "loss"), number(m, "window_mean"), number(m, "window_std")
    if count(m, "window_len") < t["spike_window_steps"]:
        return []  # judged only once the trailing window is full
    bound = mean + t["spike_sigma"] * std
    if loss > bound:
        return [f"loss {loss:.6g} is above the trailing mean + {t['spike_sigma']}σ = {bound:.6g}"]
    return []


# -- what a loss consumed against what its batch states ----------------------------------


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
CONSUMED = (
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
        "consumed": CONSUMED,
        "gradient": ("loss_gradient_deviation",),
        "precision": ("precision", "logits_dtypes"),
        "mode": ("modes", "mismatched_modes"),
        "logged": ("logged_loss", "forward_loss"),
        "inference": ("inference_logits_deviation", "inference_loss_deviation"),
        # over every window of each split, the statement names the manifest's supervised tokens
        "manifest": ("stated_split_targets+", "split_supervised_tokens+"),
        # what each LoRA adapter's A read in a training forward shows the configured dropout
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


# -- a step updates the weights as its optimizer is defined to ---------------------------
# Judged from what `stack.train.stepping` measured: the read-back and scheduled rates and the
# gradients left over (every step); which tensors the optimizer holds (at set-up, after every load
# of weights and at the probes); the weights the run starts from against those it states (check
# start); and at the probes, the gradient the optimizer was handed against the step's own, its
# update against AdamW's recomputed, and the parameters its step changed.


STEP_CHECKS = {
    "schedule": ("applied_lr", "scheduled_lr"),
    "fresh": ("stale_gradients",),
    "held": ("unheld_parameters", "stale_held_parameters", "unlisted_parameters", "untied_heads"),
    "gradient": ("gradient_compared",),
    "update": ("update_error", "update_worst", "updated_parameters", "optimizer_steps"),
    "moved": ("stepped_parameters", "moved_parameters", "unoptimized_parameters"),
    # the weights step 1 starts from are the ones the run states it starts from
    "start": ("start_from", "start_seed", "start_tensors", "start_sha256", "stated_start_sha256"),
}


# What a run's first step may start from (stack.train.stepping.start_measured).
START_FROM = ("seed", "checkpoint")


# The step a training step's update is recomputed as, and what a miss suggests.
_ADAMW = (
    "AdamW's",
    "recomputed from its inputs with the configured betas, eps and decoupled weight decay at the "
    "schedule's rate: another optimizer, swapped betas or decay on the wrong tensors",
)


@judges("GATE-TRAIN-008", checks=STEP_CHECKS)
def _steps_as_scheduled(m: Measured, t: Thresholds) -> list[str]:
    """Each check present is judged: the rate within lr_rtol of the schedule's, no gradient left
    from the step before, an optimizer that holds the model's trained tensors, a gradient and an
    update within their tolerances of the recomputed ones, and a step that changed the weights
    wherever a gradient was not all zeros (where none was, as under a clip of 0 or a DPO β of 0,
    there was nothing to apply: the loss's own gates judge that)."""
    problems = []
    if "applied_lr" in m:
        applied, scheduled = number(m, "applied_lr"), number(m, "scheduled_lr")
        if not abs(applied - scheduled) <= t["lr_rtol"] * abs(scheduled):
            problems.append(
                f"the optimizer's learning rate is {applied:.6g}, the schedule's {scheduled:.6g} "
                f"(rtol {t['lr_rtol']:g}): the rate applied is not the one the schedule and the log say"
            )
    if "stale_gradients" in m and (stale := count(m, "stale_gradients")):
        problems.append(
            f"{stale} trained parameter(s) held a gradient before the step's first backward: "
            "the gradients of earlier steps are being added in (is zero_grad called after each step?)"
        )
    if "stepped_parameters" in m:
        stepped, moved = count(m, "stepped_parameters"), count(m, "moved_parameters")
        if unoptimized := count(m, "unoptimized_parameters"):
            problems.append(
                f"{unoptimized} parameter(s) with a gradient are in no parameter group of the optimizer: "
                "their gradients are computed and never applied"
            )
        if stepped and moved < 1:  # with no nonzero gradient there was nothing to apply
            problems.append(
                f"none of the {stepped} parameter(s) with a nonzero gradient changed in the optimizer's "
                "step: it did not step, or stepped other tensors than the model's"
            )
    update = update_problems(m, t["update_rtol"], *_ADAMW) if "update_error" in m else []
    return [*problems, *_held(m), *_gradient(m, t), *update, *_start(m)]


def _start(m: Measured) -> list[str]:
    """The sha256 of the weights the run holds before its first step against that of the weights it
    states it starts from: a fresh run's drawn again from train.seed, a fine-tune's read from its
    checkpoint, both apart from the model the loop trains."""
    if "start_sha256" not in m:
        return []
    origin, tensors = m.get("start_from"), count(m, "start_tensors")
    if origin not in START_FROM:
        return [f"the run states it starts from {origin!r}, not one of {', '.join(START_FROM)}"]
    if tensors and m.get("start_sha256") == m.get("stated_start_sha256"):
        return []
    stated = (
        f"GPT's initialisation drawn from train.seed {count(m, 'start_seed')} in a fresh generator"
        if origin == "seed"
        else "the weights its --init-from checkpoint holds"
    )
    return [
        f"the {tensors} tensor(s) the run starts from are not {stated} (sha256 "
        f"{str(m.get('start_sha256'))[:12]} against {str(m.get('stated_start_sha256'))[:12]}): another "
        "seed, a load that never happened, or weights changed before the first step"
    ]


def _held(m: Measured) -> list[str]:
    if "unheld_parameters" not in m:
        return []
    problems = []
    unheld, stale = count(m, "unheld_parameters"), count(m, "stale_held_parameters")
    if unheld or stale:
        problems.append(
            f"{unheld} of the model's trained parameter(s) are in no parameter group of the optimizer and "
            f"{stale} it holds are not the model's: the optimizer steps other tensors than the model "
            "trains (did a load of weights replace the model's tensors?)"
        )
    if unlisted := count(m, "unlisted_parameters"):
        problems.append(
            f"{unlisted} parameter(s) differ between the model's trained parameters and the loop's list "
            "of them, which it clips and checks"
        )
    if count(m, "untied_heads"):
        problems.append("the config ties the head to the embedding but the model's head is another tensor")
    return problems


def _gradient(m: Measured, t: Thresholds) -> list[str]:
    """The logged norm before the clip within gradient_rtol of the reference's, and the worst tensor's
    gradient at the optimizer within gradient_rtol of its clipped reference (a sharded model's is
    not compared: nothing to judge). Where the probe found non-deterministic kernels allowed, both
    within nondeterministic_gradient_rtol: its two backward passes need not sum in one order. A
    record from before the probe said (no `deterministic_kernels`) is held to gradient_rtol."""
    if "gradient_compared" not in m or not flag(m, "gradient_compared"):
        return []
    strict = "deterministic_kernels" not in m or flag(m, "deterministic_kernels")
    name = "gradient_rtol" if strict else "nondeterministic_gradient_rtol"
    problems, rtol = [], t[name]
    reference, logged = number(m, "reference_grad_norm"), number(m, "logged_grad_norm")
    if not abs(logged - reference) <= rtol * reference:
        problems.append(
            f"the gradient norm before the clip is {logged:.6g}, the step's mean objective's {reference:.6g} "
            f"({name} {rtol:g}): the loss is scaled on its way to the gradient (grad_accum, the loss scale), "
            "or the norm is not the whole gradient's"
        )
    error = number(m, "applied_gradient_error")
    if not error <= rtol:
        problems.append(
            f"the gradient the optimizer was handed is {error:.3g} of its own size from the step's clipped "
            f"gradient at {m.get('applied_gradient_worst')} ({name} {rtol:g}): a clip before the loss scale "
            "is taken off, over some of the parameters, or a gradient scaled after the backward"
        )
    return problems


def update_problems(m: Measured, rtol: float, reference: str, recomputed: str) -> list[str]:
    """The worst tensor's weights or moment after the step within `rtol` of the `reference` step
    recomputed as `recomputed` says (and what a miss suggests), and one optimizer step in the step."""
    problems = []
    if (steps := count(m, "optimizer_steps")) != 1:
        problems.append(f"the optimizer stepped {steps} time(s) in one step of the loop, not once")
    error = number(m, "update_error")
    if error <= rtol:
        return problems
    return [
        *problems,
        f"the optimizer's step is {error:.3g} of its own size from {reference} at {m.get('update_worst')} "
        f"(rtol {rtol:g}), {recomputed}",
    ]
