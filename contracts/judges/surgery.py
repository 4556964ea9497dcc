"""The judges of the weight-surgery gates (spec/gates/surgery.yaml): LASER rank reduction and HQQ
quantisation against the model they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.agreement_sample import requested_problem
from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has, items, number
from contracts.judges.export import SAMPLE_KEYS, sample_problems
from contracts.truncation import rank_kept

judges = Judges()


def _rows(m: Measured, key: str) -> list[Mapping[str, Any]]:
    """A list of per-matrix objects, each naming its matrix."""
    rows = items(m, key)
    if not all(isinstance(row, Mapping) and isinstance(row.get("matrix"), str) for row in rows):
        raise Malformed(f"each entry of {key!r} must be an object naming its 'matrix'")
    return rows


@judges("GATE-LASER-001", needs=("differing_elements", "elements"))
def _full_rank_is_identity(m: Measured, t: Thresholds) -> list[str]:
    differing = count(m, "differing_elements")
    if not differing:
        return []
    return [f"LASER at ρ = 1 changed {differing} of {count(m, 'elements')} weight(s) of the targets"]


@judges(
    "GATE-LASER-002",
    checks={
        "error": ("matrices+",),
        # each matrix keeps the singular values ρ says (contracts.truncation)
        "kept": ("rho", "matrices+"),
    },
)
def _error_is_discarded_norm(m: Measured, t: Thresholds) -> list[str]:
    """Each truncation's error against the norm of the values it discarded, and (given ρ) the
    values it kept against ⌈ρ·rank⌉."""
    problems = []
    if has(m, "rho"):
        rho = number(m, "rho")
        for row in _rows(m, "matrices"):
            rank, kept = count(row, "rank"), count(row, "kept")
            if kept != rank_kept(rank, rho):
                problems.append(
                    f"{row['matrix']}: kept {kept} of {rank} singular values; ρ = {rho:g} keeps "
                    f"{rank_kept(rank, rho)} (⌈ρ·rank⌉)"
                )
    for row in _rows(m, "matrices"):
        error, discarded, norm = number(row, "error"), number(row, "discarded_norm"), number(row, "norm")
        if not abs(error - discarded) <= t["frobenius_rtol"] * norm:
            problems.append(
                f"{row['matrix']}: ‖W − W_k‖_F = {error:.6g}, but the discarded singular values' norm is "
                f"{discarded:.6g} (‖W‖_F {norm:.6g})"
            )
    return problems


@judges(
    "GATE-LASER-003",
    checks={
        "changed": ("targets+", "changed"),
        # the targets are what the command line's --targets and --layers select
        "selection": ("targets+", "selected+"),
        # the written checkpoint carries the source checkpoint's chat template
        "template": ("template_source", "template_written"),
    },
)
def _only_targets_change(m: Measured, t: Thresholds) -> list[str]:
    """Only the targets' tensors changed (`changed`), and the targets are exactly the tensors the
    command line selects by contracts.selection's rule (`selection`), and the written checkpoint's chat
    template its source's (`template`)."""
    targets = {str(name) for name in items(m, "targets")} if has(m, "targets") else set()
    problems = []
    if has(m, "changed"):
        stray = sorted(str(name) for name in items(m, "changed") if name not in targets)
        problems += [f"tensor(s) not named as targets changed: {', '.join(stray)}"] if stray else []
    if has(m, "selected"):
        chosen = {str(name) for name in items(m, "selected")}
        left, added = sorted(chosen - targets), sorted(targets - chosen)
        if left or added:
            problems.append(
                f"the surgery's targets are not the matrices its --targets and --layers select "
                f"(contracts.selection): left out {', '.join(left) or 'none'}; taken beyond them "
                f"{', '.join(added) or 'none'} (a range read without its last block?)"
            )
    if has(m, "template_source", "template_written"):
        problems += _template_problems(m.get("template_source"), m.get("template_written"))
    return problems


