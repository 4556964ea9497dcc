"""The judges of the evaluation gates (spec/gates/eval.yaml): the held-out set, early stopping,
bits per byte and overfitting.
"""

from __future__ import annotations

import math

from contracts.heldout import distinct_windows_needed
from contracts.judges.base import (
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    flag,
    has,
    number,
    same_number,
)
from contracts.judges.train import mode_problems, precision_problems
from contracts.likelihood import bits_per_byte_of

judges = Judges()


@judges(
    "GATE-EVAL-001",
    checks={
        "set": ("heldout_batches", "distinct_windows", "batch_size"),
        "reads": (
            "set_batches",
            "stated_windows",
            "scored_batches",
            "scorings",
            "stated_scorings",
            "mismatched_positions",
            "consumed_windows",
        ),
        "precision": ("precision", "logits_dtypes"),
        "mode": ("modes", "mismatched_modes"),
        "noise": ("scored_losses", "heldout_stderr", "early_stop"),
    },
)
def _heldout_size(m: Measured, t: Thresholds) -> list[str]:
    """The set, as made: something to measure, no window twice (two batches repeated eight times
    are two); each evaluation, by what its forwards read: every batch of the set, each read as it
    states, as many distinct windows as the set states, in the compute dtype of train.precision,
    with the model in evaluation mode; and early stopping, judging only a loss precise enough."""
    problems = precision_problems(m, "the evaluation") if has(m, "precision", "logits_dtypes") else []
    if has(m, "modes", "mismatched_modes"):
        problems += mode_problems(m, "the evaluation's forwards", "evaluation mode (no dropout drawn)")
    if has(m, "heldout_batches", "distinct_windows", "batch_size"):
        problems += _set_problems(m, t)
    if has(m, *judges.checks["GATE-EVAL-001"]["reads"]):
        problems += _read_problems(m)
    if has(m, *judges.checks["GATE-EVAL-001"]["noise"]):
        problems += _noise_problems(m, t)
    return problems


def _set_problems(m: Measured, t: Thresholds) -> list[str]:
    """Nothing to measure (fewer than two windows), or a set padded with repeats (two batches read
    eight times look more precise than the text they hold): what the set check refuses. A set must
    hold as many distinct windows as its batches read, up to min_heldout_batches' worth: text
    that repeats itself (a source's boilerplate) may repeat windows beyond that. Its size is the
    noise check's."""
    batches, distinct, size = (
        count(m, "heldout_batches"),
        count(m, "distinct_windows"),
        count(m, "batch_size"),
    )
    if distinct < 2:  # one window has a loss but no spread: no standard error to judge it by
        return [
            f"the held-out set holds {distinct} window(s): nothing to measure a held-out loss and its "
            "standard error on (that needs two)"
        ]
    if size < 1:
        raise Malformed("batch_size must be at least 1")
    needed = distinct_windows_needed(batches, size, t["min_heldout_batches"])
    if distinct < needed:
        return [
            f"the held-out set has {distinct} distinct windows in {batches} batches of {size}, fewer "
            f"than the {needed} its batches read: it repeats windows, whose losses would count twice "
            "in its standard error"
        ]
    return []


def heldout_precise(scored_losses: int, heldout_stderr: float, min_improvement: float) -> bool:
    """Whether a held-out loss from `scored_losses` per-batch losses, of standard error
    `heldout_stderr`, can tell an improvement of `min_improvement` from noise: what decides
    whether early stopping judges it (the loop) and whether a stop judged on it was noise (the gate)."""
    return scored_losses >= 2 and math.isfinite(heldout_stderr) and heldout_stderr <= min_improvement


def _noise_problems(m: Measured, t: Thresholds) -> list[str]:
    scored, stderr, judged = count(m, "scored_losses"), number(m, "heldout_stderr"), flag(m, "early_stop")
    if scored < 1:
        return ["the evaluation scored no held-out batch: nothing was measured"]
    if judged and not heldout_precise(scored, stderr, t["min_improvement"]):
        return [
            f"early stopping judged a held-out loss of standard error {stderr:.4g} over {scored} "
            f"losses, above min_improvement {t['min_improvement']}: it would stop on noise"
        ]
    return []


