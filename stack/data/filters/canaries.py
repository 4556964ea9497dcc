"""Canaries: documents planted in each source's stream that prove every filter ran over that source.

A filter's canary is a document only that filter drops, built from the settings in force so
that every filter before it in FILTER_NAMES keeps it (see Canary.delimited): a leaked prompt
(one header over the limit, one character over the weight limit, a fingerprint phrase) for
`leak`; a document one byte over `max_bytes`, judged by its length and never read, for
`oversize`; a loop for `diversity`; letters of a script the source does not hold for `script`;
and for `dedup` a short text without letters given twice, the second copy being the canary.
They are counted apart from the source's documents (SourceReport.canaries) and never written.
The ones that reach dedup's index carry digits hashed from the source's name, so they match no
real document.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stack.data.filters import leak
from stack.data.filters.settings import FilterSettings

# Alphabets of scripts a canary may be written in: the first one the source does not hold is used.
ALPHABETS = {
    "GREEK": "αβγδεζηθικλμνξοπρστυφχψω",
    "CYRILLIC": "абвгдежзийклмнопрстуфхцчшщыэюя",
    "LATIN": "abcdefghijklmnopqrstuvwxyz",
    "ARMENIAN": "աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքօֆ",
    "GEORGIAN": "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰ",
}


@dataclass(frozen=True)
class Canary:
    """One planted document: the filter it is for, its name, its text (or first window) and its length.

    `judged` is false for the first copy of the dedup pair, which only primes the index. Only the
    oversize canary is `delimited` (made by a separator): the others, like a file read whole, are
    not judged by their length, so a low max_bytes cannot hide them from the filter they are for.
    """

    filter: str
    name: str
    data: bytes
    length: int
    judged: bool = True
    delimited: bool = False


def _tag(source: str, name: str) -> str:
    """Digits unique to the source and canary: no real document holds them."""
    digest = hashlib.sha256(f"gatestack canary {source} {name}".encode()).digest()
    return "-".join(f"{int.from_bytes(digest[i : i + 4], 'little'):010d}" for i in range(0, 16, 4))


def _canary(filter: str, name: str, text: str, length: int | None = None, judged: bool = True) -> Canary:
    data = text.encode("utf-8")
    return Canary(filter, name, data, len(data) if length is None else length, judged, filter == "oversize")


def _leak(settings: FilterSettings, kind: str, source: str) -> list[Canary]:
    """The must-drop leak canaries (the header rules only where they apply: not in code)."""
    found = []
    for name, (text, head, must_drop) in leak.canaries(settings.leak).items():
        headed = name in ("headers_over_limit", "weight_over_limit")
        if must_drop and head is None and not (headed and kind == "code"):
            found.append(_canary("leak", name, text))
    return found


def _foreign_letters(scripts: Collection[str], count: int, source: str) -> str:
    """`count` letters in words of the first script of ALPHABETS the source does not hold."""
    alphabet = next(
        (letters for name, letters in ALPHABETS.items() if name not in scripts), ALPHABETS["GREEK"]
    )
    rng = random.Random(_tag(source, "script"))
    words, left = [], count
    while left > 0:
        size = min(left, rng.randint(3, 9))
        words.append("".join(rng.choices(alphabet, k=size)))
        left -= size
    return " ".join(words)


def planted(
    settings: FilterSettings, filters: Sequence[str], scripts: Collection[str], kind: str, source: str
) -> list[Canary]:
    """The canaries of `filters` for one source, in FILTER_NAMES order (see the module docstring)."""
    found: list[Canary] = []
    if "leak" in filters:
        found += _leak(settings, kind, source)
    if "oversize" in filters:
        over = settings.oversize.max_bytes + 1
        found.append(_canary("oversize", "over_max_bytes", _tag(source, "oversize"), over))
    if "diversity" in filters:
        line = f"{_tag(source, 'diversity')} "
        chars = max(settings.diversity.min_chars, settings.diversity.window_chars)
        found.append(_canary("diversity", "loop", (line * (chars // len(line) + 1))[:chars]))
    if "script" in filters:
        letters = max(settings.script.min_letters, 60)
        found.append(_canary("script", "foreign_script", _foreign_letters(scripts, letters, source)))
    if "dedup" in filters:
        text = f"{_tag(source, 'dedup')} {_tag(source, 'dedup-2')}"
        found += [_canary("dedup", "first_copy", text, judged=False), _canary("dedup", "second_copy", text)]
    return found
