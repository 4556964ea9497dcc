"""Leaked system prompts: an assistant's instructions where a user's words belong.

Scraped chat logs and agent sessions carry whole system prompts pasted into the user's turn;
trained on, a model learns that users speak in multi-section instructions and recites them. So
the filter judges one region, the first user turn, and nothing else:

- of a chat example (`--format chat|prompt-completion`): its first `user` message;
- of a chat transcript held in a document's text: the text after the first user marker of the
  settings' `turns` (`<|im_start|>user`, `[INST]`, ...) up to its end marker. A transcript's
  system turn, where a system prompt belongs, and its answers are not judged;
- a document that holds no transcript (prose, markdown, a README, code, a script) has no first
  user turn and is never judged: its own headers and its code's strings are not a leak.

The region (at most `head_chars` characters) is a leaked prompt when it holds:

- more than `max_headers` markdown headers (`# Role`, `## Output format`, ...);
- headers × region length / 1000 above `max_header_weight`: a few headers over a long block;
- two fingerprint phrases ("You are ChatGPT", "Knowledge cutoff:"), case-insensitive; or one in a
  turn that also holds a header or is at least `fingerprint_min_chars` long: a one-line "You are
  a helpful assistant." before a question (how Gemma's chat format carries a system prompt) is
  no leak.

A header is a prose header: `#`s, a space, a title of at most `max_title_words` words that
starts with a capital letter, on a line of its own after a blank line (or at the start), and
not followed by another `#` line (so a comment block pasted into a question is no header).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from contracts.filter_rules import leak_verdict
from contracts.leak_canaries import fingerprint_turn, leak_cases, weight_at_limit
from stack.data.filters.settings import LeakSettings, TurnMarkers

_HEADER_RE = re.compile(r"#{1,6} +([A-Z][^\n]*?)\s*")


def first_user_turn(turns: Sequence[tuple[str, str]]) -> str | None:
    """The content of the first `user` turn of a chat example's (role, content) turns, if any.

    A chat reader passes it as the region judged, so a system prompt in the `system` message, where
    it belongs, is not a leak, and one pasted into the user's turn is.
    """
    return next((content for role, content in turns if role == "user"), None)


@dataclass(frozen=True)
class _Markers:
    """One transcript format's markers as bytes, made once: the user marker, the same without the line
    ends before it (matched at the very start of a document, or None), and the end marker."""

    user: bytes
    bare: bytes | None
    end: bytes
    needs_end: bool


@cache
def _markers(markers: TurnMarkers) -> _Markers:
    user = markers.user.encode("utf-8")
    bare = user.lstrip(b"\n")
    return _Markers(user, bare if bare != user else None, markers.end.encode("utf-8"), markers.needs_end)


def _turn_in(data: bytes, markers: _Markers, chars: int) -> str | None:
    """The first `chars` characters of the first user turn of `data` by one transcript format, or None
    when the document is not one."""
    found = data.find(markers.user)
    if found >= 0:
        start = found + len(markers.user)
    elif markers.bare is not None and data.startswith(markers.bare):
        start = len(markers.bare)
    else:
        return None
    end = data.find(markers.end, start)
    if end < 0:
        if markers.needs_end:  # plain words mark a transcript only with the answer's marker after
            return None
        end = len(data)  # a turn longer than the text read runs to its end
    return data[start : min(end, start + 4 * chars)].decode("utf-8", "ignore")


def transcript_turn(data: bytes, settings: LeakSettings) -> str | None:
    """The first user turn of a chat transcript held in a document (its UTF-8 bytes), by the first
    format of the settings' `turns` that it holds; None for a document that holds no transcript.
    The markers are looked for in all of `data`, so a long system turn does not hide the user's."""
    for markers in settings.turns:
        turn = _turn_in(data, _markers(markers), settings.head_chars)
        if turn is not None:
            return turn
    return None


def head_region(data: bytes, settings: LeakSettings, head: str | None = None) -> str | None:
    """Where a leaked prompt would sit: `head` (a chat example's first user turn) if given, else the
    first user turn of a transcript in `data`; None when there is none (the document is not judged)."""
    turn = head if head is not None else transcript_turn(data, settings)
    return None if turn is None else turn.strip()[: settings.head_chars]


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


def measured(region: str, settings: LeakSettings) -> tuple[int, int, int]:
    """What the rule reads of a first user turn: its prose headers, its characters and the
    fingerprint phrases it holds."""
    lowered = region.lower()
    phrases = sum(phrase in lowered for phrase in _lowered(tuple(settings.fingerprints)))
    return count_headers(region, settings), len(region), phrases


def leak_reason(region: str, settings: LeakSettings) -> str | None:
    """Why a first user turn is a leaked prompt (`leak_phrase`, `leak_headers`, `leak_weight`), or
    None, by the rule of contracts.filter_rules.leak_verdict."""
    s = settings
    return leak_verdict(*measured(region, s), s.max_headers, s.max_header_weight, s.fingerprint_min_chars)