def _read_problems(m: Measured) -> list[str]:
    batches, scored = count(m, "set_batches"), count(m, "scored_batches")
    scorings, stated = count(m, "scorings"), count(m, "stated_scorings")
    consumed, windows = count(m, "consumed_windows"), count(m, "stated_windows")
    problems = []
    if scored != batches:
        problems.append(f"the evaluation scored {scored} of the held-out set's {batches} batches")
    if scorings != stated:
        problems.append(
            f"the evaluation's forwards made {scorings} scorings where its batches state {stated}"
        )
    if mismatched := count(m, "mismatched_positions"):
        problems.append(
            f"the evaluation's forwards read {mismatched} position(s) other than the held-out batches "
            "they were to score state (another batch of the set scored in its place?)"
        )
    if consumed < windows:
        problems.append(
            f"the evaluation's forwards read {consumed} distinct windows where the held-out set holds "
            f"{windows}: its loss judges part of the set"
        )
    return problems


@judges(
    "GATE-EVAL-002",
    checks={
        "config": ("patience", "min_epochs"),
        "stderr": ("heldout_stderr",),
        "stop": ("stop_epoch", "stop_evals"),
        "aggregated": (
            "set_batches",
            "averaged_losses",
            "losses_mean",
            "losses_stderr",
            "reported_loss",
            "reported_stderr",
        ),
        "judged": ("judged_loss", "judged_stderr", "losses_mean", "losses_stderr"),
        "forwards": ("compared_losses", "mismatched_losses"),
        # the set every evaluation scored holds the batches the run's config asks for
        "asked": ("asked_batches", "set_batches"),
    },
)
def _early_stopping(m: Measured, t: Thresholds) -> list[str]:
    problems = _aggregation_problems(m)
    if has(m, "patience", "min_epochs"):
        patience, min_epochs = number(m, "patience"), number(m, "min_epochs")
        if not patience >= t["min_patience_evals"]:
            problems.append(
                f"patience {patience:g} evaluations < {t['min_patience_evals']}: would stop on noise"
            )
        if not min_epochs >= t["min_epochs"]:
            problems.append(f"min_epochs {min_epochs:g} < {t['min_epochs']}: would stop on noise")
    if has(m, "heldout_stderr"):
        stderr = number(m, "heldout_stderr")
        if not (math.isfinite(stderr) and stderr > 0):
            problems.append(
                f"held-out standard error {stderr} is not positive and finite, so any change would "
                "count as an improvement"
            )
    if has(m, "stop_epoch", "stop_evals"):
        epoch, evals = number(m, "stop_epoch"), number(m, "stop_evals")
        if not epoch >= t["min_epochs"]:
            problems.append(f"early stopping fired at epoch {epoch:.3g} < {t['min_epochs']}")
        if not evals >= t["min_patience_evals"]:
            problems.append(f"early stopping fired after {evals:g} evaluations without improvement")
    return problems


_POSITION_COUNTS = {
    "missing_positions": "token position(s) after the first were never scored",
    "repeated_positions": "extra scoring(s) of a token position already scored",
    "first_token_scored": "scoring(s) of the first token, which has no context",
    "misaligned_targets": "target(s) not predicted from the token just before them",
}