def _template_problems(source: Any, written: Any) -> list[str]:
    """Check template: the digest of the chat template the written checkpoint carries
    (contracts.checkpoints.chat_template_sha256) is its source checkpoint's, None for none."""
    if not all(value is None or isinstance(value, str) for value in (source, written)):
        raise Malformed("'template_source' and 'template_written' must be sha256 strings or null")
    if source == written:
        return []
    if written is None:
        return [
            f"the surgery's checkpoint carries no chat template, but its source carries one (sha256 "
            f"{source[:12]}): every export and chat rendering of it would fall back to another"
        ]
    return [
        f"the surgery's checkpoint carries chat template {written[:12]}, but its source carries "
        f"{'none' if source is None else source[:12]}: a surgery changes weights, not the template"
    ]


@judges(
    "GATE-HQQ-001",
    checks={
        "error": ("matrices+",),
        # the weights written lie on a 2^bits grid per group, its codes dequantised
        "grid": ("grid+", "bits"),
        # every matrix's groups are the --group-size the command's settings state
        "requested": ("grid+", "group_requested"),
    },
)
def _hqq_beats_rtn(m: Measured, t: Thresholds) -> list[str]:
    """Each matrix's HQQ error at most max_error_ratio × round-to-nearest's (`error`), each
    matrix as written a grid of at most 2^bits levels per group, one scale and one zero-point per
    group, integer codes in [0, 2^bits − 1] whose dequantisation is every written weight (`grid`),
    and each matrix's group the size the settings request, where they request one (`requested`)."""
    problems = []
    for row in _rows(m, "matrices") if has(m, "matrices") else []:
        hqq, rtn = number(row, "hqq_error"), number(row, "rtn_error")
        if not hqq <= t["max_error_ratio"] * rtn:
            problems.append(f"{row['matrix']}: HQQ error {hqq:.6g} > round-to-nearest's {rtn:.6g}")
    problems += _off_request(m) if has(m, "group_requested") else []
    return problems + (_off_grid(m) if has(m, "grid") else [])


def _off_request(m: Measured) -> list[str]:
    """Each grid row's group against the --group-size the settings state (none stated: one picked per
    matrix, nothing to hold here). A row's group is the grid's own, its scales one per group of it
    (check grid), so a quantiser that used another size shows here whatever size was asked."""
    requested = m.get("group_requested")
    if requested is None:
        return []
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise Malformed(f"'group_requested' is {requested!r}, not a group size or null")
    off = [row for row in _rows(m, "grid") if count(row, "group") != requested]
    if not off:
        return []
    first = off[0]
    return [
        f"{len(off)} of {len(_rows(m, 'grid'))} matrices were quantised in groups other than the "
        f"--group-size {requested} the settings state (first {first['matrix']}: groups of {first['group']})"
    ]


def _off_grid(m: Measured) -> list[str]:
    """GATE-HQQ-001's check grid, matrix by matrix (see `_hqq_beats_rtn`)."""
    top = 2 ** count(m, "bits") - 1
    problems = []
    for row in _rows(m, "grid"):
        groups, found = count(row, "groups"), []
        if count(row, "levels") > top + 1:
            found.append(
                f"a group holds {row['levels']} distinct values (a {m['bits']}-bit grid has {top + 1})"
            )
        if count(row, "scales") != groups or count(row, "zeros") != groups:
            found.append(f"{row['scales']} scales and {row['zeros']} zero-points for {groups} groups")
        low, high = number(row, "codes_min"), number(row, "codes_max")
        if not (flag(row, "codes_integral") and 0 <= low <= high <= top):
            found.append(f"codes from {low:g} to {high:g}, not integers in 0..{top}")
        if unreproduced := count(row, "unreproduced"):
            found.append(f"{unreproduced} weights written are not the dequantisation of their codes")
        problems += (
            [f"{row['matrix']} as written is no {m['bits']}-bit grid: {'; '.join(found)}"] if found else []
        )
    return problems


