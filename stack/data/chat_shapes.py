"""The shapes people export fine-tuning records in, read as the turns each one stands for.

`stack prepare --format chat|prompt-completion|prefs` reads one record a line (or an element of
a JSON array). Datasets come in a few well-known shapes; each is read as what it means, never
guessed at, and a record of none of them is refused in one line that names its fields and the
shapes taken:

- chat: OpenAI `{"messages": [{"role", "content"}]}`, a content a string or a list of text
  parts (joined); ShareGPT `{"conversations": [{"from", "value"}]}` (human or user, gpt or
  assistant, system; LLaMA-Factory's `system` stated apart, as the first turn); Alpaca
  `{"instruction", "input", "output"}` (the instruction, and the input after a blank line, as the
  user's turn; the output as the assistant's; LLaMA-Factory's `system` and `history` of earlier
  [instruction, response] pairs as turns before them). A record's OpenAI `tools` (LLaMA-Factory's
  as JSON text) are read by `record_tools`.
- prompt-completion: `{"prompt": text, "completion": text}`, or TRL's conversational form, a
  list of messages and a list of one assistant message.
- prefs: `{"prompt", "chosen", "rejected"}`, the prompt text or messages and each completion
  text or one assistant message; chosen and rejected as whole conversations that share every
  message but the last (UltraFeedback binarized, TRL's implicit prompt: the shared messages are
  the prompt); OpenAI's preference line `{"input": {"messages"}, "preferred_output",
  "non_preferred_output"}`; LLaMA-Factory's ShareGPT and Alpaca pairs (the prompt as that chat
  shape, `chosen` and `rejected` one answer each); Anthropic HH's transcripts `{"chosen":
  "\n\nHuman: ... \n\nAssistant: ...", "rejected": ...}` (the shared text through the last
  `Assistant:` is the prompt).

A record of the right shape with nothing to learn from (a chat that ends before the assistant
answers, a pair whose two sides differ before the answers or prefer a text to itself) is
`LeftOut`: prepare leaves it out and counts it, since one such record in a public dataset must not
refuse the file; a record of no shape refuses the file, since then the file is not what it was said
to be. So is a record whose messages the chat template cannot write (`UNRENDERABLE`): an OpenAI
tool call (an assistant message with `tool_calls`, a `tool` message), a content that is no text, or
reasoning stated apart from the answer (`reasoning_content`, `thinking`:
contracts.record_fields.REASONING_FIELDS), for a template without them. `chat_messages` reads a
record's messages as they are, for a model's own template to render what it can
(stack.data.chat_render); `turns_of` makes them the (role, text) turns of the stack's templates,
which have a system, a user and an assistant turn only.
Messages quote a record by `excerpt`, one short line whatever the record holds.

A message's or a ShareGPT turn's `weight` (a way to leave a turn out of training) is refused unless
it is 1 or null (none stated, as a Parquet row holds a field its message leaves out): supervising a
turn its data says not to train on would be silent, and leaving it out is a mask the stack does not
make.
"""

from __future__ import annotations

import json
from typing import Any

from contracts.errors import BadInput
from contracts.record_fields import REASONING_FIELDS

ROLES = ("system", "user", "assistant")
# ShareGPT's speakers, by the role each stands for.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
}
# ShareGPT's tool-use speakers (LLaMA-Factory's and Glaive's exports): a call and its result, which
# no ShareGPT record says how to write as a template's tool turns.
SHAREGPT_TOOL_SPEAKERS = ("function_call", "observation", "tool", "function")
# Anthropic HH's marker of the assistant's turn in a transcript held as one string.
HH_ASSISTANT = "\n\nAssistant:"
# The rule of a record the chat template cannot write, and what to do about one.
UNRENDERABLE = "unrenderable"
UNRENDERABLE_FIX = (
    "render with a chat template that writes them (the model's own: --tokenizer of a model that ships "
    "one, without --template), or leave such records out of the file"
)
# The longest excerpt of a record a message quotes, and of each string in it.
EXCERPT_CHARS = 160
EXCERPT_TEXT = 24


