"""Script mismatch: the few documents of a source written in a system the rest of it is not in.

The filter is for a source that is in one writing system but for a few documents: the
translation answers in CJK, Cyrillic or Arabic of an English chat source an LLM wrote. It drops
those, and never a language a source holds in earnest: a multilingual source is kept whole.

Letters. A document is read through its sample (stack.data.filters.sample: stretches spread over
all of it, so a chapter is judged by its body, not by a foreign epigraph). Its letters (Unicode
categories L and M) count by their Unicode script, named in upper case (LATIN, CYRILLIC,
DEVANAGARI, NEW TAI LUE, ...; the Han ideographs are CJK; a FULLWIDTH form is the script it is
a form of): contracts.filter_rules.script_of. A mark counts with its script (a Devanagari vowel
sign is DEVANAGARI); a letter or mark of a script many share (Common: ʼ, µ, the kana length
mark; Inherited: COMBINING ACUTE ACCENT, a variation selector) counts with the letter before
it. Digits, punctuation and code symbols say nothing of a language and do not count.

Writing systems. A system is one script, or several written together (SYSTEMS): Japanese
writes CJK, HIRAGANA and KATAKANA; Korean HANGUL and CJK. A document's share in a system is the
share of its letters in the system's scripts; its main system is the one with the largest share.

Per source (SourceLetters, measured before anything is written, over the documents with at
least `min_letters` letters that are not code): a document is written in a system when at least
`main_share` of its letters are in it. When at least `main_share` of the source's documents are
written in one system, the source is in that system, and the filter drops the documents with
fewer than `min_share` of their letters in it: at most 1 - main_share of them, and none of
those written in it. A system of that minority that is the main system of at least
`min_documents` documents is a language the source holds in earnest, not a stray (the
Japanese, Korean and Cyrillic pages of a man-page tree whose other languages are Latin): it is
held beside the main one, and its documents are kept. Otherwise the source is multilingual (its languages,
or documents that mix two systems throughout, such as translation files): every script found in
it is kept, and only a document in none of them (the canary) is dropped. `expected:` in the
settings names the systems of every source instead.

Code is not judged (stack.data.filters.runner decides what is code): its letters are
identifiers and comments, and comments in another language are no reason to drop code.

Letters are classified through a table of every code point's script, filled 256 code points at
a time the first time a text touches them, so a sample costs a few numpy operations however
many scripts it mixes; ASCII text (all LATIN) skips the table. The rule a document is dropped by,
and the plain count GATE-DATA-013's check rules counts a dropped document's letters with again,
one character at a time, are contracts.filter_rules'.
"""

from __future__ import annotations

import string
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from contracts.filter_rules import REPLACEMENT_CHARACTER, script_mismatch, script_of
from stack.data.filters.settings import SYSTEMS, ScriptSettings

_BLOCK = 256
_NOT_A_LETTER, _INHERITED, _REPLACED = 0, 1, 2
_UNFILLED = np.iinfo(np.uint16).max
_ASCII_LETTERS = string.ascii_letters.encode()

_table = np.full(0x110000, _UNFILLED, dtype=np.uint16)
_names: list[str] = ["", "", ""]  # id → script; ids below 3 are not letters of a script
_ids: dict[str, int] = {}
_lock = threading.Lock()


def _id(script: str) -> int:
    if script not in _ids:
        _ids[script] = len(_names)
        _names.append(script)
    return _ids[script]


def _fill(blocks: np.ndarray) -> None:
    """Classify every code point of the blocks not yet in the table: a letter or mark by its script
    (contracts.filter_rules.script_of), _INHERITED when its script is shared by many (Common or
    Inherited: it counts with the letter before it)."""
    with _lock:
        for block in blocks.tolist():
            start = block * _BLOCK
            if _table[start] != _UNFILLED:
                continue
            row = np.zeros(_BLOCK, dtype=np.uint16)
            for offset in range(_BLOCK):
                char = chr(start + offset)
                if unicodedata.category(char)[0] in "LM":
                    script = script_of(char)
                    row[offset] = _INHERITED if script is None else _id(script)
                elif char == REPLACEMENT_CHARACTER:
                    row[offset] = _REPLACED
            _table[start : start + _BLOCK] = row


@dataclass(frozen=True)
class Letters:
    """A text's letters by script, and its U+FFFD (bytes a decoder could not read as UTF-8)."""

    scripts: dict[str, int]
    replaced: int = 0

    @property
    def total(self) -> int:
        """Letters of every script."""
        return sum(self.scripts.values())


