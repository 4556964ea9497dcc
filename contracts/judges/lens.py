"""The judges of the lens and activation-patching gates (spec/gates/lens.yaml): tuned and logit
lenses, their training and the KL they report, and patching one run with another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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
    reals,
)
from contracts.patching import asked_cells, recovered_fraction
from contracts.wording import first_few

judges = Judges()


def _bit_for_bit(m: Measured, what: str) -> list[str]:
    """An identity that must hold exactly: no element of the compared logits may differ."""
    differing = count(m, "differing_elements")
    return [f"{what} changed {differing} of {count(m, 'elements')} logit(s)"] if differing else []


@judges("GATE-LENS-001", needs=("differing_elements", "elements"))
def _untrained_lens_is_logit_lens(m: Measured, t: Thresholds) -> list[str]:
    return _bit_for_bit(m, "the untrained tuned lens, against the logit lens,")


def _why_unmoved(probe: Mapping[str, Any], t: Thresholds) -> str | None:
    """Why a probe that never moved counts as stuck, or None when it had nothing to learn: it was
    trained (the optimizer held it, a gradient reached it at every step) and its layer read as the
    final distribution through the identity all along (its KL at most max_identity_kl_nats). A
    measurement without those facts (a lens not trained by the stack) has no such excuse."""
    if not all(key in probe for key in ("optimized", "grad_every_step", "max_kl")):
        return "they received no gradient"
    if not flag(probe, "optimized"):
        return "the optimizer does not hold them"
    if not flag(probe, "grad_every_step"):
        return "they received no gradient"
    kl = number(probe, "max_kl")
    if not kl <= t["max_identity_kl_nats"]:
        return (
            f"a gradient reached them, yet the identity reads their layer at KL {kl:.3g} nats: a broken path"
        )
    return None


@judges(
    "GATE-LENS-002",
    checks={
        "probes": ("probes+",),
        "schedule": ("applied_lrs+", "scheduled_lrs+"),
        # every other hyper-parameter the record states is the one the optimizer applied
        "hyperparameters": ("applied_hyperparameters+", "stated_hyperparameters+"),
        # the gradients every step applied are clipped to the clip norm the record states
        "clip": ("stepped_grad_norms+", "stated_clip_norm"),
    },
)
def _every_probe_learned(m: Measured, t: Thresholds) -> list[str]:
    """Every check present: each probe moved or had nothing to learn (probes), the rate the
    optimizer applied at every step within lr_rtol of the lens schedule's (schedule), every other
    hyper-parameter it applied at every step the one the record states (hyperparameters), and the
    norm of the gradients it stepped at every step at most the stated clip norm (clip)."""
    problems = _probes_moved(m, t) if "probes" in m else []
    problems += _stepped_as_stated(m) if "applied_hyperparameters" in m else []
    problems += _stepped_clipped(m, t) if "stepped_grad_norms" in m else []
    return problems + (_stepped_as_scheduled(m, t) if "applied_lrs" in m else [])


def _stepped_clipped(m: Measured, t: Thresholds) -> list[str]:
    """Per step, the norm of the gradients the optimizer stepped (read from the parameters it holds,
    after the loop's clip) at most the stated clip norm × (1 + clip_rtol)."""
    norms, clip = reals(m, "stepped_grad_norms"), number(m, "stated_clip_norm")
    limit = clip * (1 + t["clip_rtol"])
    off = [(step, norm) for step, norm in enumerate(norms, start=1) if not norm <= limit]
    if not off:
        return []
    step, norm = off[0]
    return [
        f"at {len(off)} of {len(norms)} step(s) the optimizer stepped gradients of norm above the clip norm "
        f"the record states ({clip:g}, rtol {t['clip_rtol']:g}); first at step {step}: {norm:.6g} "
        "(clipped at another norm, or not at all?)"
    ]


def _stepped_as_stated(m: Measured) -> list[str]:
    """Per step, each hyper-parameter the optimizer applied (read from its parameter groups) against
    the value the record states, exactly: the stack hands the optimizer the setting's own value."""
    stated, applied = m["stated_hyperparameters"], items(m, "applied_hyperparameters")
    if not isinstance(stated, Mapping) or not all(isinstance(step, Mapping) for step in applied):
        raise Malformed("the stated and each step's applied hyper-parameters must be objects")
    off = [
        (step, key, values.get(key), want)
        for step, values in enumerate(applied, start=1)
        for key, want in stated.items()
        if not (values.get(key) == want and isinstance(values.get(key), bool) == isinstance(want, bool))
    ]
    if not off:
        return []
    step, key, have, want = off[0]
    keys, steps = sorted({k for _, k, _, _ in off}), len({s for s, *_ in off})
    return [
        f"the optimizer applied {', '.join(keys)} other than the record states at {steps} of "
        f"{len(applied)} step(s); first at step {step}: {key} {have!r}, stated {want!r}"
    ]


def _stepped_as_scheduled(m: Measured, t: Thresholds) -> list[str]:
    """One applied rate per scheduled step, each within lr_rtol of the schedule's rate for that step."""
    applied, scheduled = reals(m, "applied_lrs"), reals(m, "scheduled_lrs")
    if len(applied) != len(scheduled):
        return [f"the optimizer stepped {len(applied)} time(s), the schedule has {len(scheduled)} step(s)"]
    off = [
        (step, a, s)
        for step, (a, s) in enumerate(zip(applied, scheduled, strict=True), start=1)
        if not abs(a - s) <= t["lr_rtol"] * abs(s)
    ]
    if not off:
        return []
    step, a, s = off[0]
    return [
        f"at {len(off)} of {len(applied)} step(s) the optimizer's learning rate is not the lens schedule's "
        f"lr · (1 − (step − 1) / steps) (rtol {t['lr_rtol']:g}); first at step {step}: {a:.6g}, "
        f"scheduled {s:.6g}"
    ]


def _probes_moved(m: Measured, t: Thresholds) -> list[str]:
    stuck, broken = [], []
    for probe in items(m, "probes"):
        if not isinstance(probe, Mapping):
            raise Malformed("each entry of 'probes' must be an object")
        layer, norm = count(probe, "layer"), number(probe, "norm")
        if not (flag(probe, "finite") and math.isfinite(norm)):
            broken.append(str(layer))
        elif norm <= t["min_probe_norm"] and (why := _why_unmoved(probe, t)) is not None:
            stuck.append(f"{layer} (norm {norm:.3g}: {why})")
    problems = [f"probe(s) of layer(s) {', '.join(broken)} are not finite"] if broken else []
    if stuck:
        problems.append(
            f"probe(s) of layer(s) {', '.join(stuck)} never moved from the identity "
            f"(norm at most {t['min_probe_norm']:g}) though their layer had something to learn"
        )
    return problems


@judges("GATE-LENS-003", needs=("layers+",))
def _tuned_beats_logit_lens(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    for row in items(m, "layers"):
        if not isinstance(row, Mapping):
            raise Malformed("each entry of 'layers' must be an object")
        layer, logit, tuned = count(row, "layer"), number(row, "kl_logit"), number(row, "kl_tuned")
        if not tuned - logit <= t["max_kl_excess_nats"]:
            problems.append(
                f"layer {layer}: held-out KL {tuned:.4g} nats through the tuned lens, "
                f"{logit:.4g} through the logit lens"
            )
    return problems


@judges(
    "GATE-LENS-006",
    checks={
        "heldout": ("layers+", "recomputed_batches+"),
        "readings": ("reading_kl+", "recomputed_reading_kl+"),
        # a reading's entropies are contracts.divergence's of the log-probabilities it read
        "entropy": ("reading_entropy+", "recomputed_reading_entropy+"),
        "top": ("reading_top+", "top_logprobs+", "recomputed_top_logprobs+"),
        "objective": ("objective_steps+", "objective_losses+", "objective_recomputed+"),
        # the comparison read as many held-out windows as the record's settings state
        "windows": ("heldout_windows_read", "heldout_windows_stated"),
        # a reading's --csv, parsed back, holds the rows contracts.lens_table derives
        "table": ("table_rows_written", "table_rows_derived", "table_rows_differing"),
    },
)
def _kl_is_defined(m: Measured, t: Thresholds) -> list[str]:
    """Every check present: each reported KL within kl_atol + kl_rtol × KL(final ‖ layer) recomputed
    apart from it by torch's kl_div against a plain forward's distribution: a comparison's held-out
    mean per layer and lens against the mean, taken here, of each batch's recomputed KL with each
    lens by name (heldout); a reading's value per layer and position, the model's own row at KL 0
    (readings); a reading's entropy per layer and position against −Σ p log p of the
    log-probabilities it read (entropy); a reading's top-k probabilities against those
    log-probabilities (top); the loss the lens training backpropagated against its documented
    objective (objective); the held-out windows the comparison read, as many as the record's
    --heldout-batches × --batch-size (windows); and a reading's --csv as written, its rows those of
    the reading (table)."""
    problems = _heldout_kl(m, t) if has(m, "layers", "recomputed_batches") else []
    problems += _heldout_windows(m) if has(m, "heldout_windows_read") else []
    problems += _reading_kl(m, t) if has(m, "reading_kl", "recomputed_reading_kl") else []
    problems += _reading_entropy(m, t) if has(m, "reading_entropy") else []
    problems += _reading_top(m, t) if has(m, "reading_top", "top_logprobs") else []
    problems += _table_rows(m) if has(m, "table_rows_written") else []
    return problems + (_trained_objective(m, t) if has(m, "objective_losses") else [])


def _table_rows(m: Measured) -> list[str]:
    """Check table: the --csv written holds, row for row and cell for cell, the reading's rows."""
    written, derived = count(m, "table_rows_written"), count(m, "table_rows_derived")
    differing = count(m, "table_rows_differing")
    if written == derived and differing == 0:
        return []
    return [
        f"the --csv written holds {written} rows, {differing} of them (first: line "
        f"{m.get('table_first_differing')}) not the rows the reading gives ({derived}, "
        "contracts.lens_table): the table says something else than the JSON and the record"
    ]


def _kl_off(have: float, want: float, t: Thresholds) -> bool:
    return not abs(have - want) <= t["kl_atol"] + t["kl_rtol"] * abs(want)


# What a KL other than KL(final ‖ layer), summed over the vocabulary and averaged as stated, suggests.
_KL_MISS = "another direction, normalisation, set of positions or final distribution"


def _batch_means(batches: list[Any]) -> list[Mapping[str, Any]]:
    """Per layer, the mean over batches of each batch's recomputed kl_logit and kl_tuned (fsum / count):
    the held-out mean over every position, the batches being of one shape, by no divisor of the stack's."""
    if not batches or not all(
        isinstance(b, list) and all(isinstance(r, Mapping) for r in b) for b in batches
    ):
        raise Malformed("'recomputed_batches' must be a non-empty list of per-layer row lists")
    layers = [count(r, "layer") for r in batches[0]]
    if any([count(r, "layer") for r in b] != layers for b in batches):
        raise Malformed("every batch of 'recomputed_batches' must hold the same layers")
    return [
        {
            "layer": layer,
            **{
                lens: math.fsum(number(b[i], lens) for b in batches) / len(batches)
                for lens in ("kl_logit", "kl_tuned")
            },
        }
        for i, layer in enumerate(layers)
    ]


def _heldout_windows(m: Measured) -> list[str]:
    read, stated = count(m, "heldout_windows_read"), count(m, "heldout_windows_stated")
    if read == stated:
        return []
    return [
        f"the comparison's forwards read {read} held-out window(s), but the record states "
        f"--heldout-batches × --batch-size = {stated}: the lenses were compared on another set than stated"
    ]


def _heldout_kl(m: Measured, t: Thresholds) -> list[str]:
    reported, recomputed = items(m, "layers"), _batch_means(items(m, "recomputed_batches"))
    if not all(isinstance(row, Mapping) for row in reported):
        raise Malformed("each entry of 'layers' must be an object")
    if [count(r, "layer") for r in reported] != [count(r, "layer") for r in recomputed]:
        return [f"{len(reported)} layer(s) reported and {len(recomputed)} recomputed: not the same layers"]
    problems = []
    for row, again in zip(reported, recomputed, strict=True):
        for lens in ("kl_logit", "kl_tuned"):
            have, want = number(row, lens), number(again, lens)
            if _kl_off(have, want, t):
                problems.append(
                    f"layer {count(row, 'layer')}: {lens} is {have:.10g} nats, but KL(final ‖ layer) "
                    f"recomputed by kl_div through that lens and averaged over the "
                    f"{len(items(m, 'recomputed_batches'))} held-out batch(es) is {want:.10g} ({_KL_MISS}, "
                    "a mean over other batches, or the lenses' columns swapped)"
                )
    return problems


def _trained_objective(m: Measured, t: Thresholds) -> list[str]:
    steps, losses = items(m, "objective_steps"), reals(m, "objective_losses")
    recomputed = reals(m, "objective_recomputed")
    if not len(steps) == len(losses) == len(recomputed):
        return [
            f"{len(losses)} loss(es) and {len(recomputed)} recomputed objective(s) for {len(steps)} step(s)"
        ]
    return [
        f"at step {step} the lens training backpropagated a loss of {loss:.10g}, but its objective, the sum "
        f"over lens layers of KL(final ‖ lens layer) recomputed by kl_div on that batch, is {want:.10g} "
        f"({_KL_MISS})"
        for step, loss, want in zip(steps, losses, recomputed, strict=True)
        if _kl_off(loss, want, t)
    ]


def _reading_kl(m: Measured, t: Thresholds) -> list[str]:
    reported, recomputed = items(m, "reading_kl"), items(m, "recomputed_reading_kl")
    shape = [len(row) if isinstance(row, list) else None for row in reported]
    if None in shape or shape != [len(row) if isinstance(row, list) else None for row in recomputed]:
        return ["the reading's KLs and the recomputed ones are not one value per layer and position alike"]
    rows = [reals({"kl": row}, "kl") for row in reported]
    off = [
        (layer, position, have, want)
        for layer, (row, again) in enumerate(zip(rows, recomputed, strict=True))
        for position, (have, want) in enumerate(zip(row, reals({"kl": again}, "kl"), strict=True))
        if _kl_off(have, want, t)
    ]
    problems = []
    if off:
        layer, position, have, want = off[0]
        problems.append(
            f"{len(off)} of the reading's KLs are not KL(final ‖ layer) recomputed by kl_div against a "
            f"plain forward's distribution; first layer {layer}, position {position}: {have:.10g} nats, "
            f"recomputed {want:.10g} ({_KL_MISS})"
        )
    own = [x for x in (rows[-1] if rows else []) if not abs(x) <= t["kl_atol"]]
    if own:
        problems.append(
            f"the model's own row (the reading's last) reads KL {own[0]:.10g} nats from the final "
            f"distribution at {len(own)} position(s), not 0: another row was taken as the final one"
        )
    return problems


def _reading_entropy(m: Measured, t: Thresholds) -> list[str]:
    """Each reported entropy within kl_atol + kl_rtol × the one contracts.divergence.entropy gives of
    the same log-probabilities, per layer and position (both float64 sums of the same terms)."""
    reported, recomputed = items(m, "reading_entropy"), items(m, "recomputed_reading_entropy")
    shape = [len(row) if isinstance(row, list) else None for row in reported]
    if None in shape or shape != [len(row) if isinstance(row, list) else None for row in recomputed]:
        return [
            "the reading's entropies and the recomputed ones are not one value per layer and position alike"
        ]
    off = [
        (layer, position, have, want)
        for layer, (row, again) in enumerate(zip(reported, recomputed, strict=True))
        for position, (have, want) in enumerate(
            zip(reals({"e": row}, "e"), reals({"e": again}, "e"), strict=True)
        )
        if _kl_off(have, want, t)
    ]
    if not off:
        return []
    layer, position, have, want = off[0]
    return [
        f"{len(off)} of the reading's entropies are not −Σ p log p of the distribution it read; first "
        f"layer {layer}, position {position}: {have:.10g} nats, recomputed {want:.10g} (a mean over the "
        "vocabulary for its sum, or bits for nats?)"
    ]


def _reading_top(m: Measured, t: Thresholds) -> list[str]:
    """Each reported top-k probability in [0, 1] and exp of the log-probability of its token in the
    reading's distribution, and those tokens the k likeliest (their log-probabilities the top k)."""
    top, logprobs, best = (items(m, k) for k in ("reading_top", "top_logprobs", "recomputed_top_logprobs"))
    cells = _cells(top, logprobs, best)
    if cells is None:
        return ["the reading's top tokens and the recomputed ones are not k per layer and position alike"]
    off = []
    for layer, position, pairs, lps, want in cells:
        probs = [number({"p": pair[1]}, "p") for pair in pairs]
        lps, want = reals({"l": lps}, "l"), sorted(reals({"w": want}, "w"), reverse=True)
        bad = [p for p, lp in zip(probs, lps, strict=True) if not 0 <= p <= 1 or _prob_off(p, lp, t)]
        ranked = zip(sorted(lps, reverse=True), want, strict=True)
        if bad or any(_prob_off(math.exp(have), top_k, t) for have, top_k in ranked):
            off.append((layer, position, bad[0] if bad else probs[0]))
    if not off:
        return []
    layer, position, p = off[0]
    return [
        f"{len(off)} of the reading's top-k lists are not probabilities of the k likeliest tokens of the "
        f"distribution it read; first layer {layer}, position {position} (probability {p:.6g}): a "
        "probability outside [0, 1], not exp of its token's log-probability, or not a top-k token"
    ]


def _prob_off(p: float, log_p: float, t: Thresholds) -> bool:
    return not abs(p - math.exp(log_p)) <= t["prob_atol"]


def _cells(
    top: list[Any], logprobs: list[Any], best: list[Any]
) -> list[tuple[int, int, list, list, list]] | None:
    """(layer, position, the reported (id, probability) pairs, their tokens' log-probabilities, the k
    largest log-probabilities) per layer and position, or None where the three are not alike in shape."""

    def shape(rows: list[Any]) -> list[list[int]] | None:
        if not all(isinstance(r, list) and all(isinstance(c, list) for c in r) for r in rows):
            return None
        return [[len(c) for c in r] for r in rows]

    if shape(top) is None or not shape(top) == shape(logprobs) == shape(best):
        return None
    if not all(isinstance(pair, list) and len(pair) == 2 for row in top for cell in row for pair in cell):
        return None
    return [
        (layer, position, pairs, lps, want)
        for layer, (row, lrow, brow) in enumerate(zip(top, logprobs, best, strict=True))
        for position, (pairs, lps, want) in enumerate(zip(row, lrow, brow, strict=True))
    ]


@judges("GATE-LENS-004", needs=("final_norm",))
def _lens_fits_model(m: Measured, t: Thresholds) -> list[str]:
    problems = [] if flag(m, "final_norm") else ["the model has no final norm for the lens to read through"]
    expected = m.get("lens_model_sha256")
    if expected is not None and expected != m.get("model_sha256"):
        problems.append(
            f"the lens was trained on a model whose final norm and unembedding hash to "
            f"{str(expected)[:12]}…, this model's to {str(m.get('model_sha256'))[:12]}…"
        )
    return problems


@judges("GATE-LENS-005", needs=("sites+", "differing_elements", "elements"))
def _lens_reads_pre_norm(m: Measured, t: Thresholds) -> list[str]:
    wrong = [s for s in items(m, "sites") if not (s == "embed" or _is_block_output(s))]
    problems = [f"the lens reads {', '.join(map(str, wrong))}, not the residual stream"] if wrong else []
    return problems + _bit_for_bit(m, "read at the last block, the logit lens")


def _is_block_output(site: object) -> bool:
    parts = site.split(".") if isinstance(site, str) else []
    return len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2] == "output"


@judges("GATE-PATCH-001", needs=("differing_elements", "elements"))
def _self_patch_changes_nothing(m: Measured, t: Thresholds) -> list[str]:
    return _bit_for_bit(m, "patching the run with its own activations")


@judges(
    "GATE-PATCH-002",
    checks={
        "full": ("differing_elements", "elements"),
        # each grid cell overwrote its site at its position; the scores are the plain forwards'
        "cells": ("cells+",),
        "scores": ("clean_recorded", "corrupted_recorded", "clean_plain", "corrupted_plain"),
        # the grid is every stated cell once; each recorded recovery is the formula's
        "grid": ("grid_cells+", "grid_sites+", "grid_tokens", "grid_stated"),
        "recovery": ("recovery_clean", "recovery_corrupted", "recovery_cells+", "recovery_full"),
        # the grid's cells are the ones the command line asked for
        "asked": ("asked_patch", "asked_cells+", "asked_tokens"),
    },
)
def _full_patch_recovers(m: Measured, t: Thresholds) -> list[str]:
    """The embedding patched at every position recovers the clean logits bit for bit (`full`); each
    grid cell's forward overwrote exactly its stated site at exactly its stated position, with the
    clean run's value there, computed from the corrupted run's own value there, and changed its
    position exactly where the two runs' kept values differ (`cells`); the clean and corrupted scores
    are the metric read at the last position of plain forwards of the prompts, within score_atol
    (`scores`); the grid's cells are every stated site × every stated position (a sweep: 0..T−1),
    each once (`grid`); every recorded recovered fraction is contracts.patching's formula over the
    recorded scores, exactly (`recovery`)."""
    problems = []
    if has(m, "differing_elements", "elements"):
        problems += _bit_for_bit(m, "against the clean run, patching the embedding at every position still")
    if has(m, "cells"):
        problems += _cells_miswritten(items(m, "cells"))
    if has(m, "grid_cells", "grid_sites", "grid_tokens", "grid_stated"):
        problems += _grid_unlike_stated(m)
    if has(m, "recovery_clean", "recovery_corrupted", "recovery_cells", "recovery_full"):
        problems += _recoveries_unlike_formula(m)
    if has(m, "asked_patch", "asked_cells", "asked_tokens"):
        problems += _cells_unasked(m)
    if has(m, "clean_recorded", "corrupted_recorded", "clean_plain", "corrupted_plain"):
        for side in ("clean", "corrupted"):
            recorded, plain = number(m, f"{side}_recorded"), number(m, f"{side}_plain")
            if not abs(recorded - plain) <= t["score_atol"]:
                problems.append(
                    f"the {side} score is {recorded:.6g}, but the metric at the last position of a plain "
                    f"forward of the {side} prompt is {plain:.6g} (allowed {t['score_atol']:g}): "
                    "the metric is read at another position, or on another forward"
                )
    return problems


def _cells_miswritten(cells: list[Any]) -> list[str]:
    """GATE-PATCH-002's check `cells`: the cells whose forward overwrote another site, another
    position, or a value not the clean run's, from what the hooks recorded; whose forward computed
    at its site something other than the corrupted run's kept value (it ran on another prompt, or
    the hook recorded its replacement as what was computed); or that changed their position where
    the two runs' kept values are equal there, or left it unchanged where they differ."""
    wrong = []
    for cell in cells:
        if not isinstance(cell, Mapping) or not isinstance(cell.get("written"), list):
            raise Malformed("each entry of 'cells' must be an object with its 'written' sites")
        site, position = cell.get("site"), count(cell, "position")
        must_change = [position] if count(cell, "clean_unlike_corrupted") else []
        written = [w for w in cell["written"] if isinstance(w, Mapping)]
        sites = [w.get("site") for w in written]
        changed = sorted({p for w in written for p in items(w, "changed")})
        unlike, computed = cell.get("unlike_clean"), cell.get("computed_unlike_corrupted")
        if sites != [site] or changed != must_change or unlike != 0 or computed != 0:
            wrote = "; ".join(f"{w.get('site')} at {items(w, 'changed')}" for w in written) or "nothing"
            wrong.append(
                f"{site} at position {position} wrote {wrote}, where the runs differ at {must_change}"
                + (f" ({unlike} element(s) there unlike the clean run's)" if unlike else "")
                + (f" (it computed {computed} element(s) unlike the corrupted run's)" if computed else "")
            )
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    return [
        f"{len(wrong)} of {len(cells)} grid cell(s) did not patch exactly their site at their position "
        f"with the clean value ({shown})"
    ]


def _grid_unlike_stated(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `grid`: the (site, position) cells the grid holds against every stated
    site × every stated position (a sweep states every position of its grid_tokens-token prompt)."""
    stated = m["grid_stated"]
    if stated == "every":
        positions = list(range(count(m, "grid_tokens")))
    elif isinstance(stated, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in stated):
        positions = stated
    else:
        raise Malformed(f"'grid_stated' is {stated!r}, not 'every' or a list of positions")
    want = sorted((str(site), p) for site in items(m, "grid_sites") for p in positions)
    cells = items(m, "grid_cells")
    if not all(isinstance(c, list) and len(c) == 2 for c in cells):
        raise Malformed("each entry of 'grid_cells' must be [site, position]")
    have = sorted((str(site), p) for site, p in cells)
    if have == want:
        return []
    missing = sorted(set(want) - set(have))
    extra = [c for c in have if c not in want or have.count(c) > want.count(c)]
    span = f"{positions[0]}..{positions[-1]}" if positions else "none"
    return [
        f"the grid holds {len(have)} cell(s) where it states {len(want)} (every one of "
        f"{len(items(m, 'grid_sites'))} site(s) × positions {span}): "
        f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
        f"extra or repeated {sorted(set(extra))[:4]}"
    ]


def _cells_unasked(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `asked`: the (site, position) cells the grid patched against those
    contracts.patching.asked_cells gives from the command line's --patch-site, --patch-position and
    --patch-sweep and the prompt's length."""
    asked = m["asked_patch"]
    if not isinstance(asked, Mapping) or set(asked) != {"site", "position", "sweep"}:
        raise Malformed(f"'asked_patch' is {asked!r}, not an object of 'site', 'position' and 'sweep'")
    cells = items(m, "asked_cells")
    if not all(isinstance(c, list) and len(c) == 2 for c in cells):
        raise Malformed("each entry of 'asked_cells' must be [site, position]")
    have = [(str(site), p) for site, p in cells]
    want = asked_cells(asked, count(m, "asked_tokens"), [site for site, _ in have])
    if sorted(have) == sorted(want) and len({s for s, _ in have}) == len({s for s, _ in want}):
        return []
    said = " ".join(f"--patch-{k} {v}" for k, v in asked.items() if v is not None)
    return [
        f"the command line asks for {len(want)} cell(s) ({said}: {want[:4]}{' …' if len(want) > 4 else ''}), "
        f"but the grid patched {len(have)}: {have[:4]}{' …' if len(have) > 4 else ''}"
    ]


def _recoveries_unlike_formula(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `recovery`: each recorded recovered fraction (every cell's and the full
    patch's) against contracts.patching's formula over the recorded patched, clean and corrupted
    scores; the run computes it with that function, so only a different formula differs."""
    clean, corrupted = number(m, "recovery_clean"), number(m, "recovery_corrupted")
    full = m["recovery_full"]
    if not isinstance(full, Mapping):
        raise Malformed(f"'recovery_full' is {full!r}, not an object with 'patched' and 'recovered'")
    entries = [{**full, "site": "the full patch"}, *items(m, "recovery_cells")]
    wrong = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise Malformed("each recovery must be an object with its 'patched' score and 'recovered'")
        recorded, patched = number(entry, "recovered"), number(entry, "patched")
        formula = recovered_fraction(patched, clean, corrupted)
        if recorded != formula and not (math.isnan(recorded) and math.isnan(formula)):
            where = f"{entry.get('site')}" + (f" at {entry['position']}" if "position" in entry else "")
            wrong.append(f"{where}: recorded {recorded:.6g}, the formula gives {formula:.6g}")
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    return [
        f"{len(wrong)} recorded recovered fraction(s) are not (patched − corrupted)/(clean − corrupted) "
        f"over the recorded scores ({shown})"
    ]


@judges("GATE-PATCH-003", needs=("hooks", "function_modes"))
def _no_hook_left(m: Measured, t: Thresholds) -> list[str]:
    hooks, modes, when = count(m, "hooks"), count(m, "function_modes"), m.get("when")
    if not hooks and not modes:
        return []
    return [
        f"at the {when} of the patching run the model holds {hooks} hook(s), {modes} torch function mode(s)"
    ]
