"""Chat templates as data, and how one supervised example becomes token ids and a loss mask.

A template is a YAML (or JSON) file: the text written before and after each role's turn, and
the assistant marker. The stack ships `stack/data/templates/chat.yaml`; `--template FILE`
reads a user's own. Rendering an example (a list of {role, content} turns ending with the
assistant's) goes turn by turn:

* a system or user turn adds `prefix + content + suffix` to the pending text;
* an assistant turn adds `prefix + content`; the pending text is tokenized as one piece, the
  assistant marker's ids are searched for in it (the last occurrence), and the tokens after the
  marker are supervised; then the tokenizer's EOS id is appended, supervised, and the pending
  text starts again.

That grouping is written once (`turn_segments`): `render` tokenizes it and `supervised_texts`
reads it as text. What an example must read back as is written apart from it (`example_text`):
every message in order with its role's text around it, so GATE-SFT-001 sees a turn the grouping
lost.

A role the template has no turn for leaves the example out as unrenderable
(stack.data.chat_shapes.UNRENDERABLE), counted, never refusing the file.

A template may write the tokenizer's own special tokens (`<|im_start|>`, `<|eot_id|>`, ...):
where the model's tokenizer has such a token, the template's text of it becomes that one id
(`encode_turn`), as the model met it in its own chat format; where it has none, it is text like
any other. Only the template's text is read so: the same string inside a message's content is
encoded as text, so an example cannot smuggle a special id in.

Searching the marker in the tokenized text, rather than tokenizing the marker apart, is what a
completion-only collator does, and it has the trap such collators have: a BPE may merge the
marker with its neighbours so that its ids never appear. That is GATE-SFT-002 firing for the
whole preparation, not a warning that silently drops the example. Nothing but the mask is
derived from the marker: the EOS is supervised by position, never by id, so a pad id equal to
the EOS id cannot mask it (GATE-SFT-001 checks the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from contracts.reading import load_yaml
from stack.data.chat_shapes import (
    ROLES,
    UNRENDERABLE,
    UNRENDERABLE_FIX,
    LeftOut,
    chat_turns,
    excerpt,
    prompt_completion_turns,
)
from stack.data.tokenizer import Tokenizer

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = "chat"


class Turn(BaseModel):
    """The text around one role's turns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = ""
    suffix: str = ""


class TemplateFile(BaseModel):
    """A template file as written; unknown keys are refused so a misspelt field shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    roles: dict[str, Turn]
    assistant_marker: str = Field(min_length=1)


@dataclass(frozen=True)
class ChatTemplate:
    """A loaded template and the sha256 of its file, which the manifest records."""

    spec: TemplateFile
    sha256: str
    path: Path


@dataclass
class Rendered:
    """One example as ids and a per-token supervision mask; `markers_missing` counts assistant
    turns whose marker ids were not found (the mask of such a turn is left unsupervised)."""

    ids: np.ndarray
    mask: np.ndarray
    assistant_turns: int
    markers_missing: int
    # Positions that are padding inside the example (a preference pair's rows): packed as example 0.
    padding: np.ndarray | None = None
    # Assistant turns read as context, not supervised: a model's template writes them otherwise
    # once a later turn follows (stack.data.chat_render)
    history_turns: int = 0


def template_path(name_or_file: str | None) -> Path:
    """A shipped template by name (default `chat`), or a user's file by path."""
    if name_or_file is None:
        return TEMPLATES_DIR / f"{DEFAULT_TEMPLATE}.yaml"
    shipped = TEMPLATES_DIR / f"{name_or_file}.yaml"
    return shipped if shipped.is_file() else Path(name_or_file)


