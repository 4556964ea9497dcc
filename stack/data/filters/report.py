"""Drop reports as people read them: one line per source, the reasons behind each drop, and the fix.

The same rows go to `stack prepare`'s output and to the site's prepare-record page
(tools/site/runs.py), so what a user saw at the terminal is what the site shows. When the
filters take most of a source (GATE-DATA-015) or all of the corpus, the message names the
filter, the counts, the first document it dropped, and what to pass if the documents belong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from stack.data.chat_shapes import UNRENDERABLE_FIX
from stack.data.filters.runner import FILTER_OF
from stack.data.filters.settings import load_settings

# What to do when a filter drops documents that belong in the corpus, by filter.
FIXES = {
    "leak": "raise leak.max_headers or leak.max_header_weight, or edit leak.fingerprints, with --filters "
    'FILE; or waive the source: --no-filter {source} --reason "..." (prompt injections kept on purpose, say)',
    "oversize": "raise oversize.max_bytes with --filters FILE; or waive the source: --no-filter {source} "
    '--reason "..."',
    "encoding": "convert their files to UTF-8 (iconv -f ENCODING -t utf-8 FILE, e.g. -f cp1251) and prepare "
    'again; or waive the source: --no-filter {source} --reason "..."',
    "diversity": 'waive the source (--no-filter {source} --reason "...") or lower '
    "diversity.min_compression_ratio with --filters FILE",
    "script": "put each language in its own source (NAME=PATH), or name the scripts with --filters FILE "
    "(script: {{expected: [...]}}); if the source is code (JSONL of source files, say), say so with "
    "--filters FILE (sources: {{{source}: {{kind: code}}}}); or waive the source: --no-filter {source} "
    '--reason "..."',
    "dedup": "leave out --filter dedup if repeated documents are meant",
    "template": UNRENDERABLE_FIX,
}
# What each filter found in a document it dropped, where the filter's name does not say it.
CAUSES = {
    "leak": "the shape of a system prompt in the first user turn: markdown headers or a fingerprint "
    "phrase; a pasted document, such as a README or a problem statement, has it too",
    "oversize": "a document a separator or a record made, longer than oversize.max_bytes",
    "encoding": "text decoded with the wrong encoding: U+FFFD where its letters were",
    "template": "a chat record the chat template cannot write: a tool call, a tool's message, a content "
    "that is no text",
}


def drop_rows(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per source: in, out, dropped % and the drops by reason, or the waiver in place of filters."""
    rows = []
    for name, report in sorted(reports.items()):
        documents_in, dropped = int(report["documents_in"]), dict(report["dropped"])
        share = 100.0 * sum(dropped.values()) / documents_in if documents_in else 0.0
        rows.append(
            {
                "source": name,
                "in": documents_in,
                "out": int(report["documents_out"]),
                "dropped_percent": share,
                "reasons": dropped,
                "filters": list(report["filters"]),
                "waiver": report["waiver"],
                "pre_clean": bool(report["pre_clean"]),
                "scripts": report.get("scripts"),
                "multilingual": bool(report.get("multilingual")),
            }
        )
    return rows


@cache
def _built_in() -> list[str]:
    """The filters that run when none is named, as shipped: a source's line names the filters run
    when they are others (`--filter dedup` runs dedup alone)."""
    return list(load_settings().default)


def kept_scripts(row: Mapping[str, Any]) -> str:
    """What the script filter kept in a source, in words."""
    if row.get("multilingual"):
        return f"every script found, multilingual ({', '.join(row['scripts'])})"
    return ", ".join(row["scripts"]) or "none (no document to judge: code, or too few letters)"