class LeftOut(BadInput):
    """A record of a right shape that holds nothing to learn from. `stack prepare` counts it under
    `rule` and goes on (stack.data.sft_prepare); any other reader refuses it as bad input."""

    def __init__(self, rule: str, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.rule = rule
        self.reason = reason


CHAT_SHAPES = (
    '{"messages": [{"role", "content"}]} (OpenAI), {"conversations": [{"from", "value"}]} (ShareGPT) '
    'or {"instruction", "input", "output"} (Alpaca)'
)


def _fields(record: dict[str, Any]) -> str:
    return ", ".join(sorted(record)) or "none"


def _brief(value: Any) -> str:
    """One value of a record, short: a string cut with an ellipsis, a list or an object by its size."""
    if isinstance(value, str):
        return json.dumps(
            value if len(value) <= EXCERPT_TEXT else value[:EXCERPT_TEXT] + "…", ensure_ascii=False
        )
    if isinstance(value, list):
        return f"[{len(value)} item{'s' * (len(value) != 1)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(value))[:EXCERPT_TEXT] + "}"
    return json.dumps(value, default=str)  # a Parquet row's timestamp or bytes, as text


def excerpt(value: Any) -> str:
    """A record, or a message of one, as one short clean line for a message: an object's keys with
    each value brief, never a value cut in the middle."""
    if not isinstance(value, dict):
        return _brief(value)
    parts, used = [], 2
    for key, item in value.items():
        part = f"{json.dumps(str(key), ensure_ascii=False)}: {_brief(item)}"
        if used + len(part) > EXCERPT_CHARS:
            parts.append("…")
            break
        parts.append(part)
        used += len(part) + 2
    return "{" + ", ".join(parts) + "}"


def _require(record: Any, fields: set[str], where: str, needs: str) -> None:
    """Refuse a record that is no object holding `fields`, saying what it `needs` and naming the
    fields it has, so a user sees at once which shape their file is in."""
    if not isinstance(record, dict) or not fields <= record.keys():
        has = _fields(record) if isinstance(record, dict) else "none (not an object)"
        raise BadInput(f"{where}: {needs}; this one has fields: {has}")


def _content(value: Any, where: str) -> str | None:
    """A message's text: a string, or a list of text parts joined (OpenAI's content parts); None
    for anything else (an image part, a number)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        texts = [p.get("text") for p in value]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return None


def weighed(message: dict[str, Any], where: str) -> None:
    """Refuse a turn whose `weight` (OpenAI's and ShareGPT exports' way to leave it out of training)
    is other than 1 or null (none stated, as a Parquet row holds a field its message leaves out)."""
    weight = message.get("weight")
    if weight not in (None, 1):
        raise BadInput(
            f"{where} has weight {weight!r}: a turn left out of training is not something prepare "
            "can mask; drop the turn (or its example) from the file, or give it weight 1"
        )


def openai_message(message: Any, where: str) -> dict[str, Any]:
    """One OpenAI-shaped message as it is (a content of text parts joined into its text), refused in
    one line when it is no message at all: not an object with a string role."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise BadInput(
            f'{where} is not a message: {excerpt(message)}; a message is {{"role": "user", "content": '
            '"..."}} (roles system, user, assistant, or a tool\'s)'
        )
    weighed(message, where)
    for key in REASONING_FIELDS:
        if message.get(key) is not None and not isinstance(message[key], str):
            raise BadInput(
                f"{where} has a {key} that is no text: {excerpt(message)}; give the reasoning as a string"
            )
    text = _content(message.get("content"), where)
    return message if text is None else {**message, "content": text}


def reasoning_of(message: dict[str, Any]) -> str:
    """The reasoning a message states apart from its content (REASONING_FIELDS), joined; "" for none."""
    return "".join(message[key] for key in REASONING_FIELDS if isinstance(message.get(key), str))


def states_reasoning(message: dict[str, Any]) -> bool:
    """Whether a message states reasoning apart from its content: a REASONING_FIELDS key holding
    anything but null or blank text. The stack's templates write a message's content alone, so such
    a message is one they cannot write without losing it."""
    return any(
        message.get(key) is not None and not (isinstance(message[key], str) and not message[key].strip())
        for key in REASONING_FIELDS
    )


def turn_of(message: dict[str, Any], roles: tuple[str, ...], where: str) -> tuple[str, str]:
    """(role, text) of a message a template of `roles` writes as a turn; one it cannot write (a
    tool call, a tool's answer, another role, a content that is no text, reasoning stated apart from
    the content) is left out as unrenderable."""
    role, content = message["role"], message.get("content")
    reasoning = states_reasoning(message)
    if message.get("tool_calls") or role not in roles or not isinstance(content, str) or reasoning:
        what = (
            "a tool call"
            if message.get("tool_calls")
            else f"role {role!r}"
            if role not in roles
            else "a content that is no text"
            if not isinstance(content, str)
            else "reasoning stated apart from the answer (`reasoning_content`)"
        )
        raise LeftOut(
            UNRENDERABLE,
            where,
            f"{what}, which the chat template cannot write ({'/'.join(roles)} turns of text): "
            f"{excerpt(message)}; {UNRENDERABLE_FIX}",
        )
    return role, content


