"""The judges of the tracing gates (spec/gates/trace.yaml): tracing changes nothing, a trace is
complete and names its sites truly, and bisection names the planted bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.judges.base import (
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    deviations,
    flag,
    has,
    items,
    number,
)
from contracts.judges.integ import falsifiers_pass
from contracts.site_statistics import NotStatistics, inconsistencies, unlike
from contracts.trace_anomaly import (
    EMBEDDING_STREAM_SINCE,
    FIRST_ATTENTION_SINCE,
    GAINS_SINCE,
    MEASURE_THRESHOLDS,
    ROLES_SINCE,
    ROUTER_GAINS_SINCE,
    SiteBaseline,
    anomalies,
    block_site,
)
from contracts.trace_paths import PATH_DTYPES
from contracts.trace_tolerance import asked_bounds
from contracts.wording import first_few

judges = Judges()


@judges(
    "GATE-TRACE-001",
    checks={"logits": ("differing_elements", "same_dtype"), "falsifiers": ("falsifiers+",)},
)
def _tracing_changes_nothing(m: Measured, t: Thresholds) -> list[str]:
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "differing_elements", "same_dtype"):
        if not flag(m, "same_dtype"):
            problems.append("the traced logits have another shape or dtype than the untraced ones")
        elif differing := count(m, "differing_elements"):
            problems.append(f"tracing changed {differing} logit(s)")
    return problems


@judges(
    "GATE-TRACE-003",
    checks={
        "site": ("std_ratio", "nonfinite"),
        "divergence": (
            "max_abs_error_over_rtol",
            "reference_error",
            "given_atol",
            "nonfinite_mismatch",
            "same_shape",
        ),
        "producer": ("nonfinite_elements", "nonfinite_inputs"),
        # the anomalies a single-path trace names are those its sites' statistics give
        "anomalies": ("site_stats+", "sites_judged+", "anomalies_named"),
        # an ablation's reported KL(intact ‖ ablated) is the one torch's kl_div gives
        "ablation": (
            "mean_kl_reported",
            "mean_kl_recomputed",
            # the ablation's other numbers, each recomputed from the two forwards' tensors
            "output_change_reported",
            "output_change_recomputed",
            "argmax_changed_reported",
            "argmax_changed_recomputed",
            "positions_reported",
            "positions_recomputed",
        ),
        # each greedy continuation of --sample N is N new ids
        "samples": ("samples_asked", "sample_ids+"),
        # the sites the ablated forward zeroed (and the continuations shown) are those asked
        "ablated": ("ablate_asked+", "ablate_zeroed", "ablate_reported", "sample_asked", "continuations"),
        # every compared site was judged at the tolerance --atol/--rtol ask for there
        "tolerance": ("atol_asked", "rtol_asked", "site_tolerances"),
        # each compared site's reported minimum tolerances, recomputed from the sites' values
        "margins": ("margins_reported+", "margins_recomputed+"),
        "falsifiers": ("falsifiers+",),
    },
)
def _site_named(m: Measured, t: Thresholds) -> list[str]:
    """Whether a site is one the trace names: a problem found is the site named, none lets it pass.

    site (anomaly mode): its std beyond anomaly_std_multiple × the same site's median in the other
    layers, or not finite.
    divergence (bisection, path B against path A at one site): an element over the site's rtol
    differs by more than fp64_error_multiple × the reference path's own error from fp64 there (or
    by more than the atol the user gave, when one applies), NaN/Inf stand on one side only, or the
    shapes differ. The reference path's own rounding is no bug, so only a difference well beyond
    it counts; the largest difference over rtol decides as every element would.
    producer (NaN/Inf in one trace): a site holding NaN/Inf whose inputs are all finite made them;
    a site fed NaN/Inf only passes them on, and naming it would hide where they came from.
    anomalies (a single-path trace's report): the sites it names as anomalies, each with the layers
    of its baseline, are exactly those the `site` rule gives when every judged site is set against
    the same site in the other layers (contracts.trace_anomaly), from the statistics it measured.
    ablation (an ablation's report): the mean KL(intact ‖ ablated) it reports is within
    ablation_kl_atol of the one contracts.divergence gives from the intact and ablated logits; every
    layer's output change, the changed argmaxes and the positions it reports are those the
    contracts' formulas give from the two forwards' kept tensors, exactly (the run reports them by
    the same functions), and the changed argmaxes are at most the positions.
    samples (an ablation with --sample N): each greedy continuation holds exactly N new ids.
    ablated (an ablation): the sites the ablated forward's hooks overwrote with zeros are those the
    command line's --ablate names, and the report names them as given; the report shows two greedy
    continuations where --sample N > 0 asks for them and none otherwise.
    tolerance (a bisection): every compared site was judged at the atol and rtol
    contracts.trace_tolerance.asked_bounds gives from the command line's --atol/--rtol, and where no
    rule matches at fp64_error_multiple × the site's reference error and default_rtol.
    margins (a bisection): each compared site's reported min_atol and min_rtol (min_atol also
    decides the site) are exactly those contracts.trace_tolerance.tolerance_margins gives from the
    two sites' values at the site's tolerance.
    """
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "std_ratio", "nonfinite"):
        problems += _anomalous_site(
            number(m, "std_ratio"), flag(m, "nonfinite"), t, m.get("role"), m.get("measure")
        )
    if has(m, "site_stats", "sites_judged", "anomalies_named"):
        problems += _anomalies_rederived(m, t)
    if has(m, "max_abs_error_over_rtol"):
        problems += _diverges(m, t)
    if has(m, "nonfinite_elements"):
        made, fed = count(m, "nonfinite_elements"), count(m, "nonfinite_inputs")
        if made and not fed:
            problems.append(f"the site makes {made} NaN/Inf value(s) from finite inputs")
    if has(m, "mean_kl_reported", "mean_kl_recomputed"):
        reported, recomputed = number(m, "mean_kl_reported"), number(m, "mean_kl_recomputed")
        if not abs(reported - recomputed) <= t["ablation_kl_atol"]:
            problems.append(
                f"the ablation reports a mean KL(intact ‖ ablated) of {reported:.6g} nats, but the intact "
                f"and ablated logits give {recomputed:.6g} (allowed {t['ablation_kl_atol']:g}): the KL "
                "reversed, or over other logits"
            )
    if has(m, "output_change_reported", "output_change_recomputed"):
        problems += _ablation_counts_wrong(m)
    if has(m, "ablate_asked", "ablate_zeroed", "ablate_reported", "sample_asked", "continuations"):
        problems += _ablation_unasked(m)
    if has(m, "atol_asked", "rtol_asked", "site_tolerances"):
        problems += _tolerances_unasked(m, t)
    if has(m, "margins_reported", "margins_recomputed"):
        problems += _margins_restated(m)
    if has(m, "samples_asked", "sample_ids"):
        asked, ids = count(m, "samples_asked"), m["sample_ids"]
        wrong = {k: n for k, n in ids.items() if n != asked} if isinstance(ids, Mapping) else ids
        if wrong:
            problems.append(f"--sample {asked} asks for {asked} new token(s); the continuations hold {wrong}")
    return problems


def _ablation_unasked(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `ablated`: the sites zeroed and named, and the continuations shown,
    against what --ablate and --sample asked for."""
    asked, zeroed, reported = items(m, "ablate_asked"), items(m, "ablate_zeroed"), items(m, "ablate_reported")
    problems = []
    if sorted(set(map(str, zeroed))) != sorted(set(map(str, asked))):
        problems.append(
            f"--ablate asks to zero {sorted(set(asked))}, but the ablated forward's hooks zeroed "
            f"{sorted(set(zeroed))}"
        )
    if reported != asked:
        problems.append(f"--ablate asks for {asked}, but the report says {reported} were ablated")
    sample, shown = count(m, "sample_asked"), count(m, "continuations")
    if shown != (2 if sample else 0):
        problems.append(
            f"--sample {sample} asks for {'two' if sample else 'no'} continuations; the report shows {shown}"
        )
    return problems


def _margins_restated(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `margins`: each site's reported minimum tolerances against those
    contracts.trace_tolerance.tolerance_margins gives from its values (both maxima of the same
    float64 elements, so exactly)."""
    reported, recomputed = m["margins_reported"], m["margins_recomputed"]
    if not (isinstance(reported, Mapping) and isinstance(recomputed, Mapping)):
        raise Malformed("'margins_reported' and 'margins_recomputed' must map each site to its margins")
    wrong = [
        f"{name} {key} {(reported.get(name) or {}).get(key)!r} (its values give {value!r})"
        for name, margins in recomputed.items()
        for key, value in (margins.items() if isinstance(margins, Mapping) else [])
        if (reported.get(name) or {}).get(key) != value
    ]
    wrong += [f"{name} reported, never recomputed" for name in reported if name not in recomputed]
    if not wrong:
        return []
    return [
        f"the bisection reports minimum tolerances its sites' values do not give "
        f"(contracts.trace_tolerance.tolerance_margins): {first_few(wrong, 4, '; ')}"
    ]


def _tolerances_unasked(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's check `tolerance`: each compared site's atol and rtol against the bounds the
    command line's --atol/--rtol ask for there (contracts.trace_tolerance), or the calibrated atol
    and the default rtol where no rule matches."""
    atol_words, rtol_words = items(m, "atol_asked"), items(m, "rtol_asked")
    if not all(isinstance(w, str) for w in [*atol_words, *rtol_words]):
        raise Malformed("'atol_asked' and 'rtol_asked' must list the command line's words")
    wrong = []
    for row in items(m, "site_tolerances"):
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            raise Malformed("each entry of 'site_tolerances' must be an object with the site's 'name'")
        try:
            atol, rtol = asked_bounds(row["name"], atol_words, rtol_words)
        except ValueError as exc:
            raise Malformed(f"an --atol/--rtol word is not GLOB=VALUE: {exc}") from None
        reference = row.get("reference_error")
        judged = number(row, "atol")
        if atol is None:
            calibrated = isinstance(reference, int | float) and not isinstance(reference, bool)
            fits = calibrated and judged == t["fp64_error_multiple"] * reference
            want = f"{t['fp64_error_multiple']:g} × its fp64 error {reference}"
        else:
            fits, want = reference is None and judged == atol, f"{atol:g} (--atol)"
        want_rtol = t["default_rtol"] if rtol is None else rtol
        if not fits or number(row, "rtol") != want_rtol:
            wrong.append(
                f"{row['name']} judged at atol {judged:g}, rtol {row.get('rtol')} "
                f"(asked: atol {want}, rtol {want_rtol:g})"
            )
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    said = " ".join([*(f"--atol {w}" for w in atol_words), *(f"--rtol {w}" for w in rtol_words)]) or "none"
    return [f"{len(wrong)} site(s) were not judged at the tolerance the command line asks ({said}): {shown}"]


def _ablation_counts_wrong(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `ablation`, beyond the KL: the per-layer output changes, the changed
    argmaxes and the positions reported, against those recomputed from the kept tensors."""
    problems = []
    reported, recomputed = m["output_change_reported"], m["output_change_recomputed"]
    if not isinstance(reported, Mapping) or not isinstance(recomputed, Mapping):
        raise Malformed("'output_change_reported' and '_recomputed' must map each layer to its change")
    unlike = {k: (reported.get(k), v) for k, v in recomputed.items() if reported.get(k) != v}
    if unlike or set(reported) != set(recomputed):
        pairs = list(unlike.items())[:4]
        shown = "; ".join(f"layer {k}: reported {r}, recomputed {v:.6g}" for k, (r, v) in pairs)
        problems.append(
            f"the per-layer output changes reported are not ‖ablated − intact‖ / ‖intact‖ of the two "
            f"forwards' block outputs ({shown or f'layers {sorted(reported)} against {sorted(recomputed)}'})"
        )
    positions = count(m, "positions_recomputed")
    if count(m, "positions_reported") != positions:
        reported_positions = m["positions_reported"]
        problems.append(f"the ablation reports {reported_positions} positions; the logits hold {positions}")
    flips, recounted = count(m, "argmax_changed_reported"), count(m, "argmax_changed_recomputed")
    if flips != recounted or flips > positions:
        problems.append(
            f"the argmax changes at {flips} of {positions} position(s) as reported, but the logits' "
            f"argmax over the vocabulary changes at {recounted}"
        )
    return problems


def _anomalous_site(
    ratio: float, nonfinite: bool, t: Thresholds, role: Any = None, measure: Any = None
) -> list[str]:
    """GATE-TRACE-003's check `site`: a site holding NaN/Inf, or whose std is beyond
    anomaly_std_multiple × its baseline, is an anomaly (see `_site_named`); from rev 8 a site with a
    role (contracts.trace_anomaly.ROLES: `role` names it) is held to its role's multiple instead,
    `<role>_std_multiple`, calibrated on healthy models; from rev 10 a site judged by its gain
    (`measure` "gain", contracts.trace_anomaly.GAIN_READS) is held to gain_std_multiple × the
    median gain of the same site in the other layers, and from rev 11 a router by its gain over what
    it scores (`measure` "router_gain") to router_gain_std_multiple × the same router's in the other
    blocks (contracts.trace_anomaly.MEASURE_THRESHOLDS)."""
    if nonfinite:
        return ["the site holds NaN or Inf"]
    common = t["anomaly_std_multiple"]
    if measure in MEASURE_THRESHOLDS:
        multiple, what = t.get(MEASURE_THRESHOLDS[measure], common), "gain (std over its reads' stds)"
    else:
        multiple, what = (t.get(f"{role}_std_multiple", common) if role else common), "std"
    if ratio > multiple:
        return [
            f"its {what} is {ratio:.3g}x the same site's median in the other layers (beyond {multiple:g})"
        ]
    return []


def _judged_as(site: SiteBaseline) -> dict[str, str | None]:
    """What `_anomalous_site` reads of a site besides its ratio: its role, and which gain, if any."""
    return {"role": site.role.name if site.role else None, "measure": site.measure if site.reads else None}


def _anomaly_rule(t: Thresholds) -> int:
    """The anomaly rule's revision that the thresholds a result was judged under belong to: each
    role, and the gains, came with its multiple (a record judged earlier is derived again by its
    own rule)."""
    if "router_gain_std_multiple" in t:
        return ROUTER_GAINS_SINCE
    if "gain_std_multiple" in t:
        return GAINS_SINCE
    if "first_attention_std_multiple" in t:
        return FIRST_ATTENTION_SINCE
    return ROLES_SINCE if "first_mlp_std_multiple" in t else EMBEDDING_STREAM_SINCE


def _anomalies_rederived(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's check `anomalies` (see `_site_named`): the named anomalies and their
    baselines' layers against those the sites' statistics give under the `site` rule."""
    stats = m["site_stats"]
    if not isinstance(stats, Mapping) or not all(isinstance(v, Mapping) for v in stats.values()):
        raise Malformed("'site_stats' is not an object of per-site statistics")
    named = [a for a in items(m, "anomalies_named") if isinstance(a, Mapping)]
    if len(named) != len(items(m, "anomalies_named")):
        raise Malformed("'anomalies_named' holds an entry that is not an object")
    derived = anomalies(
        stats,
        [str(n) for n in items(m, "sites_judged")],
        lambda b: bool(_anomalous_site(b.ratio, b.nonfinite, t, **_judged_as(b))),
        _anomaly_rule(t),
    )
    problems = []
    own = [str(a.get("name")) for a in named if _own_layer_in_baseline(a)]
    if own:
        problems.append(
            f"the baseline of {', '.join(own)} includes the site's own layer: a layer that blew up "
            "pulls its own baseline up and hides; a site is set against the other layers only"
        )
    given = [(str(a.get("name")), a.get("baseline_layers")) for a in named]
    wanted = [(b.name, list(b.baseline_layers)) for b in derived]
    if given != wanted:
        problems.append(
            f"the trace names anomalies {_named(given)}, but the statistics of its sites give "
            f"{_named(wanted)} (each site's std, or its gain, against the median of the same site in "
            "the other layers)"
        )
    return problems


def _own_layer_in_baseline(anomaly: Mapping[str, Any]) -> bool:
    """Whether a named anomaly's baseline lists its own layer."""
    where = block_site(str(anomaly.get("name")))
    layers = anomaly.get("baseline_layers")
    return where is not None and isinstance(layers, list) and where[0] in layers


def _named(pairs: list[tuple[str, Any]]) -> str:
    """Anomalies with their baselines' layers, for a message."""
    return "[" + "; ".join(f"{name} (of layers {layers})" for name, layers in pairs) + "]"


def _diverges(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's divergence check, path B leaving path A at one site (see `_site_named`)."""
    if not flag(m, "same_shape"):
        return ["the paths' values have different shapes"]
    problems = []
    if mismatched := count(m, "nonfinite_mismatch"):
        problems.append(f"{mismatched} element(s) are NaN/Inf on one side only")
    excess = number(m, "max_abs_error_over_rtol")
    if m["given_atol"] is not None:
        allowed, what = number(m, "given_atol"), "the given atol"
    else:
        allowed = t["fp64_error_multiple"] * number(m, "reference_error")
        what = f"{t['fp64_error_multiple']:g} × the reference path's error from fp64"
    if not excess <= allowed:
        problems.append(f"an element over rtol differs by {excess:.3g}, beyond {what} ({allowed:.3g})")
    return problems


@judges(
    "GATE-TRACE-002",
    checks={
        "complete": ("missing", "partial", "recorded_twice"),
        "identity": ("identities+",),
        # a sample of sites' statistics are their definitions' from the tensors observed
        "statistics": ("stats_recorded+", "stats_recomputed+"),
        # the sites each kept trace shows are those --layers and --sites select
        "selection": ("shown", "selected+"),
        # a --dump read back holds each traced site's elements at the format's positions
        "dump": ("dump_sha256", "dump_sites", "dump_traced", "dump_unlike"),
        # every traced site holds the dtype its path's --dtype / --dtype-b names
        "dtype": ("dtype_asked", "dtype_seen"),
    },
)
def _trace_complete(m: Measured, t: Thresholds) -> list[str]:
    """Every site present once with every statistic (`complete`), each site that is a module's
    output within site_identity_rtol × its largest magnitude of that module on the traced sites
    it reads (`identity`): a hook on the wrong module, or two names swapped, fails there; and the
    statistics recorded of a sample of sites consistent with each other and with those recomputed
    by their definitions from the tensors the sites observed (`statistics`); a --dump read back
    from its bytes holds every traced site, each at its elements at the positions the format keeps
    (`dump`, contracts.dump_sample)."""
    problems = _statistics_problems(m, t) if has(m, "stats_recorded", "stats_recomputed") else []
    if has(m, "shown", "selected"):
        problems += _selection_problems(m)
    if has(m, "dtype_asked", "dtype_seen"):
        problems += _dtype_problems(m)
    if has(m, "dump_sites", "dump_traced", "dump_unlike"):
        unlike, sites, traced = items(m, "dump_unlike"), count(m, "dump_sites"), count(m, "dump_traced")
        if unlike or sites != traced:
            problems.append(
                f"the dump written holds {sites} site(s) of the {traced} traced, and "
                f"{len(unlike)} hold other elements than the traced site's at the positions the format "
                f"keeps (contracts.dump_sample): {first_few([str(u) for u in unlike], 5)}"
            )
    if has(m, "identities"):
        found = deviations(m["identities"], "site", 0.0, t["site_identity_rtol"])
        if found:
            problems.append(
                f"site(s) do not hold what their names say ({'; '.join(found)}, recomputed by the "
                "module each name names from the traced sites it reads): a hook on the wrong module?"
            )
        problems += _identity_sample_problems(m["identities"], t)
    if not has(m, "missing", "partial", "recorded_twice"):
        return problems
    gaps = {key: count(m, key) for key in ("missing", "partial", "recorded_twice")}
    if not any(gaps.values()):
        return problems
    examples = m.get("examples") if isinstance(m.get("examples"), Mapping) else {}
    parts = [
        f"{key.replace('_', ' ')}: {', '.join(map(str, examples.get(key, []))) or n}"
        for key, n in gaps.items()
        if n
    ]
    return [f"the trace is incomplete ({'; '.join(parts)})", *problems]


def _identity_sample_problems(identities: Any, t: Thresholds) -> list[str]:
    """GATE-TRACE-002's check `identity` from rev 6: each identity that states its rows was checked
    on at least min(rows, identity_sample_rows) of them (all of them under --verify), and one its
    product check measured (it states its `probes`) on at least identity_probes probes; a sample
    shrunk below that, or fewer probes, catch less than the revision states."""
    if "identity_sample_rows" not in t or not isinstance(identities, Mapping):
        return []
    short, unprobed = [], []
    for name, values in sorted(identities.items()):
        if isinstance(values, Mapping) and "rows" in values and "rows_checked" in values:
            rows, checked = number(values, "rows"), number(values, "rows_checked")
            if not checked >= min(rows, t["identity_sample_rows"]):
                short.append(f"{name} ({checked:g} of {rows:g})")
        probed = isinstance(values, Mapping) and "probes" in values and "identity_probes" in t
        if probed and not number(values, "probes") >= t["identity_probes"]:
            unprobed.append(f"{name} ({number(values, 'probes'):g})")
    problems = []
    if short:
        problems.append(
            f"identities checked on fewer rows than min(rows, identity_sample_rows = "
            f"{t['identity_sample_rows']:g}): {first_few(short, 4, '; ')}"
        )
    if unprobed:
        problems.append(
            f"identities product-checked on fewer probes than identity_probes = "
            f"{t['identity_probes']:g}: {first_few(unprobed, 4, '; ')}"
        )
    return problems


def _dtype_problems(m: Measured) -> list[str]:
    """GATE-TRACE-002's check dtype: per traced path, the dtypes its sites' tensors held against the
    one its --dtype / --dtype-b names (contracts.trace_paths.PATH_DTYPES)."""
    asked, seen = m["dtype_asked"], m["dtype_seen"]
    if not (isinstance(asked, Mapping) and isinstance(seen, Mapping)):
        raise Malformed("'dtype_asked' and 'dtype_seen' must map each path to its dtype(s)")
    problems = []
    for label, name in asked.items():
        want, held = PATH_DTYPES.get(str(name)), seen.get(label)
        if want is None or held != [want]:
            problems.append(
                f"path {label} asked for {name} ({want or 'no dtype a trace runs in'}), but its sites' "
                f"tensors held {held} (contracts.trace_paths)"
            )
    return problems


def _selection_problems(m: Measured) -> list[str]:
    """GATE-TRACE-002's check `selection`: every trace the report keeps shows exactly the sites
    contracts.selection.trace_sites selects from the forward's sites by --layers and --sites (a
    bisection stopped at the first NaN keeps none)."""
    shown, selected = m["shown"], items(m, "selected")
    if not isinstance(shown, Mapping):
        raise Malformed("'shown' must map each kept trace to the sites it shows")
    return [
        f"the {label} trace shows {len(sites)} site(s), but --layers and --sites select {len(selected)} "
        f"(contracts.selection.trace_sites): an option ignored?"
        for label, sites in shown.items()
        if list(sites) != list(selected)
    ]


def _statistics_problems(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-002's check `statistics`: per sampled site, the recorded statistics against each
    other (contracts.site_statistics.inconsistencies) and against those recomputed from its tensor:
    the counts, min, max and absmax exactly, mean and std within statistics_rtol × the recomputed
    absmax, l1_fp64 within statistics_rtol × itself (other summation orders, float32 sums on the
    torch path)."""
    recorded, recomputed = m["stats_recorded"], m["stats_recomputed"]
    if not isinstance(recorded, Mapping) or not isinstance(recomputed, Mapping):
        raise Malformed("'stats_recorded' and 'stats_recomputed' must map each site to its statistics")
    if set(recorded) != set(recomputed):
        return [f"statistics recorded of sites {sorted(recorded)}, recomputed of {sorted(recomputed)}"]
    found = []
    for site in sorted(recorded):
        mine, again = recorded[site], recomputed[site]
        if not isinstance(mine, Mapping) or not isinstance(again, Mapping):
            raise Malformed(f"the statistics of {site} are not an object of statistics")
        found += [f"{site}: {p}" for p in inconsistencies(mine)]
        found += [f"{site}: {p}" for p in _unlike_recomputed(mine, again, t["statistics_rtol"])]
    if not found:
        return []
    shown = first_few(found, 4, "; ")
    return [
        f"the trace's statistics are not what their definitions give from the tensors the sites observed "
        f"({shown}): the statistics kernel computes another quantity?"
    ]


def _unlike_recomputed(mine: Mapping[str, Any], again: Mapping[str, Any], rtol: float) -> list[str]:
    """The statistics of one site recorded otherwise than recomputed (see `_statistics_problems`);
    a statistic that is no number on either side makes the measurement malformed."""
    try:
        return unlike(mine, again, rtol, strict=True)
    except NotStatistics as error:
        raise Malformed(str(error)) from None