@judges(
    "GATE-EVAL-003",
    checks={
        "round_trip": ("missing_chars", "extra_chars"),
        "scored": (
            *_POSITION_COUNTS,
            "tokens",
            "scored_targets",
            "predicted_tokens",
            "scored_positions_sha256",
            "predicted_positions_sha256",
            "nll_nats",
            "loss",
            "bits_per_byte",
            "bytes",
            "text_bytes",
        ),
        # the text an evaluation of a split scores is that split's, as the manifest lists it
        "split": (
            "split",
            "split_documents",
            "split_tokens",
            "documents_read",
            "tokens_read",
            "whole_split",
            "documents_scored",
            "split_text_sha256",
            "text_sha256",
        ),
        # the text of `--text FILE` is the file's bytes as stored, every one of them
        "file": ("file_bytes", "file_sha256", "text_bytes", "text_sha256"),
        # the overlap with the training data stated is the one the document indexes give
        "overlap": ("overlap_stated", "overlap_derived"),
        # the NLL summed is contracts.likelihood's over the logits the forwards taped, batch
        # by batch, and the score that sum over the UTF-8 bytes of the text the tokens decode to
        "nll": ("nll_nats", "nll_taped", "nll_batch_deviation", "bits_per_byte", "bytes", "bytes_decoded"),
        # the widest window the scoring forwards taped is the context the evaluation states
        "window": ("window_tokens", "context", "tokens"),
    },
)
def _every_byte(m: Measured, t: Thresholds) -> list[str]:
    """The tokenizer round-trips the text, or the NLL sum took every token after the first once and
    the score divides that sum by the text's bytes, or the text of a split is the split's, or the
    text of a file is the file's, or the overlap stated is the document indexes', or the NLL is the
    taped logits' and the score its bits per byte, or the windows scored are the stated context; or
    several of these."""
    problems = _split_text_problems(m) if has(m, *judges.checks["GATE-EVAL-003"]["split"]) else []
    if has(m, *judges.checks["GATE-EVAL-003"]["file"]) and m.get("file_sha256") != m.get("text_sha256"):
        problems.append(
            f"the text scored is not the file as stored: {count(m, 'text_bytes')} UTF-8 byte(s) with sha256 "
            f"{str(m.get('text_sha256'))[:12]}, where the file holds {count(m, 'file_bytes')} with sha256 "
            f"{str(m.get('file_sha256'))[:12]}: bytes dropped, added or changed in reading"
        )
    if has(m, "overlap_stated", "overlap_derived") and m.get("overlap_stated") != m.get("overlap_derived"):
        problems.append(
            f"the overlap with the training data stated, {m.get('overlap_stated')!r}, is not the one the "
            f"document indexes give (contracts.overlap), {m.get('overlap_derived')!r}: held-out documents "
            "counted as training ones, or training ones missed"
        )
    if has(m, "missing_chars", "extra_chars"):
        missing, extra = count(m, "missing_chars"), count(m, "extra_chars")
        if missing or extra:
            problems.append(
                f"the tokenizer does not round-trip the text: {missing} character(s) lost, {extra} added"
            )
    if has(m, *_POSITION_COUNTS, "scored_targets"):
        problems += _scored_every_position(m)
        problems += _score_is_the_sum_over_the_bytes(m, t["score_rtol"])
    if has(m, *judges.checks["GATE-EVAL-003"]["nll"]):
        problems += _score_is_the_taped_nll(m, t["nll_rtol"])
    if has(m, *judges.checks["GATE-EVAL-003"]["window"]):
        problems += _windows_are_the_context(m)
    return problems


def _windows_are_the_context(m: Measured) -> list[str]:
    """The widest window the scoring forwards read against the context the evaluation states: a text
    of N tokens is scored in windows of the whole context, or of its N − 1 tokens when shorter."""
    widest, context, tokens = count(m, "window_tokens"), count(m, "context"), count(m, "tokens")
    want = min(context, max(tokens - 1, 0))
    if widest == want:
        return []
    return [
        f"the scoring forwards read windows of at most {widest} token(s), but the evaluation states a "
        f"context of {context} (over {tokens} tokens, windows of {want}): each token was scored from "
        "another context than the one recorded"
    ]