def judge(data: bytes, settings: LeakSettings, head: str | None = None) -> str | None:
    """The leak filter's verdict on a document's UTF-8 bytes (`head`: a chat example's first user turn)."""
    region = head_region(data, settings, head)
    return None if region is None else leak_reason(region, settings)


def prompt_like(headers: int, body_chars: int) -> str:
    """A prompt-like text of `headers` headers, about `body_chars` long (at least a character under each)."""
    per = max(body_chars // max(headers, 1) - 20, 1)
    return "".join(
        f"# Section {'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i % 26]}\n\n{'x' * per}\n\n" for i in range(headers)
    ).strip()


@dataclass(frozen=True)
class Case:
    """A planted case: the first user turn of a transcript (`turn`, with the system turn `before` it
    and the answer `after` it), or a plain document (`turn` None, `text` its whole text)."""

    turn: str | None
    must_drop: bool
    before: str = ""
    after: str = ""
    text: str = ""

    def as_text(self, markers: TurnMarkers) -> str:
        """The case as a document's text: a transcript in the format of `markers`, or the plain text."""
        if self.turn is None:
            return self.text
        before = self.before + "\n" if self.before else ""
        return f"{before}{markers.user}\n{self.turn}{markers.end}\n{self.after}"


def _client_code(phrase: str, chars: int) -> str:
    """Code that calls a chat model, its system prompt in the `system` message where it belongs, at
    least `chars` long (so that judged whole, as the first user turn it is not, it would be a leak)."""
    code = (
        "from openai import OpenAI\n\nclient = OpenAI()\nreply = client.chat.completions.create(\n"
        '    model="a-model",\n    messages=[\n'
        f'        {{"role": "system", "content": "{phrase.capitalize()}."}},\n'
        '        {"role": "user", "content": question},\n    ],\n)\n'
    )
    while len(code) < chars:
        code += "print(reply.choices[0].message.content, file=log)\n"
    return code


def canaries(settings: LeakSettings) -> dict[str, Case]:
    """Planted cases at the configured limits, by name: those contracts.leak_canaries lists for the
    settings, with what each must do.

    Built from the settings, so a limit moved by a --filters file moves its canaries with it: a
    first user turn one header over the limit is dropped and one at the limit kept, a fingerprint
    in it is dropped; and the near misses are kept: markdown in the answer, a URL path, a system
    prompt in the system turn, a markdown document and client code that are no transcript.
    """
    over = settings.max_headers + 1
    short = "Tell me about the weather."
    at_weight = weight_at_limit(settings.max_header_weight, settings.max_headers)
    phrase = settings.fingerprints[0] if settings.fingerprints else "you are a helpful assistant"
    # max_headers headers in a turn exactly at the weight limit (then one character over it).
    at_limit = (prompt_like(settings.max_headers, at_weight) + "y" * at_weight)[:at_weight]
    said = fingerprint_turn(settings.fingerprints) if settings.fingerprints else ""
    built: dict[str, Callable[[bool], Case]] = {
        # The shortest turns of their header counts, so the weight rule stays out of the way.
        "headers_over_limit": lambda drop: Case(prompt_like(over, 0), drop),
        "headers_at_limit": lambda drop: Case(prompt_like(settings.max_headers, 0), drop),
        "markdown_in_answer": lambda drop: Case(short, drop, after=prompt_like(over + 2, 400)),
        "url_path": lambda drop: Case(
            "See https://example.org/docs/api/v2/users/list/#/section/a/b for the list.", drop
        ),
        "system_prompt_in_system_turn": lambda drop: Case(
            short, drop, before=f"{phrase.capitalize()}.\n\n{prompt_like(over + 2, 400)}"
        ),
        "markdown_document": lambda drop: Case(
            None, drop, text=f"{prompt_like(over + 2, 400)}\n\n{phrase}\n"
        ),
        "client_code": lambda drop: Case(
            None, drop, text=_client_code(phrase, settings.fingerprint_min_chars)
        ),
        "weight_at_limit": lambda drop: Case(at_limit, drop),
        "weight_over_limit": lambda drop: Case(at_limit + "y", drop),
        "fingerprint": lambda drop: Case(
            said + " " + "y" * max(settings.fingerprint_min_chars - len(said) - 1, 0), drop
        ),
        "fingerprint_in_a_short_turn": lambda drop: Case(said, drop),
        "two_fingerprints": lambda drop: Case(
            f"{settings.fingerprints[0]}. {settings.fingerprints[1]}\nHi.", drop
        ),
    }
    wanted = leak_cases(
        settings.max_headers,
        settings.max_header_weight,
        settings.head_chars,
        settings.fingerprints,
        settings.fingerprint_min_chars,
    )
    return {name: built[name](must_drop) for name, must_drop in wanted.items()}
