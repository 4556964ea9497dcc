"""Canaries: documents planted in each source's stream that prove every filter ran over that source.

A filter's canary is a document only that filter drops, built from the settings in force so
that every filter before it in FILTER_NAMES keeps it (see Canary.delimited): for `leak`, chat
transcripts (in the settings' first turn format) whose first user turn is a leaked prompt: one
header over the limit, one character over the weight limit, a fingerprint phrase in a turn long
enough for it to count, two fingerprint phrases; a document
one byte over `max_bytes`, judged by its length and never read, for `oversize`; U+FFFD where
letters were for `encoding`; a loop for `diversity`; for `script`, letters of a script the
source does not hold, chosen against what the filter keeps in it (a multilingual source holds
many, and a script outside all of them is always found); and for `dedup` a short text without
letters given twice, the second copy being the canary. They are counted apart from the source's
documents (SourceReport.canaries) and never written. The ones that reach dedup's index carry
digits hashed from the source's name, so they match no real document.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.errors import BadInput
from stack.data.filters import leak
from stack.data.filters.script import REPLACEMENT_CHARACTER, Held, alphabets
from stack.data.filters.settings import FilterSettings

# The scripts a script canary is written in by preference, the first one the source does not hold;
# after them, every other script of alphabets() by name.
PREFERRED = ("GREEK", "CYRILLIC", "LATIN", "ARMENIAN", "GEORGIAN", "HEBREW", "ETHIOPIC", "CHEROKEE")


@dataclass(frozen=True)
class Canary:
    """One planted document: the filter it is for, its name, its text (or first window) and its length.

    `judged` is false for the first copy of the dedup pair, which only primes the index. Only the
    oversize canary is `delimited` (made by a separator): the others, like a file read whole, are
    not judged by their length, so a low max_bytes cannot hide them from the filter they are for.
    `turn` is a leak canary's first user turn: what it is when planted as a chat example.
    """

    filter: str
    name: str
    data: bytes
    length: int
    judged: bool = True
    delimited: bool = False
    turn: str | None = None


def _tag(source: str, name: str) -> str:
    """Digits unique to the source and canary: no real document holds them."""
    digest = hashlib.sha256(f"gatestack canary {source} {name}".encode()).digest()
    return "-".join(f"{int.from_bytes(digest[i : i + 4], 'little'):010d}" for i in range(0, 16, 4))


def _canary(
    filter: str, name: str, text: str, length: int | None = None, judged: bool = True, turn: str | None = None
) -> Canary:
    data = text.encode("utf-8")
    size = len(data) if length is None else length
    return Canary(filter, name, data, size, judged, filter == "oversize", turn)


def _leak(settings: FilterSettings) -> list[Canary]:
    """The must-drop leak canaries: transcripts whose first user turn leaks."""
    markers = settings.leak.turns[0]
    return [
        _canary("leak", name, case.as_text(markers), turn=case.turn)
        for name, case in leak.canaries(settings.leak).items()
        if case.must_drop
    ]


def foreign_script(held: Held) -> str:
    """The first script of PREFERRED, then of the others by name (of the Basic Multilingual Plane,
    then of every plane), that `held` does not hold."""
    for beyond_bmp in (False, True):
        found = alphabets(beyond_bmp)
        ordered = [*(name for name in PREFERRED if name in found), *sorted(set(found) - set(PREFERRED))]
        script = next((name for name in ordered if name not in held.scripts), None)
        if script is not None:
            return script
    raise BadInput(
        f"a source holds letters of every script of Unicode ({len(held.scripts)}), so no canary can prove "
        "the script filter ran on it; name its systems with --filters FILE (script: {expected: [...]}), "
        "or leave the script filter out (--filter NAME ...)"
    )


def _foreign_letters(held: Held, count: int, source: str) -> str:
    """`count` letters in words of a script the source does not hold."""
    script = foreign_script(held)
    alphabet = alphabets(script not in alphabets())[script]
    rng = random.Random(_tag(source, "script"))
    words, left = [], count
    while left > 0:
        size = min(left, rng.randint(3, 9))
        words.append("".join(rng.choices(alphabet, k=size)))
        left -= size
    return " ".join(words)


def planted(settings: FilterSettings, filters: Sequence[str], held: Held, source: str) -> list[Canary]:
    """The canaries of `filters` for one source, in FILTER_NAMES order (see the module docstring)."""
    found: list[Canary] = []
    if "leak" in filters:
        found += _leak(settings)
    if "oversize" in filters:
        over = settings.oversize.max_bytes + 1
        found.append(_canary("oversize", "over_max_bytes", _tag(source, "oversize"), over))
    if "encoding" in filters:
        replaced = REPLACEMENT_CHARACTER * max(settings.encoding.min_letters, 60)
        found.append(_canary("encoding", "replaced_letters", f"{_tag(source, 'encoding')} {replaced}"))
    if "diversity" in filters:
        line = f"{_tag(source, 'diversity')} "
        chars = max(settings.diversity.min_chars, settings.diversity.window_chars)
        found.append(_canary("diversity", "loop", (line * (chars // len(line) + 1))[:chars]))
    if "script" in filters:
        letters = max(settings.script.min_letters, 60)
        found.append(_canary("script", "foreign_script", _foreign_letters(held, letters, source)))
    if "dedup" in filters:
        text = f"{_tag(source, 'dedup')} {_tag(source, 'dedup-2')}"
        found += [_canary("dedup", "first_copy", text, judged=False), _canary("dedup", "second_copy", text)]
    return found