def _score_is_the_taped_nll(m: Measured, rtol: float) -> list[str]:
    """The NLL summed against contracts.likelihood's float64 sum over the forwards' taped logits (in
    total, and the worst batch), the bytes counted against the UTF-8 bytes of the text the scored
    tokens decode to, and bits per byte against the one formula over those two."""
    nll, taped, worst = number(m, "nll_nats"), number(m, "nll_taped"), number(m, "nll_batch_deviation")
    n_bytes, decoded, bpb = count(m, "bytes"), count(m, "bytes_decoded"), number(m, "bits_per_byte")
    problems = []
    if not abs(nll - taped) <= rtol * abs(taped):
        problems.append(
            f"the NLL summed, {nll:.9g} nats, is not the float64 sum of −log softmax of the logits the "
            f"scoring forwards taped at their targets, {taped:.9g} (contracts.likelihood, rtol {rtol:g}): "
            "a mean for a sum? a batch left out of the total?"
        )
    if not worst <= rtol:
        problems.append(
            f"a batch's NLL is {worst:.3g} (relative) from the sum the logits its forward taped give its "
            f"targets (rtol {rtol:g})"
        )
    if n_bytes != decoded:
        problems.append(
            f"the result counts {n_bytes} byte(s), but the text the scored tokens decode to holds {decoded} "
            "UTF-8 bytes (characters counted for bytes?)"
        )
    want = bits_per_byte_of(taped, decoded) if decoded > 0 else math.nan
    if not abs(bpb - want) <= rtol * abs(want):
        problems.append(
            f"bits per byte {bpb:.9g} is not the taped NLL over the {decoded} UTF-8 bytes the scored tokens "
            f"decode to, {want:.9g} (contracts.likelihood.bits_per_byte_of, rtol {rtol:g})"
        )
    return problems


def _split_text_problems(m: Measured) -> list[str]:
    """The split's shards as read against the manifest's totals, and the text scored against the
    whole documents of that reading (all of them, unless a byte budget cut the text)."""
    split, problems = m.get("split"), []
    for what in ("documents", "tokens"):
        listed, read = count(m, f"split_{what}"), count(m, f"{what}_read")
        if read != listed:
            problems.append(f"the {split} split's shards hold {read} {what}; its manifest lists {listed}")
    scored, listed = count(m, "documents_scored"), count(m, "split_documents")
    if flag(m, "whole_split") and scored != listed:
        problems.append(
            f"the whole {split} split was asked for; its text holds {scored} of {listed} documents"
        )
    text, reference = str(m.get("text_sha256")), str(m.get("split_text_sha256"))
    if text != reference:
        problems.append(
            f"the text scored is not the {split} split's {scored} document(s) as its shards hold them "
            f"(sha256 {text[:12]} where the split gives {reference[:12]}): another split, or documents "
            "lost or added"
        )
    return problems


def _scored_every_position(m: Measured) -> list[str]:
    """The positions the NLL sum took against 1..N−1 of the text's N tokens."""
    tokens, scored, predicted = count(m, "tokens"), count(m, "scored_targets"), count(m, "predicted_tokens")
    problems = [f"{count(m, key)} {text}" for key, text in _POSITION_COUNTS.items() if count(m, key)]
    if scored != tokens - 1 or predicted != tokens - 1:
        problems.append(
            f"the NLL sum scored {scored} target(s) and the result claims {predicted}, of a text of {tokens} "
            f"token(s) whose {tokens - 1} after the first must each be scored once"
        )
    if m.get("scored_positions_sha256") != m.get("predicted_positions_sha256"):
        problems.append("the scored positions hash otherwise than positions 1..N−1")
    return problems


