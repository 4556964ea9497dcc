"""The record of `stack prepare` from its manifest's per-source reports (`manifest.json`): the
filters' books, the held-out split's coverage and the data gates they decide.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.prepare_options import OPTIONS_SINCE, prepare_options
from contracts.derive.reports import MANIFEST, PER_ITEM_SINCE, report_of, version_key
from contracts.evidence import RunStatus
from contracts.leak_canaries import canary_rows
from contracts.shard_layout import shard_bytes
from contracts.split import share_measured

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# What GATE-DATA-013 and GATE-DATA-015 measure of each source's filter report; the prepare that judges
# them and the derivation from its manifest both shape the values here.
COVERAGE_KEYS = ("filters", "pre_clean", "waiver", "documents_in", "canaries")


SHARE_KEYS = ("documents_in", "dropped", "examples", "filters", "scripts")


def per_source(reports: dict[str, Any], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each source's report cut to `keys` (a key a report lacks is None)."""
    return {name: {key: row.get(key) for key in keys} for name, row in reports.items()}


# Since this spec version a prepare's manifest keeps each source's byte account (GATE-DATA-014's
# check bytes), and its record holds the round trip (GATE-DATA-007) and the stored keys' counts
# (GATE-DATA-005's check stored) the manifest's counts give again.
ACCOUNTS_SINCE = "1.30.0"


def _prepare_since_1_30(inputs: Inputs, derived: Derivation, manifest: dict[str, Any]) -> None:
    """What a prepare's manifest and config give again of the checks of spec 1.30.0: each source's
    byte account (GATE-DATA-014 bytes), the settings the filter rules were judged by (GATE-DATA-013
    rules), the data's tokenizer and held-out documents (GATE-DATA-007 round_trip), and the
    documents of both splits and of the held-out one (GATE-DATA-005 stored)."""
    results = {g.id: g.measured for g in inputs.record.gates if g.id not in inputs.stale}

    def judged(gate_id: str, key: str) -> bool:
        measured = results.get(gate_id)
        return isinstance(measured, dict) and key in measured

    if judged("GATE-DATA-014", "accounts"):
        derived.put(
            ("gates", "GATE-DATA-014", "measured", "accounts"),
            manifest.get("accounting"),
            since=ACCOUNTS_SINCE,
        )
    settings = (inputs.record.config or {}).get("filter_settings") or {}
    if judged("GATE-DATA-013", "rules") and isinstance(settings, dict):
        rules = results["GATE-DATA-013"]["rules"]
        stated = rules.get("settings") if isinstance(rules, dict) else None
        for section, values in (stated or {}).items():
            for key in values if isinstance(values, dict) else ():
                where = ("gates", "GATE-DATA-013", "measured", "rules", "settings", section, key)
                derived.put(where, (settings.get(section) or {}).get(key), since=ACCOUNTS_SINCE)
    share = share_measured(manifest)
    if judged("GATE-DATA-007", "round_trip_documents"):
        where = ("gates", "GATE-DATA-007", "measured")
        derived.put(
            (*where, "tokenizer"), (manifest.get("tokenizer") or {}).get("name"), since=ACCOUNTS_SINCE
        )
        if share is not None:
            derived.put((*where, "heldout_documents"), share["heldout_documents"], since=ACCOUNTS_SINCE)
    if judged("GATE-DATA-005", "stored_documents") and share is not None:
        where = ("gates", "GATE-DATA-005", "measured")
        derived.put((*where, "stored_documents"), share["split_documents"], since=ACCOUNTS_SINCE)
        derived.put((*where, "stored_heldout"), share["heldout_documents"], since=ACCOUNTS_SINCE)


