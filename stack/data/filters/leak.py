"""Leaked system prompts: a document that opens with an assistant's instructions.

Scraped chat logs and "prompt collections" carry whole system prompts; trained on, a model
learns to recite them. A leaked prompt shows in the head region (the first user turn of chat
data, else the first `head_chars` characters) as:

- more than `max_headers` markdown headers (`# Role`, `## Output format`, ...);
- headers × head length / 1000 above `max_header_weight`: a few headers over a long block;
- a fingerprint phrase ("You are ChatGPT", "Knowledge cutoff:"), case-insensitive.

A header is a prose header: `#`s, a space, a title of at most `max_title_words` words that
starts with a capital letter, on a line of its own after a blank line (or at the start), and
not followed by another `#` line. So a code comment block (`# Copyright ...` over several
lines) is no header, and sources of kind `code` skip the header rules altogether. Headers in an
assistant's answer are not in the head region, so legitimate markdown answers are kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from stack.data.filters.settings import LeakSettings

_HEADER_RE = re.compile(r"#{1,6} +([A-Z][^\n]*?)\s*")


def first_user_turn(turns: Sequence[tuple[str, str]]) -> str | None:
    """The content of the first `user` turn of a chat example's (role, content) turns, if any.

    A chat reader passes it as the head region, so a system prompt in the `system` message, where
    it belongs, is not a leak, and one pasted into the user's turn is.
    """
    return next((content for role, content in turns if role == "user"), None)


def head_region(text: str, settings: LeakSettings, head: str | None = None) -> str:
    """Where a leaked prompt would sit: `head` (a first user turn) if given, else the text's beginning."""
    return (head if head is not None else text)[: settings.head_chars]


def count_headers(region: str, settings: LeakSettings) -> int:
    """Prose markdown headers in `region` (see the module docstring for what counts)."""
    if "#" not in region:
        return 0
    lines = region.split("\n")
    found = 0
    for i, line in enumerate(lines):
        match = _HEADER_RE.fullmatch(line)
        if match is None or len(match[1].split()) > settings.max_title_words:
            continue
        after_blank = i == 0 or not lines[i - 1].strip()
        before_comment = i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#")
        found += after_blank and not before_comment
    return found


@cache
def _lowered(phrases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(phrase.lower() for phrase in phrases)


def leak_reason(region: str, settings: LeakSettings, headers_apply: bool) -> str | None:
    """Why the head region is a leaked prompt (`leak_headers`, `leak_weight`, `leak_phrase`), or None."""
    if settings.fingerprints:
        lowered = region.lower()
        for phrase in _lowered(tuple(settings.fingerprints)):
            if phrase in lowered:
                return "leak_phrase"
    if not headers_apply:
        return None
    headers = count_headers(region, settings)
    if headers > settings.max_headers:
        return "leak_headers"
    if headers * len(region) / 1000 > settings.max_header_weight:
        return "leak_weight"
    return None


def prompt_like(headers: int, body_chars: int) -> str:
    """A prompt-like text of `headers` headers, about `body_chars` long (at least a character under each)."""
    per = max(body_chars // max(headers, 1) - 20, 1)
    return "".join(
        f"# Section {'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i % 26]}\n\n{'x' * per}\n\n" for i in range(headers)
    )


def canaries(settings: LeakSettings) -> dict[str, tuple[str, str | None, bool]]:
    """Planted cases at the configured limits: name → (text, head or None, whether it must be dropped).

    Built from the settings, so a limit moved by a --filters file moves its canaries with it:
    one header over the limit is dropped and the limit itself kept, a fingerprint is dropped,
    and the near misses (markdown in an assistant's answer, a URL path full of slashes) are kept.
    """
    over = settings.max_headers + 1
    short = "Tell me about the weather."
    at_weight = int(settings.max_header_weight * 1000 / max(settings.max_headers, 1))
    cases = {
        # The shortest texts of their header counts, so the weight rule stays out of the way.
        "headers_over_limit": (prompt_like(over, 0), None, True),
        "headers_at_limit": (prompt_like(settings.max_headers, 0), None, False),
        "markdown_in_answer": (
            short + "\n\n" + prompt_like(over + 2, 400),
            short,  # the first user turn: the headers are the assistant's answer
            False,
        ),
        "url_path": (
            "See https://example.org/docs/api/v2/users/list/#/section/a/b for the list.",
            None,
            False,
        ),
    }
    if settings.max_headers >= 1 and at_weight <= settings.head_chars:
        # max_headers headers in a head exactly at the weight limit, then one character over it.
        body = prompt_like(settings.max_headers, at_weight)
        body = (body + "y" * at_weight)[:at_weight]
        cases["weight_at_limit"] = (body, None, False)
        if at_weight + 1 <= settings.head_chars:
            cases["weight_over_limit"] = (body + "y", None, True)
    if settings.fingerprints:
        cases["fingerprint"] = (f"Hello.\n{settings.fingerprints[0].upper()} and more.", None, True)
    return cases