def drop_lines(reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The report as indented text lines, one per source."""
    lines = []
    for row in drop_rows(reports):
        if row["waiver"] is not None:
            lines.append(
                f"  {row['source']}: not filtered, waived: {row['waiver']} ({row['in']:,} document(s))"
            )
            continue
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in row["reasons"].items()) or "none"
        marked = " (marked pre-clean, filtered all the same)" if row["pre_clean"] else ""
        scripts = f"; scripts kept: {kept_scripts(row)}" if row["scripts"] is not None else ""
        ran = f"; filters run: {', '.join(row['filters'])}" if row["filters"] != _built_in() else ""
        lines.append(
            f"  {row['source']}: {row['in']:,} in, {row['out']:,} out, {row['dropped_percent']:.2f}% "
            f"dropped ({reasons}){scripts}{ran}{marked}"
        )
    return lines


def fix_for(reason: str, source: str) -> str:
    """What to pass when documents dropped for `reason` belong in `source`."""
    return FIXES[FILTER_OF[reason]].format(source=source)


def top_reason(report: Mapping[str, Any]) -> str | None:
    """The reason that dropped most of a source's documents (the first by name on a tie)."""
    dropped = {reason: n for reason, n in report["dropped"].items() if n}
    return min(dropped, key=lambda reason: (-dropped[reason], reason)) if dropped else None


def source_fix(name: str, report: Mapping[str, Any]) -> str:
    """The cause of a source's largest drop, the filter (and the scripts it kept), and the fix."""
    reason = top_reason(report)
    if reason is None:
        return ""
    filter_name = FILTER_OF[reason]
    detail = f" ({CAUSES[filter_name]})" if filter_name in CAUSES else ""
    if filter_name == "script" and report.get("scripts") is not None:
        detail = f" (scripts kept for the source: {kept_scripts(report)})"
    return f"the cause is the {filter_name} filter{detail}; if the documents belong, {fix_for(reason, name)}"


def empty_corpus(
    files: int, reports: Mapping[str, Mapping[str, Any]], binary: Sequence[str] = (), binaries: int = 0
) -> str:
    """The one line that refuses a prepare with no document to write, naming the real cause: the
    filters' drops, else the files, the first `binary` ones of `binaries` named with their kind
    (stack.data.corpus.kind_of)."""
    dropped = {name: report for name, report in reports.items() if sum(report["dropped"].values())}
    if not dropped:
        more = f"; and {binaries - len(binary):,} more" if binaries > len(binary) else ""
        kinds = f" ({'; '.join(binary)}{more})" if binary else ""
        return (
            f"empty corpus: {files} file(s) found under the inputs, all binary or empty{kinds}; give "
            "text files (gzip, bzip2, xz and zstd files, and UTF-16 or UTF-32 with a byte-order mark, are "
            "read too)"
        )
    parts = []
    for name, report in sorted(dropped.items()):
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(report["dropped"].items()) if n)
        parts.append(f"{name}: {report['documents_in']:,} in, all dropped ({reasons})")
    name, report = next(iter(sorted(dropped.items())))
    reason = top_reason(report)
    assert reason is not None
    example = report["examples"].get(reason, "")
    return (
        f"the filters dropped every document: {'; '.join(parts)}; e.g. {example}; {source_fix(name, report)}"
    )


def lost_scripts(name: str, report: Mapping[str, Any]) -> list[str]:
    """A warning for each writing system of a source that the filters took every document of, while
    the source kept others: a language gone from a corpus, however small its share."""
    if not report["documents_out"]:
        return []  # the whole source is gone: GATE-DATA-015 or the refusal says so
    lines = []
    for system, tally in sorted(report.get("by_script", {}).items()):
        if tally["documents_in"] and not tally["documents_out"]:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(tally["dropped"].items()))
            fix = source_fix(name, {**report, "dropped": tally["dropped"]})
            lines.append(
                f"  warning: source {name!r} lost all {tally['documents_in']:,} of its {system} document(s) "
                f"long enough to tell their script to the filters ({reasons}); {fix}"
            )
    return lines


def drop_warnings(reports: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """GATE-DATA-015's warning for each source that lost too much, as its judge words it, with the fix;
    then each writing system a source lost every document of."""
    from contracts.gates import warning_line
    from stack.data.filters.gates import share_outcome

    lines = []
    for name, report in sorted(reports.items()):
        outcome = share_outcome({name: report})
        if not outcome.ok:
            lines.append(f"{warning_line('GATE-DATA-015', outcome.message)}; {source_fix(name, report)}")
        lines += lost_scripts(name, report)
    return lines
