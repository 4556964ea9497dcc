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
from functools import cache, cached_property
from pathlib import PurePath
from typing import Any

import numpy as np

from contracts.errors import BadInput
from contracts.spec import load_spec
from contracts.split import document_identity, example_identity
from stack.data.chat_shapes import UNRENDERABLE
from stack.data.filters import canaries, diversity, encoding, leak, script, size
from stack.data.filters.canaries import Canary
from stack.data.filters.dedup import NearDuplicates, Rechecks
from stack.data.filters.droplog import DropLog
from stack.data.filters.rechecks import Dropped, FilterRechecks, dropped_of
from stack.data.filters.sample import sample_of
from stack.data.filters.script import Held, Letters
from stack.data.filters.settings import FILTER_NAMES, FilterSettings
from stack.data.working_set import format_size

# The reasons each filter drops a document for.
REASONS = {
    "leak": ("leak_phrase", "leak_headers", "leak_weight"),
    "oversize": ("oversize",),
    "encoding": ("mis_encoded",),
    "diversity": ("low_diversity",),
    "script": ("script_mismatch",),
    "dedup": ("dedup_exact", "dedup_near"),
    # Not a filter: a chat record its template cannot write is booked with the filters' drops.
    "template": (UNRENDERABLE,),
}
FILTER_OF = {reason: name for name, reasons in REASONS.items() for reason in reasons}
# What a compressed file's name ends with past the name of what it holds (stack.data.unpack).
COMPRESSION_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz")
SNIPPET_CHARS = 60


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


def check_waivers(waivers: Mapping[str, str], sources: set[str] | None) -> None:
    """A waiver names a source of this prepare and gives a reason; anything else is BadInput.
    `sources` is None where the records name their sources (--source-field): the waivers' sources
    are then held to those the records named once they are read (`check_waived_met`)."""
    for source, reason in waivers.items():
        if sources is not None and source not in sources:
            raise BadInput(
                f"--no-filter {source}: no input belongs to source {source!r} (sources: "
                f"{', '.join(sorted(sources))}); name a source given as NAME=PATH or --source"
            )
        if not reason.strip():
            raise BadInput(f"--no-filter {source} needs --reason TEXT: why its documents need no filtering")


def check_waived_met(waivers: Mapping[str, str], met: set[str], field: str) -> None:
    """BadInput for a waiver of a source no record named in `field`: a misspelt name waives nothing."""
    for source in sorted(set(waivers) - met):
        raise BadInput(
            f"--no-filter {source}: no record named source {source!r} in its field {field!r} (sources "
            f"met: {', '.join(sorted(met)) or 'none'}); name one of those"
        )


@cache
def _suffix(name: str) -> str:
    """A file name's suffix in lower case, read past a compression suffix (`a.py.gz` is `.py`)."""
    path = PurePath(name.lower())
    return path.with_suffix("").suffix if path.suffix in COMPRESSION_SUFFIXES else path.suffix


@dataclass(frozen=True)
class Doc:
    """One document as the screen judges it.

    `data` is the document, or at least its first window when it is too long to hold (`sample`,
    stack.data.filters.sample, is then read from disk by the caller); `length` is its size in
    bytes (len(data) when None). `delimited`: a separator or a record format made it (oversize
    judges only those). `head`: a chat example's first user turn. `code`: a code file's, which
    the script filter does not judge.
    """

    data: bytes
    length: int | None = None
    delimited: bool = True
    head: str | None = None
    code: bool = False
    sample: str | None = None

    @property
    def size(self) -> int:
        """The document's length in bytes."""
        return len(self.data) if self.length is None else self.length


@dataclass(frozen=True)
class Verdict:
    """Why the filters before dedup drop a document (None: kept so far), and its writing system where
    the script filter reads it (stack.data.filters.script.main_system)."""

    reason: str | None
    system: str | None = None


class _Read:
    """What the filters read of one document, each read once and only if a filter asks for it."""

    def __init__(self, screen: Screen, doc: Doc) -> None:
        self.screen, self.doc = screen, doc

    @cached_property
    def text(self) -> str:
        """The first window: what leak and diversity read."""
        return self.screen.text(self.doc.data)

    @cached_property
    def letters(self) -> Letters:
        """The sample's letters by script, and its U+FFFD: what encoding and script read."""
        sample = self.doc.sample
        if sample is None:
            sample = sample_of(self.doc.data, self.screen.settings.sample)
        return script.letter_counts(sample)


