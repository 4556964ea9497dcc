"""The leak filter's canaries: which cases are planted for the settings in force, and which of them
must be dropped.

GATE-DATA-012 judges the leak filter on planted cases built at the configured limits: a first
user turn one header over `max_headers` (dropped) and one at it (kept), a turn one character
over the header weight limit (dropped) and one at it (kept), fingerprint phrases (dropped), and
near misses that are no leak (kept). Which cases exist depends on the settings: the weight
pair only when a turn at the weight limit fits in `head_chars`, the fingerprint cases only when
there are fingerprint phrases. That list is written here once. stack.data.filters.leak builds
each case's text from it, and the integrity check rebuilds it from a record's
`config.filter_settings.leak`, so a record whose rows leave out a case (its turn formats all
removed together) or restate what a case must do is held to the settings it names (a record that
kept 72 of the 92 rows would otherwise pass).

A transcript case is judged as a document in every turn format of the settings
(`<case> in <user marker>`) and as a chat example (`<case> as chat`); a plain-document case once,
by its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The cases that are whole documents, not a transcript's first user turn.
PLAIN_CASES = ("markdown_document", "client_code")


def weight_at_limit(max_header_weight: float, max_headers: int) -> int:
    """The length of a turn of `max_headers` headers whose header weight is exactly the limit."""
    return int(max_header_weight * 1000 / max(max_headers, 1))


def fingerprint_turn(fingerprints: Sequence[str]) -> str:
    """The shortest fingerprint case: the first phrase, upper-cased, in a two-line turn."""
    return f"Hello.\n{fingerprints[0].upper()} and more."


def leak_cases(
    max_headers: int,
    max_header_weight: float,
    head_chars: int,
    fingerprints: Sequence[str],
    fingerprint_min_chars: int,
) -> dict[str, bool]:
    """The leak canary cases planted for these settings, by name, and whether each must be dropped."""
    cases = {
        "headers_over_limit": True,
        "headers_at_limit": False,
        "markdown_in_answer": False,
        "url_path": False,
        "system_prompt_in_system_turn": False,
        "markdown_document": False,
        "client_code": False,
    }
    at_weight = weight_at_limit(max_header_weight, max_headers)
    if max_headers >= 1 and at_weight <= head_chars:
        cases["weight_at_limit"] = False
        if at_weight + 1 <= head_chars:
            cases["weight_over_limit"] = True
    if fingerprints:
        cases["fingerprint"] = True
        cases["fingerprint_in_a_short_turn"] = len(fingerprint_turn(fingerprints)) >= fingerprint_min_chars
    if len(fingerprints) >= 2:
        cases["two_fingerprints"] = True
    return cases


def canary_rows(leak: Mapping[str, Any]) -> dict[str, bool]:
    """GATE-DATA-012's rows for leak settings as a config keeps them (`filter_settings.leak`): each
    row's name and whether it must be dropped. KeyError or TypeError for settings that are not
    leak settings."""
    cases = leak_cases(
        int(leak["max_headers"]),
        float(leak["max_header_weight"]),
        int(leak["head_chars"]),
        [str(phrase) for phrase in leak["fingerprints"]],
        int(leak["fingerprint_min_chars"]),
    )
    markers = [str(turn["user"]).strip() for turn in leak["turns"]]
    rows: dict[str, bool] = {}
    for name, must_drop in cases.items():
        if name in PLAIN_CASES:
            rows[name] = must_drop
            continue
        rows.update({f"{name} in {marker}": must_drop for marker in markers})
        rows[f"{name} as chat"] = must_drop
    return rows
