"""The rules of prepare's measuring filters, written out once, and the plain measures they judge.

Each default filter of stack/data/filters drops a document when a quantity measured on it
crosses one of its settings (stack/data/filters/defaults.yaml, or a --filters file):

- script: the share of a document's letters in the scripts its source holds is below min_share,
  of at least min_letters letters (`script_mismatch`);
- encoding: U+FFFD is more than max_replaced_share of its letters and U+FFFD together, of at
  least min_letters of them (`mis_encoded`);
- diversity: its first window, of at least min_chars characters, repeats one of its probes and
  compresses below min_compression_ratio (`low_diversity`);
- oversize: a document a separator or a record made is longer than max_bytes (`oversize`);
- leak: the headers, their weight over the turn's length, or the fingerprint phrases of its
  first user turn pass max_headers, max_header_weight or the phrase rule (`leak_verdict`).

The filters call these rules. GATE-DATA-013's check `rules` judges each filter's drops again with
them, from quantities measured anew on the dropped document's bytes: its letters counted here one
character at a time by their Unicode script (`letters_by_script`), apart from the filter's table; its
sample (`sample_of`) and first window taken here; its zlib ratio computed here. A filter whose
threshold, comparison or measure is wrong drops documents the rule keeps, and the recheck says so.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from functools import cache

from fontTools import unicodedata as unicode_scripts

REPLACEMENT_CHARACTER = "\ufffd"
# zlib's level for the compression ratio.
ZLIB_LEVEL = 9
# The diversity probes: 16-byte stretches of a window at 1/2, 3/4 and its end.
PROBE_BYTES = 16
_CONTINUATION, _CONTINUATION_MASK = 0x80, 0xC0
# Unicode's scripts of no language of their own: Common (ʼ, µ, ℓ, the kana length mark) and
# Inherited (a combining accent, a variation selector).
_SHARED = frozenset({"Zyyy", "Zinh"})
# A script named as its writers' systems are: the Han ideographs are CJK (stack.data.filters.script).
_NAMES = {"Han": "CJK"}
# What a character is for the letter count, besides a script's name: a letter or mark that takes
# the script of the letter before it, or a character that replaced bytes that were not UTF-8.
_INHERITED, _REPLACED = "\0inherited", "\0replaced"


# -- the sample the letter-reading filters read ---------------------------------------------------


def sample_spans(length: int, size: int, spans: int) -> list[tuple[int, int]]:
    """The byte ranges of a document of `length` bytes its sample is read from: `size` bytes in
    `spans` stretches of equal length spread evenly from its start to its end, or the whole of it."""
    if length <= size:
        return [(0, length)]
    width = max(size // spans, 1)
    last = length - width
    return [(start, start + width) for start in sorted({last * i // max(spans - 1, 1) for i in range(spans)})]


def _sequence_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence that `lead` starts (1 for ASCII and for bytes no sequence starts with)."""
    if lead >= 0xF0:
        return 4 if lead < 0xF8 else 1
    if lead >= 0xE0:
        return 3
    return 2 if lead >= 0xC0 else 1


def complete_prefix(data: bytes | bytearray) -> int:
    """Length of the longest prefix of `data` that ends where a decoder would be between characters.

    Only a sequence started in the last four bytes and not yet complete is held back; bytes that
    can never become valid are left in, since a whole-document decoder replaces them the same way.
    """
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & _CONTINUATION_MASK != _CONTINUATION:  # not a continuation: the last sequence starts here
            return len(data) - back if _sequence_length(byte) > back else len(data)
    return len(data)


def _whole_characters(piece: bytes) -> bytes:
    """A stretch without the parts of characters cut at its two edges."""
    start = 0
    while start < min(3, len(piece)) and piece[start] & _CONTINUATION_MASK == _CONTINUATION:
        start += 1
    return piece[start : complete_prefix(piece)] if start < len(piece) else b""


def sample_text(pieces: Iterable[bytes]) -> str:
    """The stretches of a sample as text, one line apart; bytes that are not UTF-8 read as U+FFFD."""
    return "\n".join(_whole_characters(piece).decode("utf-8", "replace") for piece in pieces)


def sample_of(data: bytes, size: int, spans: int) -> str:
    """The sample of a document's bytes (the whole of it when it is at most `size` bytes)."""
    if len(data) <= size:
        return data.decode("utf-8", "replace")
    return sample_text(data[start:end] for start, end in sample_spans(len(data), size, spans))


# -- letters by script ----------------------------------------------------------------------------