def leak_sources(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """GATE-DATA-012's `sources` (checked after reading): each source's filters, its documents in and
    its leak canaries planted and dropped, from its filter report."""
    return {
        name: {
            "filters": report.get("filters"),
            "documents_in": report.get("documents_in"),
            "leak": (report.get("canaries") or {}).get("leak"),
        }
        for name, report in reports.items()
    }


def canary_problems(canaries: Any, leak_settings: Any) -> list[str]:
    """GATE-DATA-012's canaries against the cases the config's `filter_settings.leak` plants
    (contracts.leak_canaries, what stack's FilterRunner.canary_results judges): each transcript
    case in every turn format the settings list and as a chat example, each plain document once,
    each with the must_drop its case has. Rows left out (a case, or a format taken out) are missing,
    not passed; a row of no case or format the settings plant, or with another must_drop, is
    restated. Settings the cases cannot be rebuilt from are a problem too: the check fails closed."""
    if not isinstance(canaries, list):
        return []
    try:
        wanted = canary_rows(leak_settings)
    except (KeyError, TypeError, ValueError, AttributeError):
        return [
            "config.filter_settings.leak is not leak settings: GATE-DATA-012's canaries cannot be rebuilt"
        ]
    where = "gates[GATE-DATA-012].measured.canaries"
    unnamed = [
        f"{where}[{at}].name is {row.get('name')!r}, not a row's name: its canaries are not held"
        for at, row in enumerate(canaries)
        if isinstance(row, dict) and not isinstance(row.get("name"), str)
    ]
    if unnamed:
        return unnamed
    rows = {row.get("name"): row.get("must_drop") for row in canaries if isinstance(row, dict)}
    missing = sorted(set(wanted) - set(rows))
    unplanted = sorted(str(name) for name in set(rows) - set(wanted))
    restated = sorted(name for name in set(wanted) & set(rows) if rows[name] is not wanted[name])
    problems = []
    for found, what in (
        (missing, "lack {n} of the rows config.filter_settings.leak plants"),
        (unplanted, "judge {n} row(s) config.filter_settings.leak plants no case or format for"),
        (restated, "restate must_drop of {n} row(s) against their case"),
    ):
        if found:
            listed = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
            problems.append(f"{where} {what.format(n=len(found))} ({listed})")
    return problems


# Since this spec version a prepare's config states the seed and val_fraction it handed the split
# (every prepare path); the manifest it wrote keeps the ones the split was drawn with.
SPLIT_DRAW, SPLIT_DRAW_SINCE = ("seed", "val_fraction"), "1.32.0"


@derives("prepare")
def prepare_record(inputs: Inputs) -> Derivation:
    """The per-source filter reports and totals from the DATA_DIR's manifest (cited since 1.7.0),
    GATE-DATA-013/014/015's per-source values from those reports, GATE-DATA-005's share of
    documents held out (where the record judged it) from its counts per split and val_fraction,
    the values of spec 1.30.0's checks the manifest and config give (`_prepare_since_1_30`), and
    (since 1.32.0) config.seed and config.val_fraction as the manifest's, the draw the split was
    made with: tools/argv_record holds the config to the command line, so a prepare that split
    with another seed or share than the one asked for contradicts one of the two;
    and (since 1.33.0) every other stated option the manifest decides (`prepare_options`)."""
    derived = Derivation()
    if not inputs.artifacts.has(MANIFEST):
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((MANIFEST, PER_ITEM_SINCE))
        filters = inputs.record.metrics.get("filters")
    else:
        manifest = report_of(inputs, derived, MANIFEST, PER_ITEM_SINCE) or {}
        digest = next(a.sha256 for a in inputs.record.artifacts if a.path == MANIFEST)
        derived.put(("data", "manifest_sha256"), digest)
        filters = manifest.get("filters", {})
        derived.put(("metrics", "filters"), filters)
        derived.put(("metrics", "totals"), manifest.get("totals"))
        derived.problems += [f"{MANIFEST}: {p}" for p in manifest_problems(manifest)]
        tokenizer = (manifest.get("tokenizer") or {}).get("sha256")
        if inputs.record.data is not None and isinstance(tokenizer, str):
            derived.put(("data", "tokenizer_sha256"), tokenizer)
        results = {g.id: g.measured for g in inputs.record.gates if g.id not in inputs.stale}
        derived.problems += sft_gate_problems(results, manifest, MANIFEST)
        share, split = share_measured(manifest), results.get("GATE-DATA-005")
        if share is not None and isinstance(split, dict) and all(key in split for key in share):
            derived.gate("GATE-DATA-005", share)
        duplicates = manifest.get("duplicate_documents")
        if share is not None and isinstance(split, dict) and "split_contents" in split:
            # The index holds one row per document written; its copies are the manifest's duplicates.
            contents = share["split_documents"] - duplicates if isinstance(duplicates, int) else None
            derived.gate("GATE-DATA-005", {"split_contents": contents})
        _prepare_since_1_30(inputs, derived, manifest)
        for key in SPLIT_DRAW:  # the split's draw as the prepare made it (contracts.split.held_out)
            derived.put(("config", key), manifest.get(key), since=SPLIT_DRAW_SINCE)
        if version_key(inputs.record.spec.version) >= version_key(OPTIONS_SINCE):
            prepare_options(inputs, derived, manifest)
        if share is not None and isinstance(split, dict) and "assigned_documents" in split:
            # Every document written was assigned a split as it was written (stack.data.split.Assigned).
            derived.gate("GATE-DATA-005", {"assigned_documents": share["split_documents"]})
    if not isinstance(filters, dict):
        return derived
    current = {g for g in ("GATE-DATA-013", "GATE-DATA-014", "GATE-DATA-015") if g not in inputs.stale}
    leaks = next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-012"), None)
    if "GATE-DATA-012" not in inputs.stale and isinstance(leaks, dict) and "sources" in leaks:
        derived.put(("gates", "GATE-DATA-012", "measured", "sources"), leak_sources(filters))
    if "GATE-DATA-012" not in inputs.stale and isinstance(leaks, dict):
        settings = ((inputs.record.config or {}).get("filter_settings") or {}).get("leak")
        derived.problems += canary_problems(leaks.get("canaries"), settings)
    if "GATE-DATA-013" in current:
        derived.put(("gates", "GATE-DATA-013", "measured", "sources"), per_source(filters, COVERAGE_KEYS))
        settings = ((inputs.record.config or {}).get("filter_settings") or {}).get("dedup")
        dedup = (next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-013"), None) or {}).get(
            "dedup"
        )
        if isinstance(settings, dict) and isinstance(dedup, dict):  # the settings its rechecks judged by
            for key in ("shingle_bytes", "permutations", "min_jaccard"):
                derived.put(("gates", "GATE-DATA-013", "measured", "dedup", key), settings.get(key))
    if "GATE-DATA-015" in current:
        derived.put(("gates", "GATE-DATA-015", "measured", "sources"), per_source(filters, SHARE_KEYS))
    if "GATE-DATA-014" in current:
        counts = per_source(filters, ("documents_in", "documents_out", "dropped"))
        for name, values in counts.items():
            for key, value in values.items():
                derived.put(("gates", "GATE-DATA-014", "measured", "sources", name, key), value)
        if inputs.artifacts.has(MANIFEST):
            manifest = inputs.artifacts.json(MANIFEST) or {}
            written = shard_documents(manifest)
            empty_log = (manifest.get("drop_log") or {}).get("bytes") == 0
            for name in counts:
                where = ("gates", "GATE-DATA-014", "measured", "sources", name)
                if written is not None:
                    derived.put((*where, "written"), written.get(name, 0))
                if empty_log:
                    derived.put((*where, "logged"), {})
    return derived


def shard_documents(manifest: dict[str, Any]) -> dict[str, int] | None:
    """Documents written per source: the sum over its shards, both splits (None without shards).

    Fine-tuning data (a manifest with an `sft` block: chat, prompt-completion, prefs) packs its
    examples into one stream a shard, so a shard's `documents` counts streams; what the filters
    handed on there is the source's examples, `sources.NAME.documents`, which `stack prepare`
    judged GATE-DATA-014 with."""
    if isinstance(manifest.get("sft"), dict):
        sources = manifest.get("sources")
        if not isinstance(sources, dict):
            return None
        return {
            str(name): stats["documents"]
            for name, stats in sources.items()
            if isinstance(stats, dict) and isinstance(stats.get("documents"), int)
        }
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        return None
    written: Counter[str] = Counter()
    for shard in shards:
        if isinstance(shard, dict) and isinstance(shard.get("documents"), int):
            written[str(shard.get("source"))] += shard["documents"]
    return dict(written)


def shard_size_problems(shards: list[dict[str, Any]], dtype: Any) -> list[str]:
    """Each shard's bytes are a header and its tokens at the manifest's dtype (contracts.shard_layout)."""
    try:
        itemsize = np.dtype(dtype).itemsize if isinstance(dtype, str) else None
    except TypeError:
        return [f"dtype {dtype!r} is not a dtype of token ids"]
    return [
        f"shards {shard.get('path')}: {shard['tokens']} tokens of {itemsize} bytes take "
        f"{shard_bytes(shard['tokens'], itemsize)} bytes with the header, but it lists {shard['bytes']}"
        for shard in shards
        if itemsize is not None
        and isinstance(shard.get("tokens"), int)
        and isinstance(shard.get("bytes"), int)
        and shard["bytes"] != shard_bytes(shard["tokens"], itemsize)
    ]


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """A manifest against itself: each shard's bytes hold its tokens, each split's totals are the
    sums of its shards (stack.data.prepare adds them up so), each source's filters keep
    documents_in − Σ dropped, and an empty drop log (0 bytes) logged no drop."""
    problems = []
    shards = [s for s in manifest.get("shards") or [] if isinstance(s, dict)]
    problems += shard_size_problems(shards, manifest.get("dtype"))
    totals = manifest.get("totals")
    if shards and isinstance(totals, dict):
        for split, row in totals.items():
            mine = [s for s in shards if s.get("split") == split]
            summed = {key: sum(int(s.get(key) or 0) for s in mine) for key in ("tokens", "documents")}
            for key, value in summed.items():
                if isinstance(row, dict) and key in row and row[key] != value:
                    problems.append(
                        f"totals.{split}.{key} is {row[key]}, but its {split} shards hold {value}"
                    )
    empty_log = (manifest.get("drop_log") or {}).get("bytes") == 0
    for name, row in (manifest.get("filters") or {}).items():
        if not isinstance(row, dict) or not isinstance(row.get("dropped"), dict):
            continue
        dropped = sum(n for n in row["dropped"].values() if isinstance(n, int))
        counted = isinstance(row.get("documents_in"), int) and isinstance(row.get("documents_out"), int)
        if counted and row["documents_in"] - dropped != row["documents_out"]:
            problems.append(
                f"filters.{name}: {row['documents_in']} documents in less {dropped} dropped is not the "
                f"{row['documents_out']} it keeps"
            )
        if empty_log and dropped:
            problems.append(
                f"filters.{name} drops {dropped} document(s), but the drop log is empty (0 bytes)"
            )
    return problems


def sft_gate_problems(results: dict[str, Any], manifest: dict[str, Any], where: str) -> list[str]:
    """What GATE-SFT-001/002 measured of fine-tuning data (`results`: gate id → measured values),
    against the manifest of that data (`where`): `stack prepare` judges them as it writes it, and
    every run that reads it judges them again (stack.data.sft_reader). Only data prepared as
    examples (an `sft` block) has them; GATE-SFT-002 counts the assistant turns and missing markers
    the manifest keeps, and GATE-SFT-001 the examples of one shard, so no more than a split holds."""
    judged = {g: results[g] for g in ("GATE-SFT-001", "GATE-SFT-002") if isinstance(results.get(g), dict)}
    if not judged:
        return []
    sft = manifest.get("sft")
    if not isinstance(sft, dict):
        return [f"{' and '.join(judged)} judged fine-tuning examples, but {where} holds pretraining text"]
    problems = [
        f"gates[GATE-SFT-002].measured.{key} is {value}, but {where} counts {sft[key]}"
        for key, value in judged.get("GATE-SFT-002", {}).items()
        if key in ("assistant_turns", "markers_missing") and key in sft and value != sft[key]
    ]
    examples, splits = judged.get("GATE-SFT-001", {}).get("examples"), sft.get("examples")
    counts = [n for n in splits.values() if isinstance(n, int)] if isinstance(splits, dict) else []
    if isinstance(examples, int) and counts and examples > max(counts):
        problems.append(
            f"gates[GATE-SFT-001].measured.examples is {examples}, more than a split of {where} "
            f"holds ({splits})"
        )
    return problems + _renderer_problems(judged.get("GATE-SFT-001", {}), sft, where)


def _renderer_problems(measured: dict[str, Any], sft: dict[str, Any], where: str) -> list[str]:
    """GATE-SFT-001 admits an EOS that ends a prompt's turn only where the model's own template
    rendered the examples (`model_template`), which the manifest's renderer says: a record claiming
    the model's template over the stack's would have the check pass EOS tokens it must count."""
    stated, renderer = measured.get("model_template"), sft.get("renderer")
    if not isinstance(stated, bool) or renderer not in ("model", "stack") or stated == (renderer == "model"):
        return []
    return [
        f"gates[GATE-SFT-001].measured.model_template is {str(stated).lower()}, but {where} was rendered by "
        f"the {renderer}'s template"
    ]


# What GATE-DATA-001's coverage check measures (stack.data.reader.coverage_outcome).
COVERAGE = ("covered_shards", "uncovered_fewest", "uncovered_most")


def split_coverage(manifest: dict[str, Any], window: int) -> list[dict[str, int]]:
    """GATE-DATA-001's coverage values for each split of a manifest's data read in windows of
    `window` targets: a shard of n tokens longer than a window leaves (n − 1) mod `window` targets
    past its last whole window, and the reader counts each such shard once per table a batch is
    read from (the tokens; fine-tuning data adds their labels)."""
    tables = 2 if isinstance(manifest.get("sft"), dict) else 1
    shards = [
        s for s in manifest.get("shards") or [] if isinstance(s, dict) and isinstance(s.get("tokens"), int)
    ]
    found = []
    for split in sorted({str(s.get("split")) for s in shards}):
        left = [
            (s["tokens"] - 1) % window
            for s in shards
            if str(s.get("split")) == split and s["tokens"] > window
        ]
        found.append(
            {
                "covered_shards": tables * len(left),
                "uncovered_fewest": min(left, default=0),
                "uncovered_most": max(left, default=0),
            }
        )
    return found


def heldout_windows_problems(
    results: dict[str, Any], manifest: dict[str, Any], exclude: list[str], where: str
) -> list[str]:
    """GATE-DATA-005's split_windows, the windows of the held-out split of the sources a run did not
    exclude, at its window (GATE-DATA-001's window_targets): a held-out shard of n tokens holds
    (n − 1) // window of them (stack.data.windows). Pretraining data only: a fine-tuning set's
    windows are its packed examples'."""
    held, read = results.get("GATE-DATA-005"), results.get("GATE-DATA-001")
    if not (isinstance(held, dict) and isinstance(read, dict)) or isinstance(manifest.get("sft"), dict):
        return []
    window, stated = read.get("window_targets"), held.get("split_windows")
    if (
        held.get("split") != "heldout"
        or not isinstance(window, int)
        or window < 1
        or not isinstance(stated, int)
    ):
        return []
    shards = [
        s for s in manifest.get("shards") or [] if isinstance(s, dict) and isinstance(s.get("tokens"), int)
    ]
    windows = sum(
        max(0, (s["tokens"] - 1) // window)
        for s in shards
        if s.get("split") == "heldout" and s.get("source") not in exclude
    )
    if stated == windows:
        return []
    return [
        f"gates[GATE-DATA-005].measured.split_windows is {stated}, but the held-out shards of {where} "
        f"hold {windows} windows of {window} targets"
    ]


def coverage_problems(measured: Any, manifest: dict[str, Any], where: str) -> list[str]:
    """GATE-DATA-001's coverage values (`measured`) are those of a split of the data `where` holds,
    at the record's window (`window_targets`)."""
    if not isinstance(measured, dict) or not all(
        isinstance(measured.get(k), int) for k in (*COVERAGE, "window_targets")
    ):
        return []
    window = measured["window_targets"]
    stated = {key: measured[key] for key in COVERAGE}
    splits = split_coverage(manifest, window) if window > 0 else []
    if not splits or stated in splits:
        return []
    return [
        f"gates[GATE-DATA-001].measured's coverage is {stated}, but the shards of {where} at "
        f"{window} targets a window give {splits}"
    ]
