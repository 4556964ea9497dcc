"""The filters of one prepare: which run on which source, what each dropped, and the proof that each ran.

Every document of every source goes through the filters chosen (`--filter NAME`, else the
settings' `default` list), in the order of FILTER_NAMES (cheapest first; dedup last, so only
documents that pass the rest enter its index), and the first filter that objects names the
reason it is dropped. A source is left unfiltered only when waived by name with a reason
(`--no-filter SOURCE --reason TEXT`), and the waiver is recorded; `pre_clean: true` in the
settings is recorded too, but it never waives anything.

The work is cut in two. `Screen` judges one document by every filter but dedup: it holds no
state, so the worker processes of a prepare each hold a copy. `FilterRunner`, in the one
process that writes, keeps the dedup index (whose answer depends on the documents before) and
the books: per source documents in, out and dropped by reason, the first dropped document of
each reason as an example, the drop log (stack.data.filters.droplog), and the canaries.

Canaries (stack.data.filters.canaries) are documents planted in each source's stream, one or
more per filter, that their filter must drop. They go through the same code as the source's
documents, are counted apart from them, and are never written: a filter that did not run on a
source leaves its canary kept, and GATE-DATA-012/013 fire.

A document too long to hold (stack.data.long_documents) is judged on its first window, read
from disk, and on its length; the dedup index never sees it. The report counts those as
`unread`, so the check a document did not get is on record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from contracts.errors import BadInput
from stack.data.filters import canaries, diversity, leak, script, size
from stack.data.filters.canaries import Canary
from stack.data.filters.dedup import NearDuplicates
from stack.data.filters.droplog import DropLog
from stack.data.filters.settings import FILTER_NAMES, FilterSettings
from stack.data.split import content_sha256

# The reasons each filter drops a document for.
REASONS = {
    "leak": ("leak_phrase", "leak_headers", "leak_weight"),
    "oversize": ("oversize",),
    "diversity": ("low_diversity",),
    "script": ("script_mismatch",),
    "dedup": ("dedup_exact", "dedup_near"),
}
FILTER_OF = {reason: name for name, reasons in REASONS.items() for reason in reasons}
SNIPPET_CHARS = 60
# One filter's check of a document: (first window, length in bytes, delimited, chat head) → reason or None.
Check = Callable[[str, int, bool, "str | None"], "str | None"]


def snippet(text: str) -> str:
    """The start of a document as one short line, for messages and examples."""
    short = " ".join(text[: SNIPPET_CHARS * 2].split())
    return short[:SNIPPET_CHARS] + ("…" if len(short) > SNIPPET_CHARS else "")


def chosen_filters(names: Sequence[str] | None, settings: FilterSettings) -> list[str]:
    """The filters to run, in FILTER_NAMES order; an unknown name is BadInput."""
    picked = list(settings.default) if not names else list(names)
    unknown = sorted(set(picked) - set(FILTER_NAMES))
    if unknown:
        raise BadInput(f"unknown --filter {unknown[0]!r}; use one of: {', '.join(FILTER_NAMES)}")
    return [name for name in FILTER_NAMES if name in picked]


def check_waivers(waivers: Mapping[str, str], sources: set[str]) -> None:
    """A waiver names a source of this prepare and gives a reason; anything else is BadInput."""
    for source, reason in waivers.items():
        if source not in sources:
            raise BadInput(
                f"--no-filter {source}: no input belongs to source {source!r} (sources: "
                f"{', '.join(sorted(sources))}); name a source given as NAME=PATH or --source"
            )
        if not reason.strip():
            raise BadInput(f"--no-filter {source} needs --reason TEXT: why its documents need no filtering")


@dataclass(frozen=True)
class Screen:
    """Judges one document by every filter but dedup; no state, so each worker process holds a copy.

    `scripts` are the scripts each source may hold (stack.data.filters.script.SourceLetters); a source not in
    it has none measured, so every document of it with enough letters is a mismatch.
    """

    settings: FilterSettings
    filters: tuple[str, ...]
    waivers: Mapping[str, str]
    scripts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _checks: dict[str, list[tuple[bool, Check]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    # The most characters any filter reads of a document (a long one is judged on this much), and
    # the bytes that always hold them in valid UTF-8.
    window_chars: int = field(init=False, compare=False)
    window_bytes: int = field(init=False, compare=False)

    def filters_of(self, source: str) -> tuple[str, ...]:
        """The filters that run on `source`: none when it is waived."""
        return () if source in self.waivers else self.filters

    def scripts_of(self, source: str) -> tuple[str, ...]:
        """The scripts `source` may hold: the settings' `expected`, else as measured (none measured: none)."""
        expected = self.settings.script.expected
        return tuple(sorted(expected)) if expected is not None else self.scripts.get(source, ())

    def __post_init__(self) -> None:
        s = self.settings
        chars = max(s.leak.head_chars, s.diversity.window_chars, s.script.window_chars)
        object.__setattr__(self, "window_chars", chars)
        object.__setattr__(self, "window_bytes", 4 * chars)

    def text(self, data: bytes) -> str:
        """The document's first window as text: only that much is ever decoded."""
        return data[: self.window_bytes].decode("utf-8", "ignore")[: self.window_chars]

    def reason(
        self, source: str, data: bytes, length: int, delimited: bool = True, head: str | None = None
    ) -> str | None:
        """Why a document is dropped by the filters before dedup (None: kept so far).

        `data` holds at least its first window, `length` is its size in bytes; `delimited` says
        a separator or a record format made it (oversize judges only those); `head` is a chat
        example's first user turn. Only the first window is decoded, and only if a filter reads it.
        """
        checks = self._checks.get(source)
        if checks is None:
            checks = self._checks[source] = self._checks_of(source)
        text = ""
        for reads_text, check in checks:
            if reads_text and not text:
                text = self.text(data)
            found = check(text, length, delimited, head)
            if found is not None:
                return found
        return None

    def _checks_of(self, source: str) -> list[tuple[bool, Check]]:
        """The checks of `source`'s filters but dedup, in order, each with its settings bound once;
        whether each reads the text."""
        s = self.settings
        code = s.source(source).kind == "code"
        scripts = frozenset(self.scripts_of(source))

        def oversize(text: str, length: int, delimited: bool, head: str | None) -> str | None:
            return "oversize" if delimited and size.oversize(length, s.oversize) else None

        def leaked(text: str, length: int, delimited: bool, head: str | None) -> str | None:
            return leak.leak_reason(leak.head_region(text, s.leak, head), s.leak, headers_apply=not code)

        def repetitive(text: str, length: int, delimited: bool, head: str | None) -> str | None:
            return "low_diversity" if diversity.low_diversity(text, s.diversity) else None

        def foreign(text: str, length: int, delimited: bool, head: str | None) -> str | None:
            return "script_mismatch" if script.script_mismatch(text, scripts, s.script) else None

        table: dict[str, tuple[bool, Check]] = {
            "leak": (True, leaked),
            "oversize": (False, oversize),
            "diversity": (True, repetitive),
            "script": (True, foreign),
        }
        return [table[name] for name in self.filters_of(source) if name in table]

    def dedups(self, source: str) -> bool:
        """Whether dedup runs on `source` (the writer then asks the index, with a signature made here)."""
        return "dedup" in self.filters_of(source)

    def canaries(self, source: str) -> list[Canary]:
        """The canaries planted in `source`'s stream, one or more per filter that runs on it."""
        own = self.settings.source(source)
        return canaries.planted(
            self.settings, self.filters_of(source), self.scripts_of(source), own.kind, source
        )