def letter_counts(text: str) -> Letters:
    """The letters of `text` by script (marks with theirs), and its U+FFFD."""
    if text.isascii():
        data = text.encode("ascii")
        letters = len(data) - len(data.translate(None, _ASCII_LETTERS))
        return Letters({"LATIN": letters} if letters else {})
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")  # JSON may hold lone ones
    ids = _table[points]
    if (ids == _UNFILLED).any():
        _fill(np.unique(points[ids == _UNFILLED] // _BLOCK))
        ids = _table[points]
    inherited = ids == _INHERITED
    if inherited.any():  # each takes the id of the last character before it that is not inherited
        last = np.maximum.accumulate(np.where(inherited, 0, np.arange(len(ids))))
        ids = ids[last]
        ids[ids == _INHERITED] = _NOT_A_LETTER
    counts = np.bincount(ids, minlength=len(_names))
    scripts = {_names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist() if i > _REPLACED}
    return Letters(scripts, int(counts[_REPLACED]))


def system_scripts(system: str) -> frozenset[str]:
    """The scripts a writing system writes with: itself, but for those of SYSTEMS."""
    return SYSTEMS.get(system, frozenset({system}))


@cache
def systems_of(script: str) -> tuple[str, ...]:
    """The writing systems that write with a script (CJK is Chinese, Japanese and Korean)."""
    return tuple(name for name, scripts in SYSTEMS.items() if script in scripts) or (script,)


def system_shares(scripts: Mapping[str, int]) -> dict[str, float]:
    """Each writing system a text's letters are in, with the share of its letters in it."""
    if len(scripts) == 1:  # most texts: every system of its one script holds all of it
        return dict.fromkeys(systems_of(next(iter(scripts))), 1.0)
    total = sum(scripts.values())
    systems = {system for script in scripts for system in systems_of(script)}
    return {
        system: sum(n for name, n in scripts.items() if name in system_scripts(system)) / total
        for system in systems
    }


def _rank(shares: Mapping[str, float]) -> str:
    """The first of `shares`: the largest, then the system of fewest scripts, then by name."""
    return min(shares, key=lambda name: (-shares[name], len(system_scripts(name)), name))


def main_system(scripts: Mapping[str, int]) -> str:
    """The writing system that holds most of a text's letters (CJK for ideographs alone)."""
    if len(scripts) == 1:
        return _sole(next(iter(scripts)))
    return _rank(system_shares(scripts))


@cache
def _sole(script: str) -> str:
    """The main system of a text written in one script."""
    return _rank(dict.fromkeys(systems_of(script), 1.0))


@dataclass(frozen=True)
class Held:
    """What the script filter keeps in one source: `names` are its writing system (one), the systems
    `expected` names, or every script of a multilingual source; `scripts` the scripts they write with."""

    names: tuple[str, ...] = ()
    scripts: frozenset[str] = frozenset()
    multilingual: bool = False


def named(systems: Collection[str]) -> Held:
    """The systems (or scripts) named by the settings' `expected`."""
    scripts = frozenset(script for name in systems for script in system_scripts(name))
    return Held(tuple(sorted(systems)), scripts)


def mismatch(scripts: Mapping[str, int], held: Held, settings: ScriptSettings) -> bool:
    """Whether fewer than `min_share` of a document's letters are in what its source holds (a
    document with fewer than `min_letters` letters is too short to tell: never), by the rule of
    contracts.filter_rules.script_mismatch."""
    return script_mismatch(scripts, held.scripts, settings.min_share, settings.min_letters)


@dataclass
class _Tally:
    """One source's judged documents: how many, how many are written in each system, how many have
    each system as their main one, every script seen."""

    documents: int = 0
    written: Counter[str] = field(default_factory=Counter)
    leading: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)


class SourceLetters:
    """Per source, the documents the script filter judges, measured before anything is written: what
    each source holds is decided from them. Tallies add, so the tallies of parts of a corpus merge."""

    def __init__(self) -> None:
        self.tallies: dict[str, _Tally] = {}

    def add(self, source: str, scripts: Mapping[str, int] | None, settings: ScriptSettings) -> None:
        """Count one document's letters by script (None: a document the filter does not judge)."""
        tally = self.tallies.setdefault(source, _Tally())
        if scripts is None or sum(scripts.values()) < settings.min_letters:
            return
        tally.documents += 1
        tally.seen.update(scripts)
        tally.leading[main_system(scripts)] += 1
        for name, share in system_shares(scripts).items():
            if share >= settings.main_share:
                tally.written[name] += 1

    def merge(self, other: SourceLetters) -> None:
        """Add the tallies of another part of the corpus."""
        for source, theirs in other.tallies.items():
            ours = self.tallies.setdefault(source, _Tally())
            ours.documents += theirs.documents
            ours.written.update(theirs.written)
            ours.leading.update(theirs.leading)
            ours.seen |= theirs.seen

    def held(self, settings: ScriptSettings) -> dict[str, Held]:
        """What each source holds (see the module docstring)."""
        return {source: _held(tally, settings) for source, tally in sorted(self.tallies.items())}


def _held(tally: _Tally, settings: ScriptSettings) -> Held:
    if settings.expected is not None:
        return named(settings.expected)
    if not tally.documents:
        return Held()
    main = _rank({name: n / tally.documents for name, n in tally.written.items()}) if tally.written else ""
    if main and tally.written[main] >= settings.main_share * tally.documents:
        # A system of the minority held in earnest (the main one of min_documents documents: a page's
        # markup may be in the main system's letters) is the source's too.
        least = settings.min_documents
        earnest = sorted(n for n, count in tally.leading.items() if n != main and count >= least)
        systems = (main, *earnest)
        return Held(systems, frozenset().union(*(system_scripts(name) for name in systems)))
    return Held(tuple(sorted(tally.seen)), frozenset(tally.seen), multilingual=True)


@cache
def alphabets(beyond_bmp: bool = False) -> dict[str, str]:
    """Letters of every script with at least 20 of them, by script: what a canary foreign to a source is
    written in. The Basic Multilingual Plane's scripts, or (`beyond_bmp`) every plane's."""
    found: dict[str, list[str]] = {}
    for point in range(0x110000 if beyond_bmp else 0x10000):
        char = chr(point)
        script = script_of(char) if unicodedata.category(char) in ("Ll", "Lo") else None
        if script is not None:
            found.setdefault(script, []).append(char)
    return {name: "".join(chars[:40]) for name, chars in found.items() if len(chars) >= 20}
