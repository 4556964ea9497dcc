"""Preference pairs as labelled rows (`stack prepare --format prefs`): the layout DPO reads.

A pair becomes ONE example of 2·L tokens, L the row length (`--pack-len`): its chosen
sequence (prompt, chosen completion, end-of-text) right-padded with end-of-text to L, then its
rejected sequence padded the same way. The mask (the label file's supervised bit) marks the
completion tokens, end-of-text included, and nothing else: a row's prompt ends at its first
supervised token and the row itself at its last, which is how the DPO objective rebuilds each
row's bounds (stack.train.dpo_objective) and GATE-DPO-005 checks the scored mask against them.
GATE-SFT-001's check boundary reads each pair back at its mask (contracts.pair_rows), at prepare
and in every batch the DPO loss reads: a mask off the prompt/completion boundary gives back
another text than any pair the data holds.
Packed with windows of 2·L, every window of the DATA_DIR is exactly one pair, so the training
reader's shuffled windows are shuffled pairs, and its resume is the reader's own.

A line is `{"prompt": str, "chosen": str, "rejected": str}`, or the chat form, where `prompt` is a
list of `{"role", "content"}` messages and `chosen`/`rejected` each one assistant message (a list of
one, or the message itself). Chat messages are rendered with the SFT chat template
(stack/data/templates/, `--template`, or the model's own, stack.data.chat_render), the assistant's
prefix ending the prompt. The prompt is chat-format text, so the tokenizer's special tokens written
in it become their ids, as a Hugging Face tokenizer reads a prompt rendered by its chat template
(stack.data.sft_template.encode_turn). Under the stack's templates the completion is only what
the assistant said, as text (a special token's string in one stays text). Under a model's own
template it is the answer as that template writes it after its generation prompt, up to the end
of sequence it ends the turn with (stack.data.chat_render.model_answer: Qwen3's empty reasoning
block included), chat-format text as the prompt is (`Pair.templated`): what the model generates
when asked, so what DPO scores. A pair whose longer row does not fit L is left out (and counted,
stack.data.sft_prepare), never cut: a cut completion changes what is preferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.errors import BadInput
from contracts.pair_rows import PAIR_ROLES
from stack.data.chat_render import ModelTemplate, model_answer, model_prompt
from stack.data.chat_shapes import (
    UNRENDERABLE,
    UNRENDERABLE_FIX,
    LeftOut,
    explicit_pair,
    record_tools,
    refuse_reasoning,
    refuse_tools,
)
from stack.data.sft_template import ChatTemplate, ExampleText, Rendered, encode_turn, template_text
from stack.data.tokenizer import Tokenizer

PREFS_FORMAT = "prefs"
ASSISTANT = "assistant"


@dataclass(frozen=True)
class Pair:
    """One preference: a prompt and two completions, the first preferred; `templated` when the
    completions are a model's own template's text (chat-format, as the prompt), not only the
    assistant's words."""

    prompt: str
    chosen: str
    rejected: str
    templated: bool = False

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of the prompt, the chosen and the rejected completion: what the pair is
        filtered by and its identity hashed from."""
        return list(zip(PAIR_ROLES, (self.prompt, self.chosen, self.rejected), strict=True))


def render_prompt(messages: list[dict[str, Any]], template: ChatTemplate | ModelTemplate, where: str) -> str:
    """Messages as the template writes them, then the assistant's prefix (a model's own template's
    generation prompt, stack.data.chat_render): what the completion follows. A message the
    template cannot write leaves the pair out as unrenderable."""
    if isinstance(template, ModelTemplate):
        return model_prompt(template, messages, where)
    roles = template.spec.roles
    for i, message in enumerate(messages):
        if message["role"] not in roles or message["role"] == ASSISTANT:
            turns = ", ".join(r for r in roles if r != ASSISTANT)
            reason = f"prompt[{i}] has role {message['role']!r}; the template writes {turns} turns before it"
            raise LeftOut(UNRENDERABLE, where, f"{reason}; {UNRENDERABLE_FIX}")
        refuse_reasoning(message, f"prompt[{i}]", where)
    text = "".join(roles[m["role"]].prefix + m["content"] + roles[m["role"]].suffix for m in messages)
    return text + roles[ASSISTANT].prefix


def _message(value: Any, where: str) -> dict[str, Any]:
    """One message, checked: a dict with string role and content."""
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    if not isinstance(value.get("content"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    return value


def _completion(value: Any, where: str) -> dict[str, Any]:
    """A completion as the assistant's message: given as a string, a message, or a list of exactly one."""
    if isinstance(value, str):
        return {"role": ASSISTANT, "content": value}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    message = _message(value, where)
    if message["role"] != ASSISTANT:
        raise BadInput(f"{where}: a completion must be the assistant's message, not {message['role']!r}")
    return message