# One filter's check of a document: what was read of it → the reason it is dropped, or None.
Check = Callable[[_Read], "str | None"]


@dataclass(frozen=True)
class Screen:
    """Judges one document by every filter but dedup; no state, so each worker process holds a copy.

    `scripts` is what the script filter keeps in each source (script.SourceLetters.held); a source
    not in it has nothing measured, so every document of it with enough letters is a mismatch.
    """

    settings: FilterSettings
    filters: tuple[str, ...]
    waivers: Mapping[str, str]
    scripts: Mapping[str, Held] = field(default_factory=dict)
    _checks: dict[str, list[Check]] = field(default_factory=dict, init=False, compare=False, repr=False)
    _kinds: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)
    # The most characters leak and diversity read of a document (a long one is judged on this
    # much), and the bytes that always hold them in valid UTF-8.
    window_chars: int = field(init=False, compare=False)
    window_bytes: int = field(init=False, compare=False)

    def filters_of(self, source: str) -> tuple[str, ...]:
        """The filters that run on `source`: none when it is waived."""
        return () if source in self.waivers else self.filters

    def scripts_of(self, source: str) -> Held:
        """What the script filter keeps in `source`: the settings' `expected`, else as measured."""
        expected = self.settings.script.expected
        return script.named(expected) if expected is not None else self.scripts.get(source, Held())

    def is_code(self, source: str, name: str | None) -> bool:
        """Whether a document of `source` is code: the source is of kind code, or the document is a
        text file `name` whose suffix is one of the settings' `code_suffixes` (read past a
        compression suffix). A record's file (`name` None) says nothing of what its text is."""
        kind = self._kinds.get(source)
        if kind is None:
            kind = self._kinds[source] = self.settings.source(source).kind
        return kind == "code" or (name is not None and _suffix(name) in self.settings.script.code_suffixes)

    def __post_init__(self) -> None:
        s = self.settings
        chars = max(s.leak.head_chars, s.diversity.window_chars)
        object.__setattr__(self, "window_chars", chars)
        object.__setattr__(self, "window_bytes", 4 * chars)

    def text(self, data: bytes) -> str:
        """The document's first window as text: only that much is ever decoded."""
        return data[: self.window_bytes].decode("utf-8", "ignore")[: self.window_chars]

    def letters(self, source: str, doc: Doc) -> dict[str, int] | None:
        """The letters by script the script filter judges a document of `source` on; None when it does
        not judge it (the filter does not run on the source, or the document is code)."""
        return self._letters(source, _Read(self, doc))

    def _letters(self, source: str, read: _Read) -> dict[str, int] | None:
        if "script" not in self.filters_of(source) or read.doc.code:
            return None
        return read.letters.scripts

    def judge(self, source: str, doc: Doc) -> Verdict:
        """The filters' verdict on a document before dedup, and its writing system.

        Only what a filter reads is read: the first window for leak and diversity, the sample
        for encoding and script; the writing system is read where the script filter runs.
        """
        checks = self._checks.get(source)
        if checks is None:
            checks = self._checks[source] = self._checks_of(source)
        read = _Read(self, doc)
        reason = next((found for check in checks if (found := check(read)) is not None), None)
        scripts = self._letters(source, read)
        if scripts is None or sum(scripts.values()) < self.settings.script.min_letters:
            return Verdict(reason)
        return Verdict(reason, script.main_system(scripts))

    def reason(self, source: str, doc: Doc) -> str | None:
        """Why the filters before dedup drop a document (None: kept so far)."""
        return self.judge(source, doc).reason

    def _checks_of(self, source: str) -> list[Check]:
        """The checks of `source`'s filters but dedup, in order, each with its settings bound once."""
        s = self.settings
        held = self.scripts_of(source)

        def leaked(read: _Read) -> str | None:
            return leak.judge(read.doc.data, s.leak, read.doc.head)

        def oversize(read: _Read) -> str | None:
            return "oversize" if read.doc.delimited and size.oversize(read.doc.size, s.oversize) else None

        def garbled(read: _Read) -> str | None:
            return "mis_encoded" if encoding.mis_encoded(read.letters, s.encoding) else None

        def repetitive(read: _Read) -> str | None:
            return "low_diversity" if diversity.low_diversity(read.text, s.diversity) else None

        def foreign(read: _Read) -> str | None:
            if read.doc.code:
                return None
            return "script_mismatch" if script.mismatch(read.letters.scripts, held, s.script) else None

        table: dict[str, Check] = {
            "leak": leaked,
            "oversize": oversize,
            "encoding": garbled,
            "diversity": repetitive,
            "script": foreign,
        }
        return [table[name] for name in self.filters_of(source) if name in table]

    def dedups(self, source: str) -> bool:
        """Whether dedup runs on `source` (the writer then asks the index, with a signature made here)."""
        return "dedup" in self.filters_of(source)

    def canaries(self, source: str) -> list[Canary]:
        """The canaries planted in `source`'s stream, one or more per filter that runs on it."""
        return canaries.planted(self.settings, self.filters_of(source), self.scripts_of(source), source)


