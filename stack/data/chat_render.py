"""Fine-tuning examples rendered by a model's own chat template, as the model's users render them.

A model made elsewhere ships its chat format as a Jinja template (tokenizer_config.json's
`chat_template`, or chat_template.jinja), which the stack's data-only templates
(stack.data.sft_template) cannot express: a bos before the first turn, an end of turn after the
assistant's (`<|eot_id|>`, ChatML's `<|im_end|>\\n`), a system prompt folded into the first user
turn, tool calls. When the tokenizer `stack prepare` is given comes from such a model, the examples
are rendered by that template (`ModelTemplate`), unless `--template` names another.

How an example becomes ids and a supervision mask, for any template (`render_model`): the
conversation is rendered whole, and again up to each assistant message with the generation prompt
(its prompt, `P_k`) and through it (`F_k`), by transformers' own renderer
(stack.data.chat_jinja.render_jinja). Each must begin the next, for the turn to be supervised: then
the whole conversation's text through the turn is what the model reads and writes when it generates
that turn, its prompt as the template writes it and then the message. Some templates write an
earlier assistant turn otherwise once a later user turn follows: Qwen3's (and DeepSeek-R1's) drop
an earlier turn's reasoning block, so the turn the model generated behind `<think>…</think>` stands
in the history without it. Such a turn is not supervised (the model never writes it as the history
shows it, and training it there would teach it to answer without the block where it opens one); it
is read as context, part of the next supervised turn's prompt, and counted (`history_turns`, which
the manifest keeps and `stack prepare` reports). The last assistant turn, which ends every example
(stack.data.chat_shapes), is the whole conversation's end, so it is always supervised; a
conversation whose generation prompt does not begin a turn is left out as unrenderable. The
text from the end of the previous supervised turn to `P_k` is the turn's prompt (unsupervised);
from `P_k` to `F_k` its completion, the message and whatever the template ends the turn with
(supervised). The two are tokenized apart, so their boundary is a token
boundary as generation meets it: the model continues its prompt's own ids. Where the template
writes a message's content (found by rendering the conversation with a stand-in for each) the
content is encoded as text; the template's own text has its special tokens read as their ids
(stack.data.sft_template.encode_turn), as transformers reads them. After the last turn the
tokenizer's end of sequence follows, supervised, unless the template's completion already holds
it: every example ends where a document ends.

A conversation the template cannot render (it raises, or leaves a message's content out, or
writes it changed) is left out as unrenderable (stack.data.chat_shapes.UNRENDERABLE), never
rendered another way. A template whose own text depends on a message's (Qwen3's writes the
reasoning block an answer's content holds, `<think>…</think>`, where it writes an empty one for
other answers) has each content found where it stands in the rendered text (`_pieces`), so
reasoning traces train as the model writes them; one an earlier turn's rewrite drops is left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from contracts.record_fields import REASONING_FIELDS
from stack.data.chat_jinja import render_jinja
from stack.data.chat_shapes import UNRENDERABLE, UNRENDERABLE_FIX, LeftOut, excerpt
from stack.data.sft_template import ExampleText, Rendered, Segment, TurnText, encode_turn, template_text
from stack.data.tokenizer import PretrainedTokenizer, Tokenizer
from stack.data.tokenizer_identity import EOT_TOKEN

ASSISTANT = "assistant"
# A message's content while its place is sought: private-use code points, which no template writes.
STAND_IN = "\ue000{}\ue001"
# How much of a renderer's error a reason quotes.
ERROR_CHARS = 120


def named_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    """The tokenizer's named special tokens, as `apply_chat_template` gives them to a template
    (`bos_token`, `eos_token`, ...): a model's own, resolved as transformers resolves them
    (stack.data.hf_specials), else the end of text it ends documents with."""
    if tokenizer.settings is not None:
        return tokenizer.settings.special_tokens()
    return {"eos_token": tokenizer.eot_token if isinstance(tokenizer, PretrainedTokenizer) else EOT_TOKEN}


@dataclass(frozen=True)
class ModelTemplate:
    """A model's own Jinja chat template, and the named special tokens it is rendered with; `tools`,
    the tool definitions one record offers (`offering`), which the template writes where it writes
    them (Qwen's into the system turn), as `apply_chat_template(messages, tools=...)` does."""

    jinja: str
    special_tokens: dict[str, str]
    # The text of every special token of the tokenizer (`<|im_start|>`, ...), named or not.
    specials: frozenset[str] = frozenset()
    tools: list[dict[str, Any]] | None = field(default=None, compare=False, hash=False)

    def offering(self, tools: list[dict[str, Any]] | None) -> ModelTemplate:
        """The template as one record's conversation is rendered: with the tools it offers."""
        return replace(self, tools=tools or None)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jinja.encode("utf-8")).hexdigest()

    @property
    def name(self) -> str:
        """How the manifest and every message name it."""
        return "the model's own chat template"

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        return render_jinja(self.jinja, messages, self.special_tokens, add_generation_prompt, self.tools)