def parse_pair(record: Any, where: str, template: ChatTemplate | ModelTemplate) -> Pair:
    """A pair from one decoded JSONL line, in plain or chat form, its prompt stated or shared by the
    two conversations (stack.data.chat_shapes); a chat prompt's completions as a model's own
    template writes them (the module docstring)."""
    record = explicit_pair(record, where)
    prompt, tools = record["prompt"], record_tools(record, where)
    messages = [_message(m, where) for m in prompt] if isinstance(prompt, list) else None
    templated = messages is not None and isinstance(template, ModelTemplate)
    if not templated:
        refuse_tools(tools, where)
    if messages is not None and not templated:
        prompt = render_prompt(messages, template, where)
    if not templated and (not isinstance(prompt, str) or not prompt):
        raise BadInput(f"{where}: 'prompt' must be non-empty text or a list of chat messages")
    chosen, rejected = _completion(record["chosen"], where), _completion(record["rejected"], where)
    if chosen["content"] == rejected["content"]:
        raise LeftOut("tie", where, "'chosen' and 'rejected' are the same text; there is nothing to prefer")
    if templated:
        offered = template.offering(tools)
        answers = (model_answer(offered, messages, answer, where) for answer in (chosen, rejected))
        return Pair(model_prompt(offered, messages, where), *answers, templated=True)
    for side, answer in (("chosen", chosen), ("rejected", rejected)):
        refuse_reasoning(answer, side, where)
    return Pair(prompt, chosen["content"], rejected["content"])


def _row(
    prompt: list[int], completion: list[int], width: int, eot: int
) -> tuple[list[int], list[int], list[bool]]:
    """One sequence's ids, mask and padding positions, right-padded with end-of-text to `width`."""
    ids = prompt + completion
    pad = width - len(ids)
    return (
        ids + [eot] * pad,
        [0] * len(prompt) + [1] * len(completion) + [0] * pad,
        [False] * len(ids) + [True] * pad,
    )


@dataclass(frozen=True)
class PairIds:
    """A pair's token ids: the rendered prompt, and each completion with its end-of-text."""

    prompt: list[int]
    completions: tuple[list[int], list[int]]

    @property
    def length(self) -> int:
        """The tokens of its longer sequence: what a row (--pack-len) must hold."""
        return len(self.prompt) + max(len(c) for c in self.completions)


def pair_ids(tokenizer: Tokenizer, turns: list[tuple[str, str]], templated: bool = False) -> PairIds:
    """The ids of one pair's prompt (chat-format text: special tokens become their ids) and of its
    completions, each with the end-of-text: text, or chat-format text when `templated`."""
    (_, prompt), (_, chosen), (_, rejected) = turns

    def encoded(text: str) -> list[int]:
        return encode_turn(tokenizer, [(text, True)]) if templated else tokenizer.encode(text)

    eot = tokenizer.eot_id
    completions = ([*encoded(chosen), eot], [*encoded(rejected), eot])
    return PairIds(encode_turn(tokenizer, [(prompt, True)]), completions)


def pair_text(tokenizer: Tokenizer, turns: list[tuple[str, str]], templated: bool = False) -> ExampleText:
    """A pair as text, written from its prompt and completions alone: its chosen row, then its
    rejected row, each the prompt then the completion (their end-of-text and padding are no text;
    the special tokens `pair_ids` makes ids as they decode: an instruct model's end of turn that is
    its EOS, Qwen's `<|im_end|>`, to nothing, as an EOS does everywhere). What GATE-SFT-001 reads
    each packed pair back against: rows swapped, a prompt left out of one row, or a completion
    cut, shows there, whatever `render_pair` did."""
    written, chosen, rejected = (
        template_text(tokenizer, text) if templated or role == PAIR_ROLES[0] else text for role, text in turns
    )
    return written + chosen + written + rejected, (written, chosen, written, rejected)


def render_pair(pair: PairIds, width: int, eot: int) -> Rendered:
    """The pair's 2·`width` ids and mask: its chosen row, then its rejected row (module docstring);
    the caller has left out a pair longer than `width` or with an empty prompt."""
    assert pair.prompt and pair.length <= width, "a pair that does not fit its rows is dropped, never cut"
    rows = [_row(pair.prompt, completion, width, eot) for completion in pair.completions]
    ids = np.asarray(rows[0][0] + rows[1][0], dtype=np.int64)
    mask = np.asarray(rows[0][1] + rows[1][1], dtype=np.uint8)
    padding = np.asarray(rows[0][2] + rows[1][2], dtype=bool)
    return Rendered(ids=ids, mask=mask, assistant_turns=2, markers_missing=0, padding=padding)