@dataclass
class SourceReport:
    """What the filters did to one source: documents in, out, dropped by reason, and its canaries.

    `scripts` is what the script filter kept (`multilingual`: every script found in the source);
    `by_script` counts the documents it read by writing system, in, out and dropped by reason,
    so a system a source lost every document of is seen (stack.data.filters.report).
    """

    filters: list[str]
    kind: str
    pre_clean: bool
    waiver: str | None
    scripts: list[str] | None = None
    multilingual: bool = False
    documents_in: int = 0
    documents_out: int = 0
    unread: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    canaries: dict[str, dict[str, int]] = field(default_factory=dict)
    by_script: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as the manifest and the evidence record keep it."""
        return {
            "filters": self.filters,
            "kind": self.kind,
            "pre_clean": self.pre_clean,
            "waiver": self.waiver,
            "scripts": self.scripts,
            "multilingual": self.multilingual,
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "unread": self.unread,
            "dropped": dict(sorted(self.dropped.items())),
            "examples": dict(sorted(self.examples.items())),
            "canaries": {name: dict(tally) for name, tally in sorted(self.canaries.items())},
            "by_script": {
                name: {**tally, "dropped": dict(sorted(tally["dropped"].items()))}
                for name, tally in sorted(self.by_script.items())
            },
        }

    def tally_script(self, system: str, reason: str | None) -> None:
        """Count one document of writing system `system`, kept or dropped for `reason`."""
        tally = self.by_script.get(system)
        if tally is None:
            tally = self.by_script[system] = {"documents_in": 0, "documents_out": 0, "dropped": Counter()}
        tally["documents_in"] += 1
        if reason is None:
            tally["documents_out"] += 1
        else:
            tally["dropped"][reason] += 1


@dataclass(frozen=True)
class Counted:
    """One judged document as the books count it: where it was read, its first characters (for the
    example), its length in bytes, its writing system, whether it was too long to read whole, and,
    for a drop GATE-DATA-013's check rules may measure again, what it reads of it (rechecks.Dropped)."""

    where: str = ""
    text: str = ""
    length: int = 0
    system: str | None = None
    unread: bool = False
    dropped: Dropped | None = None


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
        gate = load_spec().gate("GATE-DATA-013").threshold_values
        self.rechecks = Rechecks(
            settings.dedup, int(gate["dedup_recheck_pairs"]), int(gate["dedup_held_bytes"])
        )
        self.rules = FilterRechecks(settings, int(gate["filter_recheck_docs"]))

    def set_scripts(self, measured: Mapping[str, Held]) -> None:
        """What the script filter keeps in each source, as measured (script.SourceLetters.held)."""
        self.screen = replace(self.screen, scripts=dict(measured))
        for name in set(measured) | set(self.reports):
            self._note_scripts(name, self.report(name))

    def _note_scripts(self, source: str, report: SourceReport) -> None:
        """Write in a source's report what the script filter keeps in it (where it runs)."""
        if "script" in report.filters:
            held = self.screen.scripts_of(source)
            report.scripts, report.multilingual = list(held.names), held.multilingual

    def report(self, source: str) -> SourceReport:
        """The report of `source`, opened on first use (a source named by a record field comes so)."""
        if source not in self.reports:
            own = self.settings.source(source)
            filters = list(self.screen.filters_of(source))
            report = SourceReport(filters, own.kind, own.pre_clean, self.waivers.get(source))
            self._note_scripts(source, report)
            self.reports[source] = report
        return self.reports[source]

    def duplicate(self, sha: bytes, signature: np.ndarray | None, data: bytes) -> str | None:
        """dedup's verdict on a document `data` that passed the other filters (its signature made by
        the screen), booked for GATE-DATA-013 to judge again (dedup.Rechecks)."""
        assert self._dedup is not None, "dedup asked without the dedup filter"
        found = self._dedup.check_signature(sha, signature)
        self.rechecks.note(sha, data, found)
        return None if found is None else found.reason

    def count(self, source: str, reason: str | None, sha: bytes, counted: Counted) -> None:
        """Count one document in, and out or dropped by `reason`; a drop is logged, the first of its
        reason kept as the example (with its size, for a document dropped for its size)."""
        report = self.report(source)
        report.documents_in += 1
        report.unread += counted.unread
        if counted.system is not None:
            report.tally_script(counted.system, reason)
        if reason is None:
            report.documents_out += 1
            return
        report.dropped[reason] += 1
        held = sorted(self.screen.scripts_of(source).scripts) if reason == "script_mismatch" else []
        self.rules.note(source, reason, counted.where, counted.dropped, held)
        if reason not in report.examples:
            sized = f" ({format_size(counted.length)})" if reason == "oversize" else ""
            report.examples[reason] = f"{counted.where}{sized}: {snippet(counted.text)!r}"
        if self.log is not None:
            self.log.add(source, reason, sha, counted.where)

    def count_canary(self, source: str, canary: Canary, reason: str | None) -> None:
        """Tally a canary: planted for its filter, and dropped when that filter is what dropped it."""
        tally = self.report(source).canaries.setdefault(canary.filter, {"planted": 0, "dropped": 0})
        if canary.judged:
            tally["planted"] += 1
            tally["dropped"] += reason in REASONS[canary.filter]

    def verdict(self, source: str, doc: Doc, sha: bytes) -> Verdict:
        """Every filter's verdict on a document held in memory, dedup's index included."""
        found = self.screen.judge(source, doc)
        if found.reason is None and self.screen.dedups(source):
            assert self._dedup is not None
            found = replace(found, reason=self.duplicate(sha, self._dedup.signature(doc.data), doc.data))
        return found

    def judge_and_count(self, source: str, sha: bytes, doc: Doc, where: str = "") -> str | None:
        """Judge and count one document held in memory; why it is dropped (None: kept)."""
        found = self.verdict(source, doc, sha)
        dropped = None
        if self.rules.wants(found.reason):
            data = doc.data
            dropped = dropped_of(self.settings, data, data, None, doc.size, doc.delimited, doc.code, doc.head)
        counted = Counted(where, self.screen.text(doc.data), doc.size, found.system, dropped=dropped)
        self.count(source, found.reason, sha, counted)
        return found.reason

    def keep(self, source: str, sha: bytes, doc: Doc, where: str = "") -> bool:
        """Judge and count one document held in memory; whether it is kept."""
        return self.judge_and_count(source, sha, doc, where) is None

    def judge_turns(self, source: str, turns: Sequence[tuple[str, str]], where: str = "") -> str | None:
        """Why a chat or prompt-completion example is dropped (None: kept), its first user turn the
        region the leak filter judges; dedup and the drop log know it by its identity
        (contracts.split.example_identity), the one its split is drawn from."""
        text = "\n".join(content for _, content in turns).encode("utf-8")
        head = leak.first_user_turn(turns)
        return self.judge_and_count(source, example_identity(turns), Doc(text, head=head), where)

    def plant_turns(self, source: str) -> None:
        """Plant `source`'s canaries as chat examples (a user turn each) and tally them."""
        for canary in self.screen.canaries(source):
            turn = canary.turn if canary.turn is not None else canary.data.decode("utf-8")
            data = turn.encode("utf-8")
            doc = Doc(data, canary.length if canary.delimited else None, canary.delimited, head=turn)
            self.count_canary(source, canary, self.verdict(source, doc, document_identity(data)).reason)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every source's report, by source name."""
        return {name: self.reports[name].as_dict() for name in sorted(self.reports)}

    def canary_results(self) -> list[dict[str, Any]]:
        """The leak filter on its canaries (stack.data.filters.leak.canaries), as GATE-DATA-012 reads
        them: each as a document in every transcript format of the settings (a plain document once),
        and each transcript as a chat example too."""
        rows = []
        s = self.settings.leak
        for name, case in leak.canaries(s).items():
            forms = (
                {f"{name} in {m.user.strip()}": case.as_text(m) for m in s.turns}
                if case.turn is not None
                else {}
            )
            judged = {label: leak.judge(text.encode(), s) for label, text in forms.items()}
            if case.turn is None:
                judged[name] = leak.judge(case.text.encode(), s)
            else:
                judged[f"{name} as chat"] = leak.judge(case.turn.encode(), s, head=case.turn)
            rows += [
                {"name": label, "must_drop": case.must_drop, "dropped": found is not None, "reason": found}
                for label, found in judged.items()
            ]
        return rows