def _sharegpt_turn(message: Any, where: str) -> tuple[str, str]:
    speaker = message.get("from") if isinstance(message, dict) else None
    value = message.get("value") if isinstance(message, dict) else None
    if speaker in SHAREGPT_TOOL_SPEAKERS:  # one tool-use record must not refuse a public dataset
        raise LeftOut(
            UNRENDERABLE,
            where,
            f"a ShareGPT {speaker!r} turn (tool use), which no chat template is told how to write: "
            f"{excerpt(message)}; give tool use as OpenAI messages (an assistant's tool_calls, a tool "
            "message) for a template that writes them, or leave such records out of the file",
        )
    if isinstance(message, dict):
        weighed(message, where)
    if speaker not in SHAREGPT_ROLES or not isinstance(value, str):
        raise BadInput(
            f"{where} must be {{from: {'|'.join(SHAREGPT_ROLES)}, value: text}}, got {excerpt(message)}"
        )
    return SHAREGPT_ROLES[speaker], value


def _listed(record: dict[str, Any], key: str, where: str) -> list[Any]:
    value = record[key]
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: '{key}' must be a non-empty list of messages")
    return value


def chat_messages(record: Any, where: str) -> list[dict[str, Any]]:
    """The messages of one `--format chat` record, in any shape of the module's table, as OpenAI
    messages: OpenAI's as they are (tool calls included), ShareGPT's and Alpaca's turns made so."""
    if not isinstance(record, dict):
        raise BadInput(f"{where}: a record must be a JSON object")
    if "messages" in record:
        listed = _listed(record, "messages", where)
        messages = [openai_message(m, f"{where}: messages[{i}]") for i, m in enumerate(listed)]
    elif "conversations" in record:
        listed = _listed(record, "conversations", where)
        turns = [_sharegpt_turn(m, f"{where}: conversations[{i}]") for i, m in enumerate(listed)]
        system = record.get("system")  # LLaMA-Factory's ShareGPT states the system prompt apart
        if system is not None and not isinstance(system, str):
            raise BadInput(f"{where}: a ShareGPT record's system must be text")
        turns = ([("system", system)] if system and system.strip() else []) + turns
        messages = [{"role": role, "content": content} for role, content in turns]
    elif {"instruction", "output"} <= record.keys():
        messages = [{"role": role, "content": content} for role, content in _alpaca_turns(record, where)]
    else:
        raise BadInput(f"{where}: a chat record is {CHAT_SHAPES}; this one has fields: {_fields(record)}")
    if messages[-1]["role"] != "assistant":
        last = f"the last message is the {messages[-1]['role']}'s; an example ends with the assistant's"
        raise LeftOut("unanswered", where, last)
    return messages


def turns_of(messages: list[dict[str, Any]], roles: tuple[str, ...], where: str) -> list[tuple[str, str]]:
    """The (role, text) turns of a chat's messages for a template of `roles` (`turn_of`)."""
    return [turn_of(m, roles, f"{where}: messages[{i}]") for i, m in enumerate(messages)]


def chat_turns(record: Any, where: str) -> list[tuple[str, str]]:
    """The (role, content) turns of one `--format chat` record, in any shape of the module's table."""
    return turns_of(chat_messages(record, where), ROLES, where)


def message_text(message: dict[str, Any]) -> str:
    """All a message says, as one text: its reasoning (`reasoning_of`), its content, and its tool
    calls as JSON. What the filters judge and an example's identity is hashed from, whatever the
    template writes of it."""
    content = message.get("content")
    text = (
        content if isinstance(content, str) else "" if content is None else json.dumps(content, default=str)
    )
    text = reasoning_of(message) + text
    calls = message.get("tool_calls")
    return text if not calls else text + json.dumps(calls, ensure_ascii=False, sort_keys=True, default=str)