@dataclass(frozen=True)
class ModelTurn:
    """One supervised assistant turn as the template writes it: its prompt's pieces (everything since
    the previous supervised turn's completion) and its completion's, each piece (text, written by
    the template); `history` counts the assistant messages its prompt holds as context, which the
    template writes otherwise once this turn follows (the module docstring)."""

    prompt: list[Segment]
    completion: list[Segment]
    history: int = 0


def _unrenderable(where: str, why: str) -> LeftOut:
    return LeftOut(UNRENDERABLE, where, f"{why}; {UNRENDERABLE_FIX}")


def _rendered(
    template: ModelTemplate, messages: list[dict[str, Any]], where: str, prompt: bool = False
) -> str:
    """The template's text of `messages`; a renderer's error leaves the example out."""
    try:
        return template.render(messages, prompt)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:ERROR_CHARS]
        raise _unrenderable(
            where, f"{template.name} cannot render it ({type(exc).__name__}: {detail})"
        ) from None


def _fields(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(message, key, text) of each text a template writes of a message, in message order: its
    reasoning stated apart (contracts.record_fields.REASONING_FIELDS, where it says anything), then
    its content."""
    return [
        (i, key, message[key])
        for i, message in enumerate(messages)
        for key in (*REASONING_FIELDS, "content")
        if isinstance(message.get(key), str) and (key == "content" or message[key].strip())
    ]


def _pieces(template: ModelTemplate, messages: list[dict[str, Any]], whole: str, where: str) -> list[Segment]:
    """`whole`, the template's text of `messages`, as pieces: each message's content (and reasoning,
    `_fields`) and the template's text between them. A text is placed where a stand-in for it
    renders; where the template's own text depends on the message, so that the stand-ins render
    otherwise (Qwen3's opens an answer with the reasoning block its content holds, or an empty one),
    each text is found in `whole` in order instead, unless one holds a special token's text (whose
    place decides whether it is the special's id or text: stand-ins alone can tell). A template that
    leaves a text out (an earlier turn's reasoning, as Qwen3's drops it), or writes it otherwise than
    as it is (or stripped, as a `| trim` does), leaves the example out."""
    fields = _fields(messages)
    stood = [dict(message) for message in messages]
    for i, key, _ in fields:
        stood[i][key] = STAND_IN.format(f"{i}.{key}")
    marked = _rendered(template, stood, where)
    placed = sorted((marked.find(STAND_IN.format(f"{i}.{key}")), i, key, text) for i, key, text in fields)
    for at, i, key, _ in placed:
        if at < 0:
            raise _unrenderable(
                where, f"{template.name} leaves out messages[{i}]'s {key}: {excerpt(messages[i])}"
            )
    for strip in (False, True):
        pieces = _split(
            marked, [(STAND_IN.format(f"{i}.{key}"), _said(text, strip)) for _, i, key, text in placed]
        )
        if not isinstance(pieces, int) and "".join(text for text, _ in pieces) == whole:
            return [piece for piece in pieces if piece[0]]
    if not any(special in text for _, _, text in fields for special in template.specials):
        for strip in (False, True):
            said = [_said(text, strip) for _, _, text in fields]
            found = _split(whole, [(text, text) for text in said if text])
            if not isinstance(found, int):
                return [piece for piece in found if piece[0]]
    raise _unrenderable(where, f"{template.name} writes a message's text otherwise than it is")


def _said(text: str, strip: bool) -> str:
    """A message's text as a template may write it: as it is, or stripped."""
    return text.strip() if strip else text


def _split(rendered: str, marks: list[tuple[str, str]]) -> list[Segment] | int:
    """`rendered` cut at each (mark, content) of `marks` in order, as pieces: the template's text
    before each mark, then the content in its place, and the text after the last; or the index of
    the first mark not found."""
    pieces: list[Segment] = []
    rest = rendered
    for index, (mark, content) in enumerate(marks):
        head, found, rest = rest.partition(mark)
        if not found:
            return index
        pieces += [(head, True), (content, False)]
    return [*pieces, (rest, True)]


def _cut(pieces: list[Segment], start: int, end: int) -> list[Segment]:
    """The pieces of the text's characters start..end."""
    cut, at = [], 0
    for text, by_template in pieces:
        lo, hi = max(start - at, 0), min(end - at, len(text))
        if lo < hi:
            cut.append((text[lo:hi], by_template))
        at += len(text)
    return cut


def model_turns(template: ModelTemplate, messages: list[dict[str, Any]], where: str) -> list[ModelTurn]:
    """Each supervised assistant turn of a conversation as the template writes it, the others
    counted as history (the module docstring)."""
    whole = _rendered(template, messages, where)
    pieces = _pieces(template, messages, whole, where)
    turns: list[ModelTurn] = []
    done = history = 0
    for k, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        prompt = _rendered(template, messages[:k], where, prompt=True)
        through = _rendered(template, messages[: k + 1], where)
        if not (through.startswith(prompt) and whole.startswith(prompt) and len(prompt) >= done):
            raise _unrenderable(
                where, f"{template.name} writes the turns before messages[{k}] otherwise once it follows"
            )
        if len(through) == len(prompt):
            raise _unrenderable(where, f"{template.name} writes nothing of messages[{k}]: {excerpt(message)}")
        if not whole.startswith(through):  # written otherwise once a later turn follows: context
            history += 1
            continue
        prompted = _cut(pieces, done, len(prompt))
        turns.append(ModelTurn(prompted, _cut(pieces, len(prompt), len(through)), history))
        done, history = len(through), 0
    return turns


def model_prompt(template: ModelTemplate, messages: list[dict[str, Any]], where: str) -> str:
    """A pair's prompt messages as the template writes them with its generation prompt."""
    return _rendered(template, messages, where, prompt=True)


def model_answer(
    template: ModelTemplate, messages: list[dict[str, Any]], answer: dict[str, Any], where: str
) -> str:
    """A pair's completion as the template writes `answer` after the prompt `messages`: the text from
    its generation prompt to the end of sequence the template ends the turn with (left out: the
    stack writes it, as every pair's last scored token; what follows it is never generated), or to
    the turn's end where it writes none. It is what the model generates when asked the prompt:
    Qwen3's template opens a non-thinking answer with an empty `<think>\\n\\n</think>\\n\\n`, which
    a preference learnt on the bare message would score the model without. A template that writes
    the prompt otherwise once the answer follows, or the answer's content nowhere before that end,
    leaves the pair out as unrenderable."""
    prompt = model_prompt(template, messages, where)
    conversation = [*messages, answer]
    whole = _rendered(template, conversation, where)
    if not whole.startswith(prompt):
        raise _unrenderable(where, f"{template.name} writes the prompt otherwise once its answer follows")
    if len(whole) == len(prompt):
        raise _unrenderable(where, f"{template.name} writes nothing of the answer: {excerpt(answer)}")
    eos = template.special_tokens.get("eos_token") or None
    written, said = "", False
    for text, by_template in _cut(_pieces(template, conversation, whole, where), len(prompt), len(whole)):
        if by_template and eos is not None and eos in text:
            written += text[: text.index(eos)]
            break
        written, said = written + text, said or not by_template
    if answer.get("content") and not said:
        raise _unrenderable(where, f"{template.name} ends the turn before the answer: {excerpt(answer)}")
    return written


def render_model(turns: list[ModelTurn], tokenizer: Tokenizer) -> Rendered:
    """Token ids and supervision mask of an example's turns (the module docstring)."""
    ids: list[int] = []
    mask: list[int] = []
    for turn in turns:
        prompt, completion = encode_turn(tokenizer, turn.prompt), encode_turn(tokenizer, turn.completion)
        ids += prompt + completion
        mask += [0] * len(prompt) + [1] * len(completion)
    if ends_with_eos(turns, tokenizer):
        ids.append(tokenizer.eot_id)
        mask.append(1)
    return Rendered(
        ids=np.asarray(ids, dtype=np.int64),
        mask=np.asarray(mask, dtype=np.uint8),
        assistant_turns=len(turns),
        markers_missing=0,
        history_turns=sum(turn.history for turn in turns),
    )


def ends_with_eos(turns: list[ModelTurn], tokenizer: Tokenizer) -> bool:
    """Whether the stack writes the end of sequence after the last turn: unless its completion holds it."""
    return tokenizer.eot_id not in encode_turn(tokenizer, turns[-1].completion)


def model_texts(turns: list[ModelTurn], tokenizer: Tokenizer) -> list[TurnText]:
    """Each turn as text, from the template's pieces alone (its special tokens as they decode): what
    GATE-SFT-001 reads each packed turn back against; only the last is followed by an EOS the stack
    wrote, and only when `ends_with_eos`."""
    last = len(turns) - 1
    eos = ends_with_eos(turns, tokenizer)
    return [
        (_written(turn.prompt, tokenizer), _written(turn.completion, tokenizer), eos and i == last)
        for i, turn in enumerate(turns)
    ]


def model_example_text(turns: list[ModelTurn], tokenizer: Tokenizer) -> ExampleText:
    """An example as text: every piece the template wrote through the last turn, and each message's
    content where it wrote one, in order. What GATE-SFT-001 reads every id of the packed example
    back against."""
    pieces = [piece for turn in turns for piece in (*turn.prompt, *turn.completion)]
    whole = "".join(_written([piece], tokenizer) for piece in pieces)
    return whole, tuple(text for text, by_template in pieces if not by_template and text)


def _written(pieces: list[Segment], tokenizer: Tokenizer) -> str:
    """Pieces as their ids decode: the template's special tokens as their decoding, contents as they are."""
    return "".join(template_text(tokenizer, text) if by_template else text for text, by_template in pieces)
