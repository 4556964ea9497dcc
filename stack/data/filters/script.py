"""Script mismatch: a document mostly in a writing system its source does not hold.

Only letters count (Unicode category L: digits, punctuation and code symbols say nothing of a
language), in the first `window_chars` characters, each by its script: the first word of its
Unicode name (LATIN, CYRILLIC, CJK, ARABIC, DEVANAGARI, HIRAGANA, ...; a FULLWIDTH or HALFWIDTH
form counts as the script it is a form of). A window with fewer than `min_letters` letters is
kept: too little to tell.

Which scripts a source may hold is measured, never assumed (SourceLetters, below): the
scripts that hold at least `source_share` of the letters of the source's windows, so a Russian
source keeps Cyrillic, and a source of Russian and Chinese files keeps both. `expected:` in the
settings names the scripts for every source instead.

Letters are classified through a table of every code point's script, filled 256 code points at
a time the first time a text touches them, so a window costs a few numpy operations however
many scripts it mixes; ASCII windows (all LATIN) skip the table.
"""

from __future__ import annotations

import string
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Mapping

import numpy as np

from stack.data.filters.settings import ScriptSettings

_BLOCK = 256
_NOT_A_LETTER = 0
_UNFILLED = np.iinfo(np.uint16).max
_ASCII_LETTERS = string.ascii_letters.encode()
_FORMS = ("FULLWIDTH", "HALFWIDTH")

_table = np.full(0x110000, _UNFILLED, dtype=np.uint16)
_names: list[str] = [""]  # id → script; id 0 is "not a letter"
_ids: dict[str, int] = {}
_lock = threading.Lock()


def script_of(char: str) -> str:
    """The script of a letter: the first word of its Unicode name (the second, after FULLWIDTH/HALFWIDTH)."""
    words = unicodedata.name(char, "UNKNOWN").split(" ", 2)
    return words[1] if words[0] in _FORMS and len(words) > 1 else words[0]


def _fill(blocks: np.ndarray) -> None:
    """Classify every code point of the blocks not yet in the table."""
    with _lock:
        for block in blocks.tolist():
            start = block * _BLOCK
            if _table[start] != _UNFILLED:
                continue
            row = np.zeros(_BLOCK, dtype=np.uint16)
            for offset in range(_BLOCK):
                char = chr(start + offset)
                if unicodedata.category(char).startswith("L"):
                    name = script_of(char)
                    if name not in _ids:
                        _ids[name] = len(_names)
                        _names.append(name)
                    row[offset] = _ids[name]
            _table[start : start + _BLOCK] = row


def letter_counts(window: str) -> dict[str, int]:
    """Letters of `window` by script."""
    if window.isascii():
        data = window.encode("ascii")
        letters = len(data) - len(data.translate(None, _ASCII_LETTERS))
        return {"LATIN": letters} if letters else {}
    points = np.frombuffer(window.encode("utf-32-le"), dtype="<u4")
    ids = _table[points]
    if (ids == _UNFILLED).any():
        _fill(np.unique(points[ids == _UNFILLED] // _BLOCK))
        ids = _table[points]
    counts = np.bincount(ids, minlength=len(_names))
    counts[_NOT_A_LETTER] = 0
    return {_names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}


def window_counts(text: str, settings: ScriptSettings) -> dict[str, int]:
    """Letters by script in the document's first window."""
    return letter_counts(text[: settings.window_chars])


def source_scripts(counts: Mapping[str, int], settings: ScriptSettings) -> list[str]:
    """The scripts a source may hold: `expected` when the settings name them, else each script with at
    least `source_share` of the letters counted over the source's windows (sorted by name)."""
    if settings.expected is not None:
        return sorted(settings.expected)
    total = sum(counts.values())
    return sorted(name for name, n in counts.items() if total and n >= settings.source_share * total)


def held_share(counts: Mapping[str, int], scripts: Collection[str], settings: ScriptSettings) -> float | None:
    """The share of a window's letters in `scripts` (None: under `min_letters` letters, too few to tell)."""
    letters = sum(counts.values())
    if letters < settings.min_letters:
        return None
    return sum(n for name, n in counts.items() if name in scripts) / letters


def script_mismatch(text: str, scripts: Collection[str], settings: ScriptSettings) -> bool:
    """Whether fewer than `min_share` of the window's letters are in the source's `scripts`.

    An ASCII window in a source that holds LATIN is never one: all its letters are LATIN.
    """
    window = text[: settings.window_chars]
    if "LATIN" in scripts and window.isascii():
        return False
    share = held_share(letter_counts(window), scripts, settings)
    return share is not None and share < settings.min_share


class SourceLetters:
    """Letters by script, per source, over the first windows of the source's documents: what a
    source's scripts are measured from. Counts add, so the counts of parts of a corpus merge."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}

    def add(self, source: str, text: str, settings: ScriptSettings) -> None:
        """Count one document's first window."""
        self.counts.setdefault(source, Counter()).update(window_counts(text, settings))

    def merge(self, other: SourceLetters) -> None:
        """Add the counts of another part of the corpus."""
        for source, counts in other.counts.items():
            self.counts.setdefault(source, Counter()).update(counts)

    def scripts(self, settings: ScriptSettings) -> dict[str, list[str]]:
        """Each source's scripts (source_scripts)."""
        return {source: source_scripts(counts, settings) for source, counts in sorted(self.counts.items())}

    def shares(self, source: str) -> dict[str, float]:
        """The measured share of each script in a source's letters, largest first."""
        counts = self.counts.get(source, Counter())
        total = sum(counts.values())
        return {name: n / total for name, n in counts.most_common()} if total else {}
