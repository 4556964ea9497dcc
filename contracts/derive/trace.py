"""The records of `stack trace`, `patch` and `lens` from the `trace.json` they cite: the sites, their
statistics and the trace and lens gates they decide.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.benchmarks import finite_number, real
from contracts.derive.reports import mirrored, report_of, short, version_key, whole
from contracts.judges import judge
from contracts.schedule import linear_decay
from contracts.selection import trace_sites
from contracts.site_statistics import STATISTICS, inconsistencies, strict
from contracts.site_statistics import real as statistic_value
from contracts.trace_anomaly import block_site, site_baselines
from contracts.trace_paths import PATH_DTYPES
from contracts.trace_tolerance import judged_tolerances

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


def _ablation_reported(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's reported values (check ablation) as trace.json shows them: the mean KL, the
    changed argmaxes, the positions and (from 1.29.0) each layer's output change."""
    reported = {
        "mean_kl_reported": report.get("mean_kl"),
        "argmax_changed_reported": report.get("argmax_changed"),
        "positions_reported": report.get("positions"),
    }
    rows = [r for r in report.get("per_layer") or [] if isinstance(r, dict)]
    if rows:
        reported["output_change_reported"] = {str(r.get("layer")): r.get("output_change") for r in rows}
    return reported


def _sites_of(report: dict[str, Any], trace: str) -> list[dict[str, Any]]:
    """The sites trace.json keeps of one of its traces, in the order the forward reached them."""
    kept = ((report.get("traces") or {}).get(trace) or {}).get("sites")
    return [site for site in kept or [] if isinstance(site, dict)]


def ablation_site_problems(report: dict[str, Any]) -> list[str]:
    """Where an ablation acted, as its own two traces show it: `stack trace --ablate` zeroes each
    site it names as the forward reaches it (stack.trace.tracer), so in the ablated trace that site
    holds only zeros, and every site the forward reached before the first of them is the intact
    trace's, statistic for statistic. An ablation restated as another site than the one it zeroed
    contradicts one or the other. Where the ablated site is not
    kept, the sites of earlier blocks come before it."""
    ablated = [name for name in report.get("ablated") or [] if isinstance(name, str)]
    intact, zeroed = _sites_of(report, "intact"), _sites_of(report, "ablated")
    if not ablated or not intact or [s.get("name") for s in intact] != [s.get("name") for s in zeroed]:
        return []
    problems = []
    names = [site.get("name") for site in zeroed]
    for site in zeroed:
        stats = site.get("stats") if isinstance(site.get("stats"), dict) else {}
        if site.get("name") in ablated and stats.get("zero") != stats.get("count"):
            problems.append(
                f"it says {site['name']} was ablated, but the ablated trace holds "
                f"{stats.get('count')} value(s) there of which {stats.get('zero')} are zero"
            )
    kept = [names.index(name) for name in ablated if name in names]
    layers = [layer for name in ablated if (layer := _layer_of(name)) is not None]
    for position, (before, after) in enumerate(zip(intact, zeroed, strict=True)):
        layer = before.get("layer")
        if kept:
            reached_first = position < min(kept)
        else:
            reached_first = bool(layers) and isinstance(layer, int) and layer < min(layers)
        if reached_first and before.get("stats") != after.get("stats"):
            problems.append(
                f"{before.get('name')} differs between the intact and the ablated trace, but the forward "
                f"reaches it before {', '.join(ablated)}, which it says it ablated: nothing was zeroed "
                "before it"
            )
            break
    return problems