def _alpaca_turns(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """An Alpaca record's turns: its `system` (LLaMA-Factory's), the exchanges of its `history` (a
    list of [instruction, response] pairs, LLaMA-Factory's earlier rounds), then the instruction with
    its input as the user's turn and the output as the assistant's."""
    instruction, given, output = record["instruction"], record.get("input") or "", record["output"]
    system, history = record.get("system") or "", record.get("history") or []
    if not all(isinstance(v, str) for v in (instruction, given, output, system)):
        raise BadInput(f"{where}: an Alpaca record's instruction, input, output and system must be text")
    exchanges = history if isinstance(history, list) else None
    if exchanges is None or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
        for pair in exchanges
    ):
        raise BadInput(
            f"{where}: an Alpaca record's history must be a list of [instruction, response] pairs of text"
        )
    turns = [("system", system)] if system.strip() else []
    for asked, answered in exchanges:
        turns += [("user", asked), ("assistant", answered)]
    return [*turns, ("user", f"{instruction}\n\n{given}" if given else instruction), ("assistant", output)]


def prompt_completion_messages(record: Any, where: str) -> list[dict[str, Any]]:
    """The messages of one `--format prompt-completion` record as OpenAI messages: text as the user's
    and the assistant's, or TRL's conversational form as its messages are (a model's own template
    writes what they hold, tool calls and reasoning included)."""
    _require(
        record,
        {"prompt", "completion"},
        where,
        "a prompt-completion record needs fields prompt and completion (text, or lists of messages)",
    )
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    if isinstance(prompt, list) and isinstance(completion, list) and len(completion) == 1:
        asked = [openai_message(m, f"{where}: prompt[{i}]") for i, m in enumerate(prompt)]
        answer = openai_message(completion[0], f"{where}: completion[0]")
        if answer["role"] == "assistant" and asked and asked[-1]["role"] != "assistant":
            return [*asked, answer]
    raise BadInput(
        f"{where}: prompt and completion must both be text, or a list of messages and a list of one "
        "assistant message"
    )


def prompt_completion_turns(record: Any, where: str) -> list[tuple[str, str]]:
    """The turns of one `--format prompt-completion` record for the stack's templates (`turn_of`)."""
    messages = prompt_completion_messages(record, where)
    if isinstance(record["prompt"], str):
        return [(m["role"], m["content"]) for m in messages]
    prompt = [turn_of(m, ROLES, f"{where}: prompt[{i}]") for i, m in enumerate(messages[:-1])]
    return [*prompt, turn_of(messages[-1], ROLES, f"{where}: completion[0]")]


def explicit_pair(record: Any, where: str) -> dict[str, Any]:
    """A preference record with its prompt stated: the record itself when it states one, else its
    prompt taken out of chosen and rejected where they share it (module table); a record of no
    shape is refused naming its fields."""
    if isinstance(record, dict) and {"preferred_output", "non_preferred_output"} <= record.keys():
        return _openai_pair(record, where)
    _require(
        record,
        {"chosen", "rejected"},
        where,
        "a preference record needs 'chosen' and 'rejected' (and 'prompt', unless both hold the whole "
        "conversation)",
    )
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) > 1 and len(rejected) > 1:
        return _shared_messages(record, chosen, rejected, where)
    if "prompt" in record:
        return record
    if "conversations" in record or "instruction" in record:
        return _llama_factory_pair(record, where)
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _hh_pair(chosen, rejected, where)
    raise BadInput(
        f"{where}: a preference record without 'prompt' must give chosen and rejected as whole conversations"
    )


def _llama_factory_pair(record: dict[str, Any], where: str) -> dict[str, Any]:
    """LLaMA-Factory's preference records: ShareGPT's, the prompt as `conversations` (and `system`)
    and each answer one `{"from": "gpt", "value"}` turn; Alpaca's, the prompt as `instruction` (and
    `input`, `system`, `history`) and each answer text. The prompt is read as the chat shape of the
    same record is (`chat_messages`, with an empty answer it drops), the answers as the assistant's
    messages."""
    if "conversations" in record:
        answers = [_sharegpt_turn(record[side], f"{where}: {side}") for side in ("chosen", "rejected")]
        if any(role != "assistant" for role, _ in answers):
            raise BadInput(
                f"{where}: a ShareGPT pair's chosen and rejected must each be the assistant's turn"
            )
        turns = [*_listed(record, "conversations", where), {"from": "gpt", "value": ""}]
        asked: dict[str, Any] = {"conversations": turns, "system": record.get("system")}
        texts = [text for _, text in answers]
    else:
        texts = [record["chosen"], record["rejected"]]
        if not all(isinstance(text, str) for text in texts):
            raise BadInput(f"{where}: an Alpaca pair's chosen and rejected must be text")
        asked = {**record, "output": ""}
    chosen, rejected = ({"role": "assistant", "content": text} for text in texts)
    return {"prompt": chat_messages(asked, where)[:-1], "chosen": chosen, "rejected": rejected}


