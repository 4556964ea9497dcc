"""The filter gates, judged over the runner's books (contracts/judges/data.py).

- GATE-DATA-012: the leak filter, with the settings in force, drops its planted leaked prompts
  and keeps the near misses (stack.data.filters.leak.canaries), judged before any document is
  read; and, once all are read, the leak canaries planted in every source it runs on were
  dropped by it (stack.data.filters.canaries);
- GATE-DATA-013: every source was filtered, each of its filters proven by its canary, or waived
  by name with a reason; the dedup filter's drops were duplicates: each exact drop's sha256
  is its kept document's, and each near drop re-judged (dedup.Rechecks) is as similar to its kept
  document by the exact Jaccard of their byte shingles as MinHash's error allows; and the other
  filters' first drops of each reason, measured again (rechecks.FilterRechecks), are their rules';
- GATE-DATA-014: per source, documents in = documents out + Σ dropped, documents out =
  documents written (the manifest's count), and the drops by reason = the drop log's lines;
- GATE-DATA-015 (a warning): no source lost more than max_source_drop_share of its documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.derive.prepare import COVERAGE_KEYS, SHARE_KEYS, leak_sources, per_source
from contracts.gates import Outcome, gate_require, measure
from stack.data.filters.runner import FilterRunner, check_waivers
from stack.data.filters.settings import load_settings

Reports = Mapping[str, Mapping[str, Any]]


def canaries_outcome(runner: FilterRunner) -> Outcome:
    """GATE-DATA-012 before reading: the leak settings in force on their canaries."""
    measured = {"canaries": runner.canary_results()}
    return measure("GATE-DATA-012", measured, holds="planted leaks dropped, near misses kept")


def stream_canaries_outcome(runner: FilterRunner) -> Outcome:
    """GATE-DATA-012 after reading: the same, and every source's planted leaks dropped by the leak filter."""
    measured = {"canaries": runner.canary_results(), "sources": leak_sources(runner.as_dict())}
    return measure("GATE-DATA-012", measured, holds="planted leaks dropped in every source filtered")


def coverage_outcome(
    reports: Reports, dedup: Mapping[str, Any], rules: Mapping[str, Any] | None = None
) -> Outcome:
    """GATE-DATA-013: each source's filters and their canaries, its waiver and pre-clean mark; the
    dedup drops re-judged (stack.data.filters.dedup.Rechecks.as_dict); and the other filters' drops
    re-judged by their rules (stack.data.filters.rechecks.FilterRechecks.as_dict)."""
    measured = {"sources": per_source(dict(reports), COVERAGE_KEYS), "dedup": dict(dedup)}
    if rules is not None:
        measured["rules"] = dict(rules)
    return measure("GATE-DATA-013", measured, holds="every source filtered, each filter proven")


def counts_outcome(
    reports: Reports, written: Mapping[str, int], logged: Reports, accounts: Reports | None = None
) -> Outcome:
    """GATE-DATA-014: each source's in, out, drops by reason, its drop log lines and documents written;
    with `accounts`, each source's byte account as a manifest keeps it (stack.data.accounting)."""
    sources: dict[str, dict[str, Any]] = {
        name: {
            "documents_in": report["documents_in"],
            "documents_out": report["documents_out"],
            "dropped": report["dropped"],
            "logged": dict(logged.get(name, {})),
            "written": written.get(name, 0),
        }
        for name, report in reports.items()
    }
    for name in sorted((set(written) | set(logged)) - set(sources)):  # never seen by a filter
        sources[name] = {
            "documents_in": 0,
            "documents_out": 0,
            "dropped": {},
            "logged": dict(logged.get(name, {})),
            "written": written.get(name, 0),
        }
    measured: dict[str, Any] = {"sources": sources}
    if accounts:
        measured["accounts"] = {name: dict(account) for name, account in accounts.items()}
    return measure("GATE-DATA-014", measured, holds="drop counts add up per source")


def share_outcome(reports: Reports) -> Outcome:
    """GATE-DATA-015: each source's documents in and dropped by reason, and the first example of each."""
    sources = per_source(dict(reports), SHARE_KEYS)
    return measure("GATE-DATA-015", {"sources": sources}, holds="no source lost most of its documents")


@gate_require("GATE-DATA-012", lambda runner: canaries_outcome(runner))
def check_canaries(runner: FilterRunner) -> None:
    """Judge the leak settings on their canaries before any document is read."""


@gate_require("GATE-DATA-012", lambda runner, written, logged: stream_canaries_outcome(runner))
@gate_require(
    "GATE-DATA-013",
    lambda runner, written, logged: coverage_outcome(
        runner.as_dict(), runner.rechecks.as_dict(), runner.rules.as_dict()
    ),
)
@gate_require(
    "GATE-DATA-014", lambda runner, written, logged: counts_outcome(runner.as_dict(), written, logged)
)
@gate_require("GATE-DATA-015", lambda runner, written, logged: share_outcome(runner.as_dict()))
def check_reports(runner: FilterRunner, written: Mapping[str, int], logged: Reports) -> None:
    """Judge the filter books once every document was read and written; `logged` is the drop log
    counted again from its file (stack.data.filters.droplog.recount)."""


@gate_require(
    "GATE-DATA-014",
    lambda reports, written, logged, accounts: counts_outcome(reports, written, logged, accounts),
)
def check_recorded(reports: Reports, written: Mapping[str, int], logged: Reports, accounts: Reports) -> None:
    """Judge a prepared DATA_DIR's books against its drop log again, and its byte accounts
    (`stack prepare --verify`; a manifest made before they were kept has none)."""


def open_filters(
    names: Sequence[str] | None,
    settings: Path | None,
    waivers: Mapping[str, str],
    sources: set[str],
    records_name_sources: bool = False,
) -> FilterRunner:
    """The runner of one prepare, its waivers checked, every source's report opened (a source with
    no document still has one) and the leak settings judged on their canaries (GATE-DATA-012).
    `records_name_sources`: the records' --source-field names sources beyond `sources`, so a
    waiver's source is held to those once read."""
    check_waivers(waivers, None if records_name_sources else sources)
    runner = FilterRunner(load_settings(settings), names, waivers)
    for name in sorted(sources):
        runner.report(name)
    check_canaries(runner)
    return runner