def load_template(name_or_file: str | None) -> ChatTemplate:
    """Read and validate a template; any defect is BadInput naming the file."""
    path = template_path(name_or_file)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        shipped = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml")))
        raise BadInput(
            f"--template {name_or_file}: cannot read {path} ({exc.strerror}); give a YAML file or one of: "
            f"{shipped}"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(f"--template {path} is not YAML or JSON: {' '.join(str(exc).split())[:160]}") from None
    try:
        spec = TemplateFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "template"
        raise BadInput(f"--template {path}: {where}: {first['msg']} (see docs/finetuning.md)") from None
    unknown = sorted(set(spec.roles) - set(ROLES))
    if unknown or "assistant" not in spec.roles:
        raise BadInput(
            f"--template {path}: roles must include assistant and be among {', '.join(ROLES)}; "
            f"got {', '.join(spec.roles)}"
        )
    if spec.roles["assistant"].suffix:
        raise BadInput(
            f"--template {path}: the assistant role has a suffix; an assistant turn ends with the EOS "
            "the stack writes, so drop the suffix"
        )
    return ChatTemplate(spec, sha256_file(path), path)


def example_turns(record: Any, fmt: str, where: str) -> list[tuple[str, str]]:
    """(role, content) turns of one record of `--format chat` or `prompt-completion`, in any of the
    shapes stack.data.chat_shapes reads."""
    if fmt == "prompt-completion":
        return prompt_completion_turns(record, where)
    return chat_turns(record, where)


def _last_occurrence(ids: np.ndarray, marker: np.ndarray) -> int | None:
    """Start of the last run of `marker` in `ids`, or None."""
    n, m = len(ids), len(marker)
    if m == 0 or m > n:
        return None
    windows = np.lib.stride_tricks.sliding_window_view(ids, m)
    hits = np.flatnonzero((windows == marker).all(axis=1))
    return int(hits[-1]) if hits.size else None


# A piece of an example's text and whether the template wrote it (True) or a message holds it.
Segment = tuple[str, bool]


def encode_turn(tokenizer: Tokenizer, segments: list[Segment]) -> list[int]:
    """Token ids of one turn's text: the tokenizer's special tokens written by the template become
    their ids; everything between them (template text and message text run together) is encoded
    as one piece, as it would be without them, so a BPE merges across the seams as it always has."""
    ids: list[int] = []
    pending: list[str] = []
    for text, by_template in segments:
        for part in tokenizer.split_specials(text) if by_template else [text]:
            if isinstance(part, str):
                pending.append(part)
                continue
            ids += tokenizer.encode("".join(pending)) if any(pending) else []
            ids.append(part)
            pending = []
    return ids + (tokenizer.encode("".join(pending)) if any(pending) else [])


def turn_segments(template: ChatTemplate, turns: list[tuple[str, str]], where: str) -> list[list[Segment]]:
    """Each assistant turn of an example as the segments tokenized together: every system and user
    turn since the previous assistant turn, then the assistant's prefix and content (see the module
    docstring). The one account of how an example's text is grouped: `render` tokenizes it and
    `supervised_texts` reads it as text. Non-assistant turns after the last assistant's are
    nothing to learn from and left out (stack.data.chat_shapes leaves such examples out)."""
    spec = template.spec
    grouped: list[list[Segment]] = []
    pending: list[Segment] = []
    for role, content in turns:
        if role not in spec.roles:
            reason = f"role {role!r}, which the template {spec.name} has no turn for: {excerpt(content)}"
            raise LeftOut(UNRENDERABLE, where, f"{reason}; {UNRENDERABLE_FIX}")
        turn = spec.roles[role]
        if role != "assistant":
            pending += [(turn.prefix, True), (content, False), (turn.suffix, True)]
            continue
        grouped.append([*pending, (turn.prefix, True), (content, False)])
        pending = []
    return grouped


def render(
    template: ChatTemplate, tokenizer: Tokenizer, turns: list[tuple[str, str]], where: str
) -> Rendered:
    """Token ids and supervision mask of one example (see the module docstring)."""
    marker_text = template.spec.assistant_marker
    marker = np.asarray(encode_turn(tokenizer, [(marker_text, True)]), dtype=np.int64)
    for role, content in turns:
        if role == "assistant" and marker_text in content:
            raise BadInput(
                f"{where}: an assistant message contains the assistant marker {marker_text!r}; "
                "its supervised part would be ambiguous"
            )
    pieces_ids: list[np.ndarray] = []
    pieces_mask: list[np.ndarray] = []
    missing = 0
    grouped = turn_segments(template, turns, where)
    for segments in grouped:
        ids = np.asarray(encode_turn(tokenizer, segments), dtype=np.int64)
        mask = np.zeros(len(ids) + 1, dtype=np.uint8)
        found = _last_occurrence(ids, marker)
        if found is None:
            missing += 1
        else:
            mask[found + len(marker) :] = 1  # the content's tokens and the EOS after them
        pieces_ids += [ids, np.array([tokenizer.eot_id], dtype=np.int64)]
        pieces_mask.append(mask)
    return Rendered(
        ids=np.concatenate(pieces_ids),
        mask=np.concatenate(pieces_mask),
        assistant_turns=len(grouped),
        markers_missing=missing,
    )


# One assistant turn as text: what comes before its supervised part (from the turn's first
# character through the marker), the supervised part itself (the rest of the turn: what follows
# the marker in the assistant's prefix, then the content), and whether an EOS the stack wrote
# follows it (always, with the stack's templates; a model's own ends its turns itself,
# stack.data.chat_render).
TurnText = tuple[str, str, bool]


def supervised_texts(template: ChatTemplate, turns: list[tuple[str, str]]) -> list[TurnText]:
    """Each assistant turn of an example as text, written from the template and the messages alone,
    never from ids or masks: what GATE-SFT-001 compares the supervised tokens of a rendering with.

    A turn's text is its segments (`turn_segments`) as `render` tokenizes them; its supervised part
    starts after the last occurrence of the marker's text (an assistant content never holds the
    marker: `render` refuses it).
    """
    marker, texts = template.spec.assistant_marker, []
    for segments in turn_segments(template, turns, "example"):
        text = "".join(piece for piece, _ in segments)
        found = text.rfind(marker)  # not found: nothing is to be supervised (GATE-SFT-002)
        cut = len(text) if found < 0 else found + len(marker)
        texts.append((text[:cut], text[cut:], True))
    return texts


# An example as text: the whole of what its ids decode to, and the content of each of its
# messages, in order.
ExampleText = tuple[str, tuple[str, ...]]


def example_text(template: ChatTemplate, tokenizer: Tokenizer, turns: list[tuple[str, str]]) -> ExampleText:
    """An example as text, written from its messages alone, never from a grouping of its turns: every
    message through the last assistant's, in order, each with its role's text around it (an
    assistant's prefix and content; its EOS is no text). The template's own special tokens are read
    as their decoding, as `encode_turn` makes them ids; a message's text stays text. What
    GATE-SFT-001 reads each packed example back against: a message left out of the rendering
    (a system turn dropped from the prompt) shows there, whatever the grouping of the turns."""
    spec = template.spec

    def message(role: str, content: str) -> str:
        turn = spec.roles[role]
        written = template_text(tokenizer, turn.prefix)
        return written + content + ("" if role == "assistant" else template_text(tokenizer, turn.suffix))

    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=-1)
    spoken = turns[: last + 1]
    return "".join(message(*turn) for turn in spoken), tuple(content for _, content in spoken)