@dataclass
class SourceReport:
    """What the filters did to one source: documents in, out, dropped by reason, and its canaries."""

    filters: list[str]
    kind: str
    pre_clean: bool
    waiver: str | None
    scripts: list[str] | None = None
    documents_in: int = 0
    documents_out: int = 0
    unread: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    canaries: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as the manifest and the evidence record keep it."""
        return {
            "filters": self.filters,
            "kind": self.kind,
            "pre_clean": self.pre_clean,
            "waiver": self.waiver,
            "scripts": self.scripts,
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "unread": self.unread,
            "dropped": dict(sorted(self.dropped.items())),
            "examples": dict(sorted(self.examples.items())),
            "canaries": {name: dict(tally) for name, tally in sorted(self.canaries.items())},
        }


class FilterRunner:
    """The books of one prepare's filters, kept by the one process that writes: see the module docstring."""

    def __init__(
        self, settings: FilterSettings, names: Sequence[str] | None, waivers: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.filters = chosen_filters(names, settings)
        self.screen = Screen(settings, tuple(self.filters), dict(waivers))
        self.waivers = dict(waivers)
        self.reports: dict[str, SourceReport] = {}
        self.log: DropLog | None = None
        self._dedup = NearDuplicates(settings.dedup) if "dedup" in self.filters else None

    def set_scripts(self, measured: Mapping[str, Sequence[str]]) -> None:
        """The scripts each source holds, as measured (stack.data.filters.script.SourceLetters)."""
        self.screen = replace(self.screen, scripts={name: tuple(found) for name, found in measured.items()})
        for name in set(measured) | set(self.reports):
            report = self.report(name)
            if "script" in report.filters:
                report.scripts = list(self.screen.scripts_of(name))

    def report(self, source: str) -> SourceReport:
        """The report of `source`, opened on first use (a source named by a record field comes so)."""
        if source not in self.reports:
            own = self.settings.source(source)
            filters = list(self.screen.filters_of(source))
            scripts = list(self.screen.scripts_of(source)) if "script" in filters else None
            self.reports[source] = SourceReport(
                filters, own.kind, own.pre_clean, self.waivers.get(source), scripts
            )
        return self.reports[source]

    def duplicate(self, sha: bytes, signature: np.ndarray | None) -> str | None:
        """dedup's verdict on a document that passed the other filters (its signature made by the screen)."""
        assert self._dedup is not None, "dedup asked without the dedup filter"
        return self._dedup.check_signature(sha, signature)

    def count(
        self, source: str, reason: str | None, sha: bytes, where: str, text: str, unread: bool = False
    ) -> None:
        """Count one document in, and out or dropped by `reason`; a drop is logged, the first of its
        reason kept as the example."""
        report = self.report(source)
        report.documents_in += 1
        report.unread += unread
        if reason is None:
            report.documents_out += 1
            return
        report.dropped[reason] += 1
        if reason not in report.examples:
            report.examples[reason] = f"{where}: {snippet(text)!r}"
        if self.log is not None:
            self.log.add(source, reason, sha, where)

    def count_canary(self, source: str, canary: Canary, reason: str | None) -> None:
        """Tally a canary: planted for its filter, and dropped when that filter is what dropped it."""
        tally = self.report(source).canaries.setdefault(canary.filter, {"planted": 0, "dropped": 0})
        if canary.judged:
            tally["planted"] += 1
            tally["dropped"] += reason in REASONS[canary.filter]

    def verdict(
        self,
        source: str,
        data: bytes,
        sha: bytes,
        length: int | None = None,
        head: str | None = None,
        delimited: bool = True,
    ) -> str | None:
        """Every filter's verdict on a document held in memory (`length` bytes long, `data` if not
        given), dedup's index included."""
        found = self.screen.reason(source, data, len(data) if length is None else length, delimited, head)
        if found is None and self.screen.dedups(source):
            assert self._dedup is not None
            found = self.duplicate(sha, self._dedup.signature(data))
        return found

    def keep(self, source: str, sha: bytes, data: bytes, head: str | None = None, where: str = "") -> bool:
        """Judge and count one document held in memory; whether it is kept."""
        found = self.verdict(source, data, sha, head=head)
        self.count(source, found, sha, where, self.screen.text(data))
        return found is None

    def keep_turns(
        self, source: str, turns: Sequence[tuple[str, str]], identity: bytes, where: str = ""
    ) -> bool:
        """A chat or prompt-completion example: its turns' text, with the first user turn as head region."""
        text = "\n".join(content for _, content in turns)
        head = leak.first_user_turn(turns)
        return self.keep(source, content_sha256(identity), text.encode("utf-8"), head=head, where=where)

    def plant_turns(self, source: str) -> None:
        """Plant `source`'s canaries as chat examples (a user turn each) and tally them."""
        for canary in self.screen.canaries(source):
            text = canary.data.decode("utf-8")
            sha = content_sha256(canary.data)
            found = self.verdict(
                source, canary.data, sha, canary.length, head=text, delimited=canary.delimited
            )
            self.count_canary(source, canary, found)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every source's report, by source name."""
        return {name: self.reports[name].as_dict() for name in sorted(self.reports)}

    def canary_results(self) -> list[dict[str, Any]]:
        """The leak filter on its canaries (stack.data.filters.leak.canaries), as GATE-DATA-012 reads them."""
        rows = []
        for name, (text, head, must_drop) in leak.canaries(self.settings.leak).items():
            region = leak.head_region(text, self.settings.leak, head)
            found = leak.leak_reason(region, self.settings.leak, headers_apply=True)
            rows.append({"name": name, "must_drop": must_drop, "dropped": found is not None, "reason": found})
        return rows