@judges(
    "GATE-HQQ-002",
    checks={
        "agreement": ("mean_kl_nats",),
        # the model compared is the model written
        "compared": ("compared_sha256", "written_sha256"),
        # the mean KL reported is KL(original ‖ quantised) as contracts.divergence takes it
        "recomputed": ("mean_kl_recomputed",),
        # the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # the reference side is the source's weights as read, and not the quantised side
        "reference": ("reference_sha256", "source_sha256", "quantised_sha256"),
        # the sample compared on is the one the request asked for (contracts.agreement_sample)
        "requested": ("sample_source", "requested_sample_text"),
    },
)
def _quantised_predicts_alike(m: Measured, t: Thresholds) -> list[str]:
    problems = sample_problems(m) + _reference_problems(m)
    if has(m, "sample_source", "requested_sample_text"):
        wrong = requested_problem(str(m["sample_source"]), m["requested_sample_text"])
        problems += [] if wrong is None else [f"{wrong}: the agreement is not measured on the text asked for"]
    if has(m, "mean_kl_recomputed", "mean_kl_nats"):
        reported, again = number(m, "mean_kl_nats"), number(m, "mean_kl_recomputed")
        if not abs(reported - again) <= t["kl_rtol"] * abs(again):
            problems.append(
                f"the held-out mean KL reported is {reported:.10g} nats, but KL(original ‖ quantised) "
                f"recomputed by kl_div from the same logits is {again:.10g} (rtol {t['kl_rtol']:g}): "
                "the KL taken the other way round, or over other positions"
            )
    if has(m, "compared_sha256", "written_sha256") and m.get("compared_sha256") != m.get("written_sha256"):
        problems.append(
            "the held-out agreement was measured on another model than the one written (weights sha256 "
            f"{str(m.get('compared_sha256'))[:12]} compared, {str(m.get('written_sha256'))[:12]} written)"
        )
    if has(m, "mean_kl_nats"):
        problems += _kl_bound(m, t)
    return problems


def _reference_problems(m: Measured) -> list[str]:
    """GATE-HQQ-002's check reference: the model whose forward gave the reference logits has the
    source's weights as read (digest of every tensor taken before quantising) and not the quantised
    model's: a KL of a model with itself is 0 whatever the quantiser did."""
    if not has(m, "reference_sha256", "source_sha256", "quantised_sha256"):
        return []
    reference, source = str(m["reference_sha256"]), str(m["source_sha256"])
    problems = []
    if reference != source:
        problems.append(
            f"the agreement's reference model has weights sha256 {reference[:12]}, not the source's as "
            f"read ({source[:12]}): the KL is not taken against the original"
        )
    if reference == str(m["quantised_sha256"]):
        problems.append(
            f"the agreement's reference and quantised sides are one model (weights sha256 {reference[:12]}): "
            "the KL of a model with itself"
        )
    return problems


def _kl_bound(m: Measured, t: Thresholds) -> list[str]:
    """The mean held-out KL of the quantised model against max_mean_kl_nats."""
    kl = number(m, "mean_kl_nats")
    if kl <= t["max_mean_kl_nats"]:
        return []
    return [
        f"held-out mean KL(original ‖ quantised) is {kl:.4g} nats per position over "
        f"{count(m, 'positions')} positions, above {t['max_mean_kl_nats']:g}"
    ]


@judges("GATE-HQQ-003", needs=("tied_config",))
def _ties_kept(m: Measured, t: Thresholds) -> list[str]:
    if not flag(m, "tied_config"):
        return []
    problems = [] if flag(m, "same_storage") else ["lm_head.weight is no longer embed.weight's storage"]
    differing = count(m, "differing_elements")
    if differing:
        problems.append(f"lm_head.weight differs from embed.weight in {differing} element(s)")
    return problems
