"""The filters of one prepare: which run on which source, and what each dropped, per source and reason.

Every document of every source goes through the filters chosen (`--filter NAME`, else the
settings' `default` list), in the order of FILTER_NAMES (cheapest first; dedup last, so only
documents that pass the rest enter its index), and the first filter that objects names the
reason it is dropped. A source is left unfiltered only when waived by name with a reason
(`--no-filter SOURCE --reason TEXT`), and the waiver is recorded; `pre_clean: true` in the
settings is recorded too, but it never waives anything.

A document too long to hold (stack.data.long_documents) is checked by its length only; the
report counts those as `unread`, so the checks a document did not get are on record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import BadInput
from stack.data.filters import diversity, leak, script, size
from stack.data.filters.dedup import NearDuplicates
from stack.data.filters.settings import FILTER_NAMES, FilterSettings
from stack.data.split import content_sha256


@dataclass
class SourceReport:
    """What the filters did to one source: documents in, documents out, and the drops by reason."""

    filters: list[str]
    kind: str
    pre_clean: bool
    waiver: str | None
    documents_in: int = 0
    documents_out: int = 0
    unread: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The report as the manifest and the evidence record keep it."""
        return {
            "filters": self.filters,
            "kind": self.kind,
            "pre_clean": self.pre_clean,
            "waiver": self.waiver,
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "unread": self.unread,
            "dropped": dict(sorted(self.dropped.items())),
        }


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


class FilterRunner:
    """Decides, document by document, what is kept, and counts it per source and reason."""

    def __init__(
        self, settings: FilterSettings, names: Sequence[str] | None, waivers: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.filters = chosen_filters(names, settings)
        self.waivers = dict(waivers)
        self.reports: dict[str, SourceReport] = {}
        self._dedup = NearDuplicates(settings.dedup) if "dedup" in self.filters else None

    def report(self, source: str) -> SourceReport:
        """The report of `source`, opened on first use (a source named by a record field comes so)."""
        if source not in self.reports:
            own = self.settings.source(source)
            waiver = self.waivers.get(source)
            self.reports[source] = SourceReport(
                [] if waiver is not None else list(self.filters), own.kind, own.pre_clean, waiver
            )
        return self.reports[source]

    def reason(self, source: str, text: str, sha: bytes, data: bytes, head: str | None = None) -> str | None:
        """Why a document is dropped (None: kept). `head` is a chat record's first user turn."""
        report = self.report(source)
        settings = self.settings
        for name in report.filters:
            found: str | None = None
            if name == "leak":
                region = leak.head_region(text, settings.leak, head)
                found = leak.leak_reason(region, settings.leak, headers_apply=report.kind != "code")
            elif name == "oversize":
                found = "oversize" if size.oversize(len(data), settings.oversize) else None
            elif name == "diversity":
                found = "low_diversity" if diversity.low_diversity(text, settings.diversity) else None
            elif name == "script":
                found = "script_mismatch" if script.script_mismatch(text, settings.script) else None
            elif self._dedup is not None:
                found = self._dedup.check(sha, data)
            if found is not None:
                return found
        return None

    def keep(self, source: str, sha: bytes, data: bytes, head: str | None = None) -> bool:
        """Count a document in, and out or dropped by its reason; whether it is kept."""
        report = self.report(source)
        report.documents_in += 1
        found = self.reason(source, data.decode("utf-8"), sha, data, head)
        if found is None:
            report.documents_out += 1
            return True
        report.dropped[found] += 1
        return False

    def keep_turns(self, source: str, turns: Sequence[tuple[str, str]], identity: bytes) -> bool:
        """A chat or prompt-completion example: its turns' text, with the first user turn as head region."""
        text = "\n".join(content for _, content in turns)
        head = leak.first_user_turn(turns)
        return self.keep(source, content_sha256(identity), text.encode("utf-8"), head=head)

    def keep_unread(self, source: str, length: int) -> bool:
        """Count a document too long to hold: judged by its length only (`oversize`), else kept unread."""
        report = self.report(source)
        report.documents_in += 1
        if "oversize" in report.filters and size.oversize(length, self.settings.oversize):
            report.dropped["oversize"] += 1
            return False
        report.documents_out += 1
        report.unread += 1
        return True

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
