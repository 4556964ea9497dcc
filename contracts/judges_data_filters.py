"""Judges of the prepare filters' gates (GATE-DATA-012..014): pure functions of the filter report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.judges import Malformed, Measured, Thresholds, count, flag, items, judges


def _sources(m: Measured) -> Mapping[str, Any]:
    sources = m.get("sources")
    if not isinstance(sources, Mapping):
        raise Malformed(f"'sources' is {sources!r}, not an object of sources")
    for name, row in sources.items():
        if not isinstance(row, Mapping):
            raise Malformed(f"source {name!r} is {row!r}, not an object")
    return sources


@judges("GATE-DATA-012", needs=("canaries+",))
def _leaks_dropped(m: Measured, t: Thresholds) -> list[str]:
    """Every canary that must be dropped is, every near miss is kept; both kinds must be there."""
    rows = items(m, "canaries")
    problems = []
    kinds = set()
    for row in rows:
        if not isinstance(row, Mapping):
            raise Malformed(f"canary {row!r} is not an object")
        must_drop, dropped = flag(row, "must_drop"), flag(row, "dropped")
        kinds.add(must_drop)
        if must_drop and not dropped:
            problems.append(f"planted leak {row.get('name')!r} was kept")
        elif dropped and not must_drop:
            problems.append(f"near miss {row.get('name')!r} was dropped as {row.get('reason')}")
    if kinds != {True, False}:
        problems.append("the canaries need both planted leaks and near misses")
    return problems


@judges("GATE-DATA-013", needs=("sources",))
def _every_source_filtered(m: Measured, t: Thresholds) -> list[str]:
    """A source with no filter needs a waiver with a reason; a pre-clean mark is no waiver."""
    problems = []
    for name, row in _sources(m).items():
        filters, waiver, pre_clean = items(row, "filters"), row.get("waiver"), flag(row, "pre_clean")
        if waiver is not None and not (isinstance(waiver, str) and waiver.strip()):
            problems.append(f"source {name!r} is waived without a reason")
        elif not filters and waiver is None:
            marked = " (marked pre-clean, which waives nothing)" if pre_clean else ""
            problems.append(f"source {name!r} was not filtered and has no waiver{marked}")
        elif filters and waiver is not None:
            problems.append(f"source {name!r} is both waived and filtered")
    return problems


@judges("GATE-DATA-014", needs=("sources",))
def _drops_add_up(m: Measured, t: Thresholds) -> list[str]:
    """Per source: in = out + Σ dropped, and out = the documents written."""
    problems = []
    for name, row in _sources(m).items():
        dropped = row.get("dropped")
        if not isinstance(dropped, Mapping):
            raise Malformed(f"source {name!r}: 'dropped' is {dropped!r}, not an object of reasons")
        total = sum(count(dropped, reason) for reason in dropped)
        documents_in, documents_out = count(row, "documents_in"), count(row, "documents_out")
        if documents_in != documents_out + total:
            problems.append(
                f"source {name!r}: {documents_in} document(s) in ≠ {documents_out} out + {total} dropped"
            )
        written = count(row, "written")
        if written != documents_out:
            problems.append(f"source {name!r}: {documents_out} document(s) kept but {written} written")
    return problems