def script_of(char: str) -> str | None:
    """The script of a letter or mark: its Unicode Script property, named in upper case (LATIN,
    CYRILLIC, DEVANAGARI, NEW TAI LUE; the Han ideographs are CJK); None for Common or Inherited
    (ʼ, ℓ, µ, a combining accent), which has no language of its own.

    The property, not the first word of the character's name, which names no script for K (KELVIN
    SIGN, Latin), ℹ (INFORMATION SOURCE, Common) or ʰ (MODIFIER LETTER SMALL H, Latin), and one
    script, TAI, for Tai Le, Tai Tham and Tai Viet (fontTools carries Unicode's Scripts.txt)."""
    code = unicode_scripts.script(char)
    if code in _SHARED:
        return None
    name = unicode_scripts.script_name(code)
    return _NAMES.get(name, name).upper()


@cache
def script_names() -> frozenset[str]:
    """Every name `script_of` gives a script."""
    codes = unicode_scripts.Scripts.NAMES.keys() - _SHARED - {"Zzzz"}  # Zzzz: unassigned
    return frozenset(_NAMES.get(name, name).upper() for name in map(unicode_scripts.script_name, codes))


@cache
def _class(char: str) -> str | None:
    """A letter's or mark's script, or _INHERITED for one of a script shared by many (Common or
    Inherited); _REPLACED for U+FFFD; None for anything else."""
    if unicodedata.category(char)[0] in "LM":
        return script_of(char) or _INHERITED
    return _REPLACED if char == REPLACEMENT_CHARACTER else None


def letters_by_script(text: str) -> tuple[dict[str, int], int]:
    """The letters of `text` by script (Unicode categories L and M: a mark of no script of its own
    counts with the character before it), and its U+FFFD; one character at a time."""
    letters: Counter[str] = Counter()
    replaced = 0
    last: str | None = None
    for char in text:
        found = _class(char)
        if found == _INHERITED:
            found = last
        else:
            last = found
        if found == _REPLACED:
            replaced += 1
        elif found is not None:
            letters[found] += 1
    return dict(letters), replaced


# -- the rules ------------------------------------------------------------------------------------


def script_mismatch(
    letters: Mapping[str, int], held: Collection[str], min_share: float, min_letters: int
) -> bool:
    """Whether fewer than `min_share` of a document's letters are in the scripts `held` (never for
    a document of fewer than `min_letters` letters: too short to tell)."""
    total = sum(letters.values())
    if total < min_letters:
        return False
    return sum(n for name, n in letters.items() if name in held) / total < min_share


def replaced_share(letters: int, replaced: int) -> float | None:
    """U+FFFD's share of a sample's letters and U+FFFD (None: neither is there)."""
    total = letters + replaced
    return replaced / total if total else None


def mis_encoded(letters: int, replaced: int, max_share: float, min_letters: int) -> bool:
    """Whether U+FFFD is more than `max_share` of `letters` + `replaced` (never under `min_letters`)."""
    share = replaced_share(letters, replaced)
    if share is None or letters + replaced < min_letters:
        return False
    return share > max_share


def compression_ratio(data: bytes) -> float:
    """zlib's compressed size over `data`'s size at level 9 (0.0 for no data): a loop compresses
    to a few per cent, text that only has a small alphabet costs about its entropy."""
    return len(zlib.compress(data, ZLIB_LEVEL)) / len(data) if data else 0.0


def repeats_itself(window: bytes) -> bool:
    """Whether one of the window's probes (16 bytes at 1/2, 3/4 and the end) occurs earlier in it."""
    for start in (len(window) // 2, len(window) * 3 // 4, len(window) - PROBE_BYTES):
        if start > 0 and window.find(window[start : start + PROBE_BYTES]) < start:
            return True
    return False


def low_diversity(window: str, min_chars: int, min_ratio: float) -> bool:
    """Whether a document's first window (its first window_chars characters) is long enough to tell
    (`min_chars`), repeats itself and compresses below `min_ratio`."""
    if len(window) < min_chars:
        return False
    data = window.encode("utf-8")
    return repeats_itself(data) and compression_ratio(data) < min_ratio


def oversize(length: int, max_bytes: int) -> bool:
    """Whether a document of `length` bytes is longer than `max_bytes`."""
    return length > max_bytes


def leak_verdict(
    headers: int,
    chars: int,
    phrases: int,
    max_headers: int,
    max_header_weight: float,
    fingerprint_min_chars: int,
) -> str | None:
    """Why a first user turn of `chars` characters holding `headers` prose headers and `phrases`
    fingerprint phrases is a leaked prompt (`leak_phrase`, `leak_headers`, `leak_weight`), or None:
    two phrases, or one beside a header or in a turn of at least fingerprint_min_chars; more
    headers than max_headers; headers × chars / 1000 above max_header_weight."""
    if phrases >= 2 or (phrases and (headers or chars >= fingerprint_min_chars)):
        return "leak_phrase"
    if headers > max_headers:
        return "leak_headers"
    if headers * chars / 1000 > max_header_weight:
        return "leak_weight"
    return None