def _ablation_asked(report: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's check `ablated` as the record's config (held to argv by tools/argv_record)
    and trace.json show it: the sites asked, zeroed (from 1.33.0 trace.json keeps the sites the
    hooks zeroed) and named, the --sample asked and the continuations shown."""
    return {
        "ablate_asked": config.get("ablate"),
        "ablate_zeroed": report.get("zeroed"),
        "ablate_reported": report.get("ablated"),
        "sample_asked": config.get("sample"),
        "continuations": len(report.get("samples") or {}),
    }


def _patch_recorded(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-PATCH-002's recorded values as trace.json shows them: the scores (check scores) and,
    where trace.json keeps the patched scores (from 1.29.0), the grid's cells and every recovered
    fraction with the scores it came from (checks grid and recovery)."""
    metric = report.get("metric") or {}
    recorded: dict[str, Any] = {
        "clean_recorded": metric.get("clean"),
        "corrupted_recorded": metric.get("corrupted"),
    }
    rows = [r for r in report.get("per_layer") or [] if isinstance(r, dict)]
    if "full_patched" not in report or not all(isinstance(r.get("patched"), list) for r in rows):
        return recorded
    cells = [
        {"site": r.get("site"), "position": p, "patched": s, "recovered": v}
        for r in rows
        for p, v, s in zip(r.get("positions") or [], r.get("recovered") or [], r["patched"], strict=False)
    ]
    return recorded | {
        "grid_cells": [[c["site"], c["position"]] for c in cells],
        "recovery_clean": metric.get("clean"),
        "recovery_corrupted": metric.get("corrupted"),
        "recovery_cells": cells,
        "recovery_full": {"patched": report["full_patched"], "recovered": report.get("full_recovered")},
    }


@derives("trace", "patch", "lens")
def trace_record(inputs: Inputs) -> Derivation:
    """The verdict, first anomaly and per-layer summary the record repeats from trace.json (and a
    lens-train record's, contracts.derive.training.lens_train_record)."""
    derived = Derivation()
    report = report_of(inputs, derived, "trace.json", "1.0.0")
    if report is not None:
        mirrored(derived, report, ("trace_schema_version", "mode", "verdict", "first", "per_layer"))
        for label, described in (report.get("paths") or {}).items():  # config.path_a: paths.A, ...
            derived.put(("config", f"path_{str(label).lower()}"), described)
        if isinstance(report.get("tokens"), list) and report["tokens"]:
            derived.put(("config", "tokens"), len(report["tokens"]))
            derived.problems += spelled_problems(report["tokens"], (inputs.record.config or {}).get("prompt"))
        elif len(traced := traced_tokens(report)) > 1:
            derived.problems.append(f"trace.json: its traces ran on different numbers of tokens, {traced}")
        elif traced:
            derived.put(("config", "tokens"), traced[0])
        results = {g.id: g.measured for g in inputs.record.gates if isinstance(g.measured, dict)}
        wanted = {gate_id for gate_id in results if gate_id not in inputs.stale}
        mode = report.get("mode")
        _options_derived(inputs, derived, report)
        config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
        derived.problems += [f"trace.json: {p}" for p in site_dtype_problems(report, config)]
        if mode == "ablation":
            derived.problems += [f"trace.json: {p}" for p in ablation_site_problems(report)]
        if mode == "ablation" and "GATE-TRACE-003" in wanted:
            derived.gate("GATE-TRACE-003", _ablation_reported(report), optional=True)
            derived.gate("GATE-TRACE-003", _ablation_asked(report, config), optional=True)
        if mode in ("bisect", "compare") and "GATE-TRACE-003" in wanted:
            asked = {"atol_asked": config.get("atol"), "rtol_asked": config.get("rtol")}
            tolerances = {"site_tolerances": judged_tolerances(report)}
            derived.gate("GATE-TRACE-003", asked | tolerances, optional=True)
            if "margins_reported" in results["GATE-TRACE-003"] and "comparisons" in report:
                derived.gate("GATE-TRACE-003", {"margins_reported": reported_margins(report)})
        if mode in ("patch", "patch-sweep") and "GATE-PATCH-002" in wanted:
            recorded = _patch_recorded(report)
            derived.gate("GATE-PATCH-002", recorded, optional=True)
            if "grid_cells" in recorded:  # check asked: the cells trace.json keeps, on its tokens
                tokens = report.get("tokens")
                asked = {"asked_cells": recorded["grid_cells"], "asked_tokens": config.get("tokens")}
                if isinstance(tokens, list) and tokens:
                    asked["asked_tokens"] = len(tokens)
                derived.gate("GATE-PATCH-002", asked, optional=True)
            derived.problems += unwritten_recovery_problems(results["GATE-PATCH-002"])
        sites = (report.get("trace") or {}).get("sites")
        if "GATE-TRACE-002" in wanted:
            config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
            _selection_derived(derived, results["GATE-TRACE-002"], report, config)
        if isinstance(sites, list) and "GATE-TRACE-002" in wanted:
            _statistics_recorded(derived, results["GATE-TRACE-002"], sites)
            _identity_references(derived, results["GATE-TRACE-002"], sites)
        if mode in ("patch", "patch-sweep"):
            _patch_positions(derived, report, (inputs.record.config or {}).get("patch_positions"))
            patched = [r.get("site") for r in report.get("per_layer") or [] if isinstance(r, dict)]
            if patched:  # the sites its grid patched, one per_layer row each
                derived.put(("config", "patch_sites"), patched, optional=True)
        if mode == "ablation":
            derived.problems += [
                f"trace.json: {p}" for p in logit_count_problems(report.get("logits"), config)
            ]
        derived.problems += statistics_problems(report)
        if mode == "single" and isinstance(sites, list):
            limits = inputs.spec.gates["GATE-TRACE-003"].threshold_values
            revision = _judged_revision(inputs, "GATE-TRACE-003")
            problems = single_trace_problems(report, sites, limits, revision)
            derived.problems += [f"trace.json: {p}" for p in problems]
            if "GATE-TRACE-003" in wanted:
                _anomalies_measured(derived, report, sites)
        elif mode in ("tuned-lens", "logit-lens"):
            derived.problems += [f"trace.json: {p}" for p in lens_problems(report)]
            derived.problems += [f"trace.json: {p}" for p in lens_mode_problems(mode, config)]
            readings = [r for r in report.get("readings") or [] if isinstance(r, dict)]
            if "GATE-LENS-005" in wanted and len(readings) > 1:
                at = ("gates", "GATE-LENS-005", "measured", "sites")
                derived.put(at, lens_stream_sites(readings), optional=True)
            if "GATE-LENS-006" in wanted:  # the KLs, entropies and top tokens it held are the ones shown
                for key, field in (
                    ("reading_kl", "kl"),
                    ("reading_entropy", "entropy"),
                    ("reading_top", "top"),
                ):
                    at = ("gates", "GATE-LENS-006", "measured", key)
                    derived.put(at, [r.get(field) for r in readings], optional=True)
        elif mode == "lens-train":
            _lens_train_measured(derived, inputs.record.config, results, wanted, report)
        tokens = report.get("tokens")
        if isinstance(tokens, list) and tokens:
            derived.problems += element_problems(results, wanted, len(tokens), report)
    return derived


def _options_derived(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> None:
    """The config values of options whose consumed value trace.json shows: the table's statistic
    (`stat`, from 1.32.0), a lens's read position, a patch's target and foil ids (its metric). A
    record before 1.32.0 has no config.stat or config.position."""
    older = version_key(inputs.record.spec.version) < (1, 32, 0)
    if "stat" in report:
        derived.put(("config", "stat"), report["stat"], optional=older)
    if report.get("mode") in ("tuned-lens", "logit-lens") and "position" in report:
        derived.put(("config", "position"), report["position"], optional=older)
    metric = report.get("metric")
    if report.get("mode") in ("patch", "patch-sweep") and isinstance(metric, dict):
        derived.put(("config", "target"), metric.get("target"))
        derived.put(("config", "foil"), metric.get("foil"))


# The path each kept trace of a report ran on (paths.A, paths.B): a single trace and both sides of
# an ablation are path A's.
TRACE_PATH = {"trace": "A", "A": "A", "B": "B", "intact": "A", "ablated": "A"}


# A described path, `LABEL (backend, dtype)` or, from a dump, `LABEL (backend, dtype, device)`.
PATH_RE = re.compile(r"\((?P<backend>[\w-]+), (?P<dtype>\w+)(?:, [\w:]+)?\)$")


def described_path(described: Any) -> dict[str, str] | None:
    """The backend and dtype a described path names, None where it names none."""
    found = PATH_RE.search(described) if isinstance(described, str) else None
    return None if found is None else found.groupdict()


def reported_margins(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's check margins held the minimum tolerances trace.json reports of each compared
    site (the shadow bisection's under --shadow: it ran last, and the record keeps the last one's):
    site → its min_atol and min_rtol, as strict JSON keeps them."""
    rows = report.get("shadow") or report.get("comparisons") or []
    return {
        row.get("name"): {"min_atol": row.get("min_atol"), "min_rtol": row.get("min_rtol")}
        for row in rows
        if isinstance(row, dict)
    }


def site_dtype_problems(report: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Every site of a kept trace holds the dtype of the path it ran on (paths.A for a single trace
    or an ablation, paths.B for B's): a path described in another dtype than its forward ran in
    (--dtype bf16 traced in fp32) contradicts its own sites. A bisection's trace.json
    describes no paths: there the record's config.path_a / path_b, the paths the command line asked
    for, are the ones (`--dtype-b bf16` run in fp16 went unchecked)."""
    paths = report.get("paths") if isinstance(report.get("paths"), dict) else {}
    problems = []
    for label in _kept_sites(report):
        path_label = TRACE_PATH.get(label, "")
        described = paths.get(path_label, config.get(f"path_{path_label.lower()}"))
        if described is None and report.get("mode") == "bisect":
            problems.append(f"the {label} trace's path is described neither in trace.json nor in the config")
        if described is None:
            continue
        path = described_path(described)
        want = PATH_DTYPES.get(path["dtype"]) if path is not None else None
        if want is None:
            problems.append(f"path {described!r} names no dtype a trace runs in")
            continue
        sites = _kept(report)[label].get("sites") or []
        found = sorted({str(site.get("dtype")) for site in sites if isinstance(site, dict)} - {want})
        if found:
            problems.append(
                f"the {label} trace's sites hold {', '.join(found)}, but its path {described!r} is {want}"
            )
    return problems


# The sites of a trace that hold one row per prompt token: (batch, tokens, ...).
TOKEN_ROW_SITES = ("embed", "logits")


def traced_tokens(report: dict[str, Any]) -> list[int]:
    """The token counts the traced forwards ran on, one per distinct count: the token axis of the
    embedding or the logits in each trace the report keeps (config.tokens restates it, and
    GATE-TRACE-003's site counts are tokens × width). Empty when no such site was kept."""
    traces = [report.get("trace"), *(report.get("traces") or {}).values()]
    return sorted(
        {
            site["shape"][1]
            for trace in traces
            if isinstance(trace, dict)
            for site in trace.get("sites") or []
            if isinstance(site, dict)
            and site.get("name") in TOKEN_ROW_SITES
            and isinstance(site.get("shape"), list)
            and len(site["shape"]) >= 2
        }
    )


def spelled_problems(tokens: list[Any], prompt: Any) -> list[str]:
    """trace.json's tokens are each prompt token decoded on its own: together they spell the prompt
    the record states (where every piece decodes whole: a byte of a character cut across tokens
    decodes to U+FFFD, and then only their count is held)."""
    if not isinstance(prompt, str) or not all(isinstance(t, str) for t in tokens):
        return []
    spelled = "".join(tokens)
    if spelled == prompt or "\ufffd" in spelled:
        return []
    return [f"trace.json: its tokens spell {spelled!r}, but config.prompt is {prompt!r}"]


def _kept(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each trace trace.json keeps, by label (`trace`, or A/B, intact/ablated)."""
    kept = {"trace": report.get("trace"), **(report.get("traces") or {})}
    return {str(label): trace for label, trace in kept.items() if isinstance(trace, dict)}


def _kept_sites(report: dict[str, Any]) -> dict[str, list[Any]]:
    """The site names each trace trace.json keeps shows, by label."""
    return {
        label: [site.get("name") for site in trace.get("sites") or [] if isinstance(site, dict)]
        for label, trace in _kept(report).items()
    }


def _identity_references(derived: Derivation, measured: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-002's identities are measured against the traced site:
    each identity's `ref_absmax`, the largest magnitude of the site's recomputation, lies within the
    identity's own `max_abs_diff` of the absmax trace.json's stats hold of the traced site, since
    two tensors' largest magnitudes differ by at most their largest difference. On CPU the two are
    bit for bit the same and the bound is equality; on CUDA the recomputation may round another way
    (the H100 reference run's q, k and v differed in their last float32 bit), within that bound.
    An identity checked on a sample of its rows (GATE-TRACE-002 rev 6: `rows_checked` < `rows`) saw
    the recomputation of those rows only, whose largest magnitude is at most the site's, and one
    its product check measured (rev 7, every row of a short site from rev 9: it states its
    `probes`) the rows' projections on unit-L1 vectors, whose largest magnitude is at most the
    rows': there the bound is one-sided, ref_absmax ≤ the site's absmax + max_abs_diff."""
    identities = measured.get("identities")
    absmax = {
        s["name"]: s["stats"]["absmax"]
        for s in sites
        if isinstance(s, dict) and isinstance(s.get("stats"), dict) and "absmax" in s["stats"]
    }
    for name, identity in (identities if isinstance(identities, dict) else {}).items():
        if not (isinstance(identity, dict) and "ref_absmax" in identity and name in absmax):
            continue
        stated, traced, apart = identity["ref_absmax"], absmax[name], identity.get("max_abs_diff")
        sampled = _sampled(identity.get("rows_checked"), identity.get("rows")) or "probes" in identity
        if all(finite_number(v) for v in (stated, traced, apart)) and (
            0 <= stated <= traced + apart if sampled else abs(stated - traced) <= apart
        ):
            continue
        derived.put(("gates", "GATE-TRACE-002", "measured", "identities", name, "ref_absmax"), traced)


def _patch_positions(derived: Derivation, report: dict[str, Any], stated: Any) -> None:
    """config.patch_positions is what the patch ran at (stack.cli.trace): the positions trace.json's
    layers were patched at, which a sweep (every position) states as "every" (an older stack listed
    them; `stated`, the record's, says which form it wrote)."""
    layers = [line for line in report.get("per_layer") or [] if isinstance(line, dict)]
    positions = sorted({p for line in layers for p in line.get("positions") or []})
    if report.get("mode") == "patch-sweep" and not isinstance(stated, list):
        derived.put(("config", "patch_positions"), "every", optional=True)
    elif positions:
        derived.put(("config", "patch_positions"), positions, optional=True)


def _selection_derived(
    derived: Derivation, measured: dict[str, Any], report: dict[str, Any], config: dict[str, Any]
) -> None:
    """GATE-TRACE-002's site count is the forward's (every site of the model, `traced` from rev 4),
    never trace.json's, which keeps only what --layers and --sites select; a record without
    `traced` and with no selection keeps every site, so trace.json's count is the model's. Check
    selection's sites shown are trace.json's, and those selected contracts.selection.trace_sites's
    of the traced sites by config.layers and config.sites."""
    at = ("gates", "GATE-TRACE-002", "measured")
    kept = _kept_sites(report)
    traced = measured.get("traced")
    chosen_by = {key: config.get(key) for key in ("layers", "sites")}
    if any(value is not None and not isinstance(value, str) for value in chosen_by.values()):
        derived.problems += [
            f"config.{key} is {value!r}, not the text of its --{key} option: its selection is not derived"
            for key, value in chosen_by.items()
            if value is not None and not isinstance(value, str)
        ]
    elif isinstance(traced, list):
        derived.put((*at, "sites"), len(traced), optional=True)
        derived.put((*at, "shown"), kept, optional=True)
        depths = [t["n_layers"] for t in _kept(report).values() if isinstance(t.get("n_layers"), int)]
        chosen = trace_sites(
            [str(n) for n in traced], config.get("layers"), config.get("sites"), depths[0] if depths else 0
        )
        derived.put((*at, "selected"), chosen, optional=True)
    elif config.get("layers") is None and config.get("sites") is None and kept.get("trace") is not None:
        derived.put((*at, "sites"), len(kept["trace"]), optional=True)


def _sampled(checked: Any, rows: Any) -> bool:
    """Whether a check stated to have read `checked` of `rows` rows read fewer than all."""
    return isinstance(checked, int) and isinstance(rows, int) and checked < rows


def _statistics_recorded(derived: Derivation, measured: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-002's check statistics judged the statistics trace.json holds of each site it
    sampled (from 1.30.0): its recorded ones are those of the same sites there. A sampled site that
    --layers or --sites left out of the report (the `selected` sites say which) is not there. From
    rev 6 a site checked on a slice of its rows (`stats_rows`: [checked, rows], checked < rows) has
    the slice's statistics recorded, which lie within the site's: min and max within the site's,
    absmax and the counts at most its (`slice_problems`)."""
    sampled = measured.get("stats_recorded")
    if not isinstance(sampled, dict):
        return
    held = {site.get("name"): site.get("stats") for site in sites if isinstance(site, dict)}
    shown = measured.get("selected")
    slices = measured.get("stats_rows") if isinstance(measured.get("stats_rows"), dict) else {}
    for name in (n for n in sampled if not isinstance(shown, list) or n in shown or n in held):
        at = ("gates", "GATE-TRACE-002", "measured", "stats_recorded", name)
        if _sampled(*(slices.get(name) or [None, None])):
            derived.problems += [
                f"gates[GATE-TRACE-002].measured.stats_recorded.{name}: {problem}"
                for problem in slice_problems(sampled[name], held.get(name))
            ]
        else:
            derived.put(at, strict(held.get(name) or {}))


def slice_problems(part: Any, whole: Any) -> list[str]:
    """What the statistics of a slice of a site say against the site's own: its min and max lie
    within the site's, its absmax and its count, NaN, Inf and zero counts are at most the site's."""
    if not (isinstance(part, dict) and isinstance(whole, dict)):
        return ["the slice or its site has no statistics to hold it to"]
    a = {key: statistic_value(part.get(key)) for key in STATISTICS}
    b = {key: statistic_value(whole.get(key)) for key in STATISTICS}
    if None in a.values() or None in b.values():
        return ["its statistics or its site's are not numbers"]
    low = {"min"}  # the one bound from below; a NaN (a site with NaN) bounds nothing
    return [
        f"the slice's {key} {a[key]!r} lies outside its site's ({b[key]!r})"
        for key in ("min", "max", "absmax", "count", "nan", "inf", "zero")
        if not (math.isnan(a[key]) or math.isnan(b[key]))
        and not (a[key] >= b[key] if key in low else a[key] <= b[key])
    ]


def statistics_problems(report: dict[str, Any]) -> list[str]:
    """Every site of every trace trace.json keeps, its statistics against each other (absmax is
    max(−min, max) exactly, min ≤ max, the counts within the count: contracts.site_statistics), as
    GATE-TRACE-002's check statistics holds the sites it sampled."""
    traces = [report.get("trace"), *(report.get("traces") or {}).values()]
    problems = []
    for trace in (t for t in traces if isinstance(t, dict)):
        for site in (s for s in trace.get("sites") or [] if isinstance(s, dict)):
            stats = site.get("stats")
            found = inconsistencies(stats) if isinstance(stats, dict) else ["no statistics"]
            problems += [f"trace.json: site {site.get('name')}: {p}" for p in found]
    return problems


# A patching cell's fields the recovery check keys and reads by: (key, type, what it must be).
CELL_FIELDS = (
    ("site", str, "a site's name"),
    ("position", int, "a position"),
    ("written", list, "a list of the writes made"),
)


def unwritten_recovery_problems(measured: dict[str, Any]) -> list[str]:
    """A patching cell whose forward overwrote no position is the corrupted forward itself: its
    patched score is the corrupted score and it recovers nothing. What GATE-PATCH-002's cells say
    was written, against what its recovery says was scored."""
    cells, scored = measured.get("cells"), measured.get("recovery_cells")
    corrupted = measured.get("recovery_corrupted")
    if not isinstance(cells, list) or not isinstance(scored, list):
        return []
    unread = [
        f"gates[GATE-PATCH-002].measured.{name}[{at}].{key} is {row.get(key)!r}, not {what}"
        for name, rows in (("cells", cells), ("recovery_cells", scored))
        for at, row in enumerate(rows)
        if isinstance(row, dict)
        for key, kind, what in CELL_FIELDS
        if key in row and not isinstance(row[key], kind)
    ]
    if unread:
        return unread
    by_cell = {(row.get("site"), row.get("position")): row for row in scored if isinstance(row, dict)}
    problems = []
    for cell in (c for c in cells if isinstance(c, dict)):
        if any(isinstance(w, dict) and w.get("changed") for w in cell.get("written") or []):
            continue
        where = f"{cell.get('site')} at position {cell.get('position')}"
        row = by_cell.get((cell.get("site"), cell.get("position")))
        if row is not None and (row.get("patched") != corrupted or row.get("recovered") != 0):
            problems.append(
                f"gates[GATE-PATCH-002]: {where} wrote nothing, yet scored {row.get('patched')!r} (the "
                f"corrupted run {corrupted!r}) and recovered {row.get('recovered')!r}"
            )
    return problems


# The lens training's SGD hyper-parameters besides the rate, as its record's config names them
# (stack.lens.train.LensTraining.stated_hyperparameters).
LENS_HYPERPARAMETERS = ("weight_decay", "momentum", "nesterov")


def _lens_train_measured(
    derived: Derivation, config: Any, results: dict[str, Any], wanted: set[str], report: dict[str, Any]
) -> None:
    """What a lens-train record's gates restate of trace.json and of its config: the held-out rows
    (GATE-LENS-003's, and GATE-LENS-006's reported ones) are trace.json's per_layer, and the losses
    GATE-LENS-006's check objective held (first and last step) its losses; GATE-LENS-002's
    scheduled rates are the lens schedule of the config's lr and steps (contracts.schedule), and the
    hyper-parameters its check hyperparameters held every step to the config's weight decay,
    momentum and Nesterov flag, and the clip norm its check clip held every step's gradients to the
    config's clip_norm; GATE-LENS-006's stated held-out windows are the config's heldout_batches ×
    batch_size; and GATE-LENS-001 compared the logits of every lens site
    (GATE-LENS-005's sites, the embedding and each block) on the first batch, sites × batch_size ×
    seq_len × vocabulary elements, the vocabulary being what GATE-LENS-005's one site of a batch of
    that shape holds."""
    for gate_id in ("GATE-LENS-003", "GATE-LENS-006"):
        if gate_id in wanted:
            derived.put(("gates", gate_id, "measured", "layers"), report.get("per_layer"), optional=True)
    config = config if isinstance(config, dict) else {}
    lr, steps, batch, seq_len = (config.get(k) for k in ("lr", "steps", "batch_size", "seq_len"))
    losses = report.get("losses")
    if "GATE-LENS-006" in wanted and isinstance(losses, dict) and whole(steps) and steps > 0:
        first_last = [losses.get("first"), losses.get("last")][: min(steps, 2)]
        derived.put(("gates", "GATE-LENS-006", "measured", "objective_losses"), first_last, optional=True)
    if "GATE-LENS-006" in wanted and whole(steps) and steps > 0:  # the first step and the last
        derived.put(("gates", "GATE-LENS-006", "measured", "objective_steps"), sorted({1, steps}), True)
    if "GATE-LENS-002" in wanted and real(lr) and whole(steps) and steps > 0:
        derived.put(("gates", "GATE-LENS-002", "measured", "scheduled_lrs"), linear_decay(lr, steps), True)
    if "GATE-LENS-002" in wanted:  # the hyper-parameters its check held every step to are the config's
        stated = {key: config.get(key) for key in LENS_HYPERPARAMETERS}
        derived.put(("gates", "GATE-LENS-002", "measured", "stated_hyperparameters"), stated, optional=True)
        derived.put(("gates", "GATE-LENS-002", "measured", "stated_clip_norm"), config.get("clip_norm"), True)
    heldout = config.get("heldout_batches")
    if "GATE-LENS-006" in wanted and whole(heldout, batch):  # the count its check windows held the set to
        stated_windows = heldout * batch
        derived.put(("gates", "GATE-LENS-006", "measured", "heldout_windows_stated"), stated_windows, True)
    read = results.get("GATE-LENS-005") or {}
    sites, elements = read.get("sites"), read.get("elements")
    if not ("GATE-LENS-001" in wanted and isinstance(sites, list) and whole(elements, batch, seq_len)):
        return
    if batch * seq_len == 0 or elements % (batch * seq_len):
        derived.problems.append(
            f"gates[GATE-LENS-005].measured.elements is {elements}, not a whole vocabulary for each of "
            f"its batch_size {batch} × seq_len {seq_len} positions"
        )
        return
    derived.put(("gates", "GATE-LENS-001", "measured", "elements"), len(sites) * elements, optional=True)


def _anomalies_measured(derived: Derivation, report: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-003's check `anomalies` judged what the report holds: the statistics every
    baseline read, the sites judged, and the anomalies named with their baselines' layers."""
    at = ("gates", "GATE-TRACE-003", "measured")
    named = [a for a in report.get("anomalies") or [] if isinstance(a, dict)]
    derived.put((*at, "site_stats"), report.get("site_stats"), optional=True)
    derived.put((*at, "sites_judged"), [s.get("name") for s in sites if isinstance(s, dict)], optional=True)
    derived.put(
        (*at, "anomalies_named"),
        [{"name": a.get("name"), "baseline_layers": a.get("baseline_layers")} for a in named],
        optional=True,
    )


def _stat(site: dict[str, Any], key: str) -> Any:
    return (site.get("stats") or {}).get(key)


def _nonfinite(site: dict[str, Any]) -> bool:
    held = [_stat(site, "nan"), _stat(site, "inf")]
    return any(isinstance(x, int | float) and x > 0 for x in held)


def _layer_of(name: Any) -> int | None:
    parts = str(name).split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() else None


def _judged_revision(inputs: Inputs, gate_id: str) -> int:
    """The revision of `gate_id` the record was judged under (the spec's own where it judged none):
    a rule that changed is derived again as that revision had it."""
    held = [g.revision for g in inputs.record.gates if g.id == gate_id]
    return held[0] if held else inputs.spec.gates[gate_id].revision


def single_trace_problems(
    report: dict[str, Any], sites: list[Any], limits: Mapping[str, float | int], revision: int
) -> list[str]:
    """A single-path trace's summary from its own sites (stack.trace.modes.single): the sites holding
    NaN/Inf are exactly its non-finite producers and carriers, in forward order; each layer's row
    restates its `layers.i.output` statistics, its non-finite sites and its anomalies; a non-finite
    site of a block is an anomaly (GATE-TRACE-003 names a site that is not finite); its anomalies
    and baselines are those GATE-TRACE-003's rule gives from its sites' statistics under `limits`
    (`anomaly_problems`, by the rule of GATE-TRACE-003 `revision`, the one the record was judged
    under); the verdict is clean only without anomalies, and `first` is the first anomaly (or
    producer)."""
    sites = [site for site in sites if isinstance(site, dict)]
    problems = anomaly_problems(report, sites, limits, revision)
    held = [str(site.get("name")) for site in sites if _nonfinite(site)]
    listed = report.get("nonfinite") or {}
    named = [*(listed.get("producers") or []), *(listed.get("carriers") or [])]
    if sorted(map(str, named)) != sorted(held):
        problems.append(
            f"its sites holding NaN/Inf are {held}, but it names {named} as producers and carriers"
        )
    anomalies = [a for a in report.get("anomalies") or [] if isinstance(a, dict)]
    flagged = {str(a.get("name")) for a in anomalies}
    with_layer = {str(site.get("name")): site for site in sites if _layer_of(site.get("name")) is not None}
    for name in held:
        layer = _layer_of(name)
        kind = name.split(".", 2)[-1]
        elsewhere = [
            other
            for other, site in with_layer.items()
            if _layer_of(other) != layer and other.split(".", 2)[-1] == kind and _stat(site, "count")
        ]
        if layer is not None and elsewhere and _stat(with_layer[name], "count") and name not in flagged:
            problems.append(f"its site {name} holds NaN/Inf, but it is not among its anomalies")
    by_name = {str(site.get("name")): site for site in sites}
    rows = [row for row in report.get("per_layer") or [] if isinstance(row, dict)]
    for row in rows:
        i, output = row.get("layer"), by_name.get(f"layers.{row.get('layer')}.output")
        expected = {
            "nonfinite_sites": sum(1 for n in named if str(n).startswith(f"layers.{i}.")),
            "anomalies": [
                str(a.get("name")).split(".", 2)[-1] for a in anomalies if _layer_of(a.get("name")) == i
            ],
        }
        if output is not None:
            expected |= {"output_std": _stat(output, "std"), "output_absmax": _stat(output, "absmax")}
        for key, value in expected.items():
            if key in row and not same(row[key], value):
                problems.append(
                    f"per_layer[{i}].{key} is {short(row[key])}, but its sites give {short(value)}"
                )
    verdict, first = report.get("verdict"), report.get("first")
    if verdict != "nonfinite":
        want = ("anomaly", anomalies[0].get("name")) if anomalies else ("clean", None)
        if (verdict, first) != want:
            problems.append(
                f"its verdict is {verdict!r} (first {first!r}), but its anomalies give {want[0]!r}"
            )
    elif first not in (listed.get("producers") or [None])[:1]:
        problems.append(f"its verdict is nonfinite at {first!r}, but its first producer is another site")
    return problems


def anomaly_problems(
    report: dict[str, Any], sites: list[dict[str, Any]], limits: Mapping[str, float | int], revision: int
) -> list[str]:
    """GATE-TRACE-003's anomalies derived again from the report's own statistics: `site_stats`
    (what every baseline read: each block site of the trace; a report before spec 1.26.0 has none,
    and its sites, then every site, stand in) agree with its sites' statistics; each judged site's
    baseline (`baselines`, where kept) is over the layers the rule takes, never its own; and the
    anomalies it names are the judged sites the rule flags, in order (contracts.trace_anomaly)."""
    own = {str(site.get("name")): site.get("stats") for site in sites if isinstance(site.get("stats"), dict)}
    kept = report.get("site_stats")
    stats = kept if isinstance(kept, dict) else {n: v for n, v in own.items() if block_site(n)}
    if not all(isinstance(held, dict) for held in stats.values()):
        return ["its site_stats hold an entry that is no object of statistics"]
    problems = [
        f"site_stats[{name}] is {short(stats[name])}, but its site's statistics say otherwise"
        for name in sorted(own.keys() & stats.keys())
        if any(not same(stats[name].get(key), own[name].get(key)) for key in ("count", "std", "nan", "inf"))
    ]
    if problems:
        return problems
    judged = site_baselines(stats, [str(site.get("name")) for site in sites], revision)
    listed = report.get("baselines")
    if isinstance(listed, list):
        given = [(str(b.get("name")), b.get("baseline_layers")) for b in listed if isinstance(b, dict)]
        wanted = [(b.name, list(b.baseline_layers)) for b in judged]
        if given != wanted:
            problems.append(
                f"its baselines are over layers {given}, but its sites' statistics give {wanted} "
                "(the same site in every other layer that saw something finite, never its own)"
            )
    flagged = [b.name for b in judged if judge("GATE-TRACE-003", b.measured(), limits)]
    named = [str(a.get("name")) for a in report.get("anomalies") or [] if isinstance(a, dict)]
    if named != flagged:
        problems.append(
            f"it names anomalies {named}, but GATE-TRACE-003's rule on its sites' statistics flags "
            f"{flagged} (each site's std, or its gain, against the median of the same site in the other "
            "layers)"
        )
    return problems


def lens_mode_problems(mode: Any, config: dict[str, Any]) -> list[str]:
    """`stack lens` reads with the tuned lens its --lens names and with the logit lens otherwise, and
    says which in its mode (stack/cli/lens.py): a mode the config's lens (held to the command line by
    tools/argv_record) contradicts is a reading restated as another."""
    if "lens" not in config:
        return []
    wanted = "logit-lens" if config["lens"] is None else "tuned-lens"
    if mode == wanted:
        return []
    return [f"its mode is {mode!r}, but config.lens is {config['lens']!r}: that reading is the {wanted}"]


def lens_stream_sites(readings: list[dict[str, Any]]) -> list[Any]:
    """GATE-LENS-005's sites, the residual stream a lens reading read: the site of every reading but
    the last (the input of each block) and, in place of the last (the logits), the stream leaving the
    last block, `layers.{n - 1}.output` of n blocks (stack.lens.residual.stream_sites), so a site
    dropped from the sites stated is found."""
    return [*(r.get("site") for r in readings[:-1]), f"layers.{len(readings) - 2}.output"]


def logit_count_problems(logits: Any, config: dict[str, Any]) -> list[str]:
    """The logits an ablation compared are its tokens × the vocabulary: trace.json's logits.elements is
    the product of the shape it states, whose positions are the record's tokens, so restated elements
    are found."""
    if not isinstance(logits, dict):
        return []
    shape, elements, tokens = logits.get("shape_a"), logits.get("elements"), config.get("tokens")
    if not (isinstance(shape, list) and len(shape) >= 2 and all(whole(n) for n in shape)):
        return [f"logits.shape_a is {shape!r}, no shape of (…, tokens, vocabulary) to count its elements by"]
    problems = []
    if logits.get("shape_b") not in (None, shape):
        problems.append(f"logits.shape_b is {logits.get('shape_b')!r}, but shape_a {shape!r}")
    if whole(tokens) and shape[-2] != tokens:
        problems.append(f"logits.shape_a is {shape!r}, but config.tokens is {tokens}")
    if elements != math.prod(shape):
        problems.append(
            f"logits.elements is {elements!r}, but its shape {shape!r} holds {math.prod(shape)} "
            f"({shape[-2]} tokens × vocabulary {shape[-1]})"
        )
    return problems


def lens_problems(report: dict[str, Any]) -> list[str]:
    """A lens trace's per-layer summary restates its readings but the last (the final layer, what
    every other is compared with; stack.lens.report.lens_result): each layer's site, KL and entropy
    per position, and the probability of its top token (the first of each position's top list)."""
    rows = [row for row in report.get("per_layer") or [] if isinstance(row, dict)]
    readings = [r for r in report.get("readings") or [] if isinstance(r, dict)][:-1]
    if not readings:
        return []
    if len(rows) != len(readings):
        return [f"per_layer has {len(rows)} layers, but its readings {len(readings)} before the final one"]
    problems = []
    for row, reading in zip(rows, readings, strict=True):
        expected = {key: reading.get(key) for key in ("layer", "site", "kl", "entropy")}
        top = reading.get("top")
        if isinstance(top, list) and all(isinstance(t, list) and t and isinstance(t[0], list) for t in top):
            expected["top1_prob"] = [t[0][1] for t in top]
        for key, value in expected.items():
            if key in row and not same(row[key], value):
                problems.append(
                    f"per_layer[{row.get('layer')}].{key} is {short(row[key])}, but its reading gives "
                    f"{short(value)}"
                )
    return problems


# The gates that compare the model's logits over a trace's tokens element by element.
LOGIT_ELEMENT_GATES = ("GATE-LENS-005", "GATE-PATCH-001", "GATE-PATCH-002")


def element_problems(
    results: dict[str, Any], wanted: set[str], tokens: int, report: dict[str, Any]
) -> list[str]:
    """The logits compared over a trace's tokens are tokens × vocabulary elements: each gate's
    `elements` a whole multiple of the tokens, the same vocabulary for every such gate, and more
    entries than any token id its readings name."""
    vocab: dict[str, Any] = {}
    for gate_id in LOGIT_ELEMENT_GATES:
        elements = (results.get(gate_id) or {}).get("elements") if gate_id in wanted else None
        if isinstance(elements, int) and not isinstance(elements, bool):
            vocab[gate_id] = elements / tokens
    problems = [
        f"gates[{g}].measured.elements is {int(v * tokens)}, not a whole multiple of its {tokens} tokens"
        for g, v in vocab.items()
        if v != int(v)
    ]
    if len(set(vocab.values())) > 1:
        problems.append(f"its logit-comparing gates count different vocabularies: {vocab}")
    ids = [
        entry[0]
        for reading in report.get("readings") or []
        if isinstance(reading, dict)
        for position in reading.get("top") or []
        if isinstance(position, list)
        for entry in position
        if isinstance(entry, list) and entry and isinstance(entry[0], int)
    ]
    if ids and any(v <= max(ids) for v in vocab.values()):
        problems.append(
            f"its elements count a vocabulary {sorted(vocab.values())} no larger than token id {max(ids)}"
        )
    return problems