def template_text(tokenizer: Tokenizer, text: str) -> str:
    """A template's text as its ids decode: each special token of the tokenizer it writes as that
    token's decoding (`encode_turn` makes it the id; an EOS decodes to nothing)."""
    parts = tokenizer.split_specials(text)
    return "".join(part if isinstance(part, str) else tokenizer.decode([part]) for part in parts)


def concatenated_text(prompt: str, completion: str) -> ExampleText:
    """A prompt-completion record joined as TRL joins one (`render_concatenated`), as text."""
    return prompt + completion, (prompt, completion)


def render_concatenated(tokenizer: Tokenizer, prompt: str, completion: str, where: str) -> Rendered:
    """A prompt-completion record joined as TRL joins one: the prompt's ids (not supervised), then
    the completion's and the EOS (supervised), with no template text between them. The two are
    tokenized apart, so the boundary is a token index as generation meets it (the model continues
    the prompt's own ids); TRL tokenizes prompt + completion as one text and masks the prompt's
    token count, which differs only where a BPE merges across the seam."""
    prompt_ids, completion_ids = tokenizer.encode(prompt), tokenizer.encode(completion)
    if not completion_ids:
        raise BadInput(f"{where}: the completion is empty; there is nothing to supervise")
    ids = np.asarray([*prompt_ids, *completion_ids, tokenizer.eot_id], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=np.uint8)
    mask[len(prompt_ids) :] = 1
    return Rendered(ids=ids, mask=mask, assistant_turns=1, markers_missing=0)