def _openai_pair(record: dict[str, Any], where: str) -> dict[str, Any]:
    """OpenAI's preference fine-tuning line (Together's and Fireworks' too): `input.messages` the
    prompt, `preferred_output` and `non_preferred_output` each a list of one assistant message, and
    the `input`'s tools the pair's (`record_tools`)."""
    given = record.get("input")
    messages = given.get("messages") if isinstance(given, dict) else None
    if not isinstance(messages, list) or not messages:
        raise BadInput(
            f"{where}: an OpenAI preference line's 'input' must hold a non-empty list of 'messages'"
        )
    pair = {
        "prompt": messages,
        "chosen": record["preferred_output"],
        "rejected": record["non_preferred_output"],
    }
    return pair | ({"tools": given["tools"]} if "tools" in given else {})


def record_tools(record: Any, where: str) -> list[dict[str, Any]] | None:
    """The tool definitions a conversation offers (OpenAI's `tools`, a list of objects), or None for
    none: what a model's own template writes where the model reads them (`apply_chat_template`'s
    `tools`). The stack's templates have no place for them, so a record offering tools is
    unrenderable there (`refuse_tools`), never trained as if none were offered."""
    tools = record.get("tools") if isinstance(record, dict) else None
    if isinstance(tools, str) and tools.strip():  # LLaMA-Factory's ShareGPT: the list as JSON text
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise BadInput(f"{where}: 'tools' is text that is no JSON list of tool definitions") from None
    if tools is None or tools == [] or tools == "":
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise BadInput(f"{where}: 'tools' must be a list of tool definitions (objects), as OpenAI's are")
    return tools


def refuse_reasoning(message: dict[str, Any], what: str, where: str) -> None:
    """Leave a record out as unrenderable where `what`, one of its messages, states reasoning apart
    from its content (`states_reasoning`), for a template that writes the content alone."""
    if states_reasoning(message):
        reason = f"{what} states reasoning apart from its content (`reasoning_content`), which the template"
        raise LeftOut(UNRENDERABLE, where, f"{reason} cannot write; {UNRENDERABLE_FIX}")


def refuse_tools(tools: list[dict[str, Any]] | None, where: str) -> None:
    """Leave a record out as unrenderable where it offers tools, for a template that cannot write them."""
    if tools:
        reason = f"it offers tools ({len(tools)}), which the chat template has no place for"
        raise LeftOut(UNRENDERABLE, where, f"{reason}; {UNRENDERABLE_FIX}")


def _shared_messages(
    record: dict[str, Any], chosen: list[Any], rejected: list[Any], where: str
) -> dict[str, Any]:
    """UltraFeedback's and TRL's implicit prompt: the messages before each last one are the prompt,
    the same on both sides (and the record's prompt, where it states one as text)."""
    before, after = chosen[:-1], rejected[:-1]
    if before != after:
        reason = "chosen and rejected must share every message but their last, the answers"
        raise LeftOut("diverged", where, reason)
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        users = [m.get("content") for m in before if isinstance(m, dict) and m.get("role") == "user"]
        if users[-1:] != [prompt]:
            raise BadInput(f"{where}: 'prompt' is not the user's message the conversations hold")
    tools = {"tools": record["tools"]} if "tools" in record else {}
    return {"prompt": before, "chosen": chosen[-1], "rejected": rejected[-1], **tools}


def _hh_pair(chosen: str, rejected: str, where: str) -> dict[str, Any]:
    """Anthropic HH's transcripts: the shared text through the last assistant marker is the prompt."""
    cut_chosen, cut_rejected = chosen.rfind(HH_ASSISTANT), rejected.rfind(HH_ASSISTANT)
    if cut_chosen < 0 or cut_rejected < 0:
        raise BadInput(
            f"{where}: without 'prompt', chosen and rejected must be whole conversations: message lists, "
            f"or transcripts whose answers follow {HH_ASSISTANT.strip()!r}"
        )
    end_chosen, end_rejected = cut_chosen + len(HH_ASSISTANT), cut_rejected + len(HH_ASSISTANT)
    if chosen[:end_chosen] != rejected[:end_rejected]:
        reason = "chosen and rejected must share their transcript up to the last answer"
        raise LeftOut("diverged", where, reason)
    return {"prompt": chosen[:end_chosen], "chosen": chosen[end_chosen:], "rejected": rejected[end_rejected:]}