def _score_is_the_sum_over_the_bytes(m: Measured, rtol: float) -> list[str]:
    """Bits per byte and the loss against the NLL summed, over the text's bytes and the predicted tokens."""
    nll, loss, bpb = number(m, "nll_nats"), number(m, "loss"), number(m, "bits_per_byte")
    n_bytes, text_bytes, predicted = count(m, "bytes"), count(m, "text_bytes"), count(m, "predicted_tokens")
    problems = []
    if n_bytes != text_bytes:
        problems.append(f"the result counts {n_bytes} byte(s) of a text of {text_bytes} UTF-8 bytes")
    allowed = rtol * abs(nll)
    if not abs(bpb * text_bytes * math.log(2) - nll) <= allowed:
        divided_by = nll / (bpb * math.log(2)) if bpb else math.inf
        problems.append(
            f"bits per byte {bpb:.9g} is the NLL sum {nll:.9g} nats over {divided_by:.6g} bytes, not over "
            f"the text's {text_bytes}"
        )
    if not abs(loss * predicted - nll) <= allowed:
        problems.append(
            f"the loss {loss:.9g} is not the NLL sum {nll:.9g} over {predicted} predicted token(s)"
        )
    return problems


@judges(
    "GATE-EVAL-004",
    checks={
        "streak": ("diverging_evals",),
        "compared": (
            "compared_train_loss",
            "compared_heldout_loss",
            "reported_train_loss",
            "reported_heldout_loss",
        ),
    },
)
def _overfitting(m: Measured, t: Thresholds) -> list[str]:
    """A streak of evaluations whose held-out loss rose while the train loss fell; and the detector
    compared the losses the evaluation reports, not others."""
    problems = []
    if has(m, "diverging_evals"):
        streak = count(m, "diverging_evals")
        window = t["overfit_window_evals"]
        if streak >= window:
            problems.append(
                f"held-out loss rose while train loss fell for {streak} evaluations (window {window})"
            )
    for what in ("train", "heldout"):
        compared, reported = f"compared_{what}_loss", f"reported_{what}_loss"
        if has(m, compared, reported) and not same_number(number(m, compared), number(m, reported)):
            problems.append(
                f"overfitting was judged on a {what.replace('heldout', 'held-out')} loss of "
                f"{number(m, compared):.6g}, but the evaluation reports {number(m, reported):.6g}: the "
                "detector watched other numbers than the run's"
            )
    return problems


def _aggregation_problems(m: Measured) -> list[str]:
    """GATE-EVAL-002's aggregated, judged, forwards and asked checks: the evaluation's reported mean
    and standard error, and the stopper's, are mean_and_stderr of every held-out batch's loss, each
    of those is the loss its forward made, and the set scored is the size the config asks for."""
    problems = []
    if has(m, *judges.checks["GATE-EVAL-002"]["aggregated"]):
        batches, averaged = count(m, "set_batches"), count(m, "averaged_losses")
        if averaged != batches:
            problems.append(
                f"the evaluation averaged {averaged} losses of the held-out set's {batches} batches"
            )
    if has(m, "asked_batches", "set_batches") and count(m, "asked_batches") != count(m, "set_batches"):
        problems.append(
            f"the evaluation scored a held-out set of {count(m, 'set_batches')} batches where the run's "
            f"config asks for {count(m, 'asked_batches')} (eval.batches, contracts.heldout): its held-out "
            "loss, early stopping and best checkpoint judge another set than the one the record states"
        )
    if has(m, "compared_losses", "mismatched_losses") and count(m, "mismatched_losses"):
        problems.append(
            f"{count(m, 'mismatched_losses')} of the {count(m, 'compared_losses')} held-out losses are not "
            "the cross-entropy their forward computed: a held-out loss altered after the model made it"
        )
    pairs = (
        ("the evaluation reports", "reported_loss", "reported_stderr"),
        ("early stopping judged", "judged_loss", "judged_stderr"),
    )
    for what, loss, stderr in pairs:
        if not has(m, "losses_mean", "losses_stderr", loss, stderr):
            continue
        for got, want in ((loss, "losses_mean"), (stderr, "losses_stderr")):
            if not same_number(number(m, got), number(m, want)):
                problems.append(
                    f"{what} {got.split('_')[1]} {number(m, got):.6g}, but the held-out batches' losses "
                    f"give {number(m, want):.6g}: it did not read every batch's loss"
                )
    return problems
