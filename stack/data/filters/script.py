"""Script mismatch: a document mostly in a writing system the corpus is not meant to hold.

Letters only (Unicode category L: digits, punctuation and code symbols say nothing of a
language) of the first `window_chars` characters, each by the script that starts its Unicode
name (LATIN, CYRILLIC, CJK, ARABIC, ...). ASCII text is all LATIN without looking further. A
window with fewer than `min_letters` letters is kept: too little to tell.
"""

from __future__ import annotations

import unicodedata

from stack.data.filters.settings import ScriptSettings


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0]


def expected_share(text: str, settings: ScriptSettings) -> float | None:
    """The share of the window's letters in the expected scripts (None: too few letters to tell)."""
    window = text[: settings.window_chars]
    if window.isascii():
        letters = sum(c.isalpha() for c in window)
        return None if letters < settings.min_letters else 1.0 if "LATIN" in settings.expected else 0.0
    letters = [c for c in window if unicodedata.category(c).startswith("L")]
    if len(letters) < settings.min_letters:
        return None
    expected = set(settings.expected)
    return sum(_script(c) in expected for c in letters) / len(letters)


def script_mismatch(text: str, settings: ScriptSettings) -> bool:
    """Whether fewer than `min_share` of the window's letters are in the expected scripts."""
    share = expected_share(text, settings)
    return share is not None and share < settings.min_share
