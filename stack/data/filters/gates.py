"""The filter gates, judged once per prepare over the runner's report (contracts/judges_data_filters.py).

- GATE-DATA-012: the leak filter, with the settings in force, drops its planted leaked prompts
  and keeps the near misses (stack.data.filters.leak.canaries);
- GATE-DATA-013: every source was filtered, or waived by name with a reason;
- GATE-DATA-014: per source, documents in = documents out + Σ dropped, and documents out =
  documents written (the manifest's count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.gates import Outcome, gate_require, measure
from stack.data.filters.runner import FilterRunner, check_waivers
from stack.data.filters.settings import load_settings


def canaries_outcome(runner: FilterRunner) -> Outcome:
    """GATE-DATA-012 over the canaries of the leak settings in force."""
    measured = {"canaries": runner.canary_results()}
    return measure("GATE-DATA-012", measured, holds="planted leaks dropped, near misses kept")


def coverage_outcome(runner: FilterRunner) -> Outcome:
    """GATE-DATA-013: each source's filters, waiver and pre-clean mark."""
    sources = {
        name: {"filters": report["filters"], "pre_clean": report["pre_clean"], "waiver": report["waiver"]}
        for name, report in runner.as_dict().items()
    }
    return measure("GATE-DATA-013", {"sources": sources}, holds="every source filtered or waived")


def counts_outcome(runner: FilterRunner, written: Mapping[str, int]) -> Outcome:
    """GATE-DATA-014: each source's in, out, drops by reason, and the documents written for it."""
    sources: dict[str, dict[str, Any]] = {
        name: {
            "documents_in": report["documents_in"],
            "documents_out": report["documents_out"],
            "dropped": report["dropped"],
            "written": written.get(name, 0),
        }
        for name, report in runner.as_dict().items()
    }
    for name in sorted(set(written) - set(sources)):  # written but never seen by a filter
        sources[name] = {"documents_in": 0, "documents_out": 0, "dropped": {}, "written": written[name]}
    return measure("GATE-DATA-014", {"sources": sources}, holds="drop counts add up per source")


@gate_require("GATE-DATA-012", lambda runner: canaries_outcome(runner))
def check_canaries(runner: FilterRunner) -> None:
    """Judge the leak settings on their canaries before any document is read."""


@gate_require("GATE-DATA-013", lambda runner: coverage_outcome(runner))
@gate_require("GATE-DATA-014", lambda runner, written: counts_outcome(runner, written))
def check_reports(runner: FilterRunner, written: Mapping[str, int]) -> None:
    """Judge the filter reports once every document was read and written."""


def open_filters(
    names: Sequence[str] | None, settings: Path | None, waivers: Mapping[str, str], sources: set[str]
) -> FilterRunner:
    """The runner of one prepare, its waivers checked, every source's report opened (a source with
    no document still has one) and the leak settings judged on their canaries (GATE-DATA-012)."""
    check_waivers(waivers, sources)
    runner = FilterRunner(load_settings(settings), names, waivers)
    for name in sorted(sources):
        runner.report(name)
    check_canaries(runner)
    return runner
