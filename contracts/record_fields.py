"""The text fields of a fine-tuning record that its rendered example must keep: the statute
GATE-DATA-014's check `fields` holds each example `stack prepare --format chat|prompt-completion`
renders to, apart from the shape reader that made its turns (stack.data.chat_shapes).

Each shape declares its text fields:

- chat, OpenAI: every message's `content` (a string, or each text part's `text`), and its
  reasoning where a message states it apart from the answer (REASONING_FIELDS: `reasoning_content`
  as Qwen3's and DeepSeek-R1's templates read it, `thinking` as gpt-oss's does);
- chat, ShareGPT: every conversation turn's `value`, and LLaMA-Factory's `system` stated apart;
- chat, Alpaca: `instruction`, `input` and `output`, and LLaMA-Factory's `system` and each text of
  its `history` ([instruction, response] pairs of earlier rounds);
- prompt-completion: `prompt` and `completion` as text, or each message's content in TRL's
  conversational form.

Every such field that says something (is not blank) appears, stripped of the whitespace around it
(a template may trim a turn), in the example's text as rendered: what the loss trains on loses no
field of its record (an Alpaca record's `input` left out of the user turn makes an example that
asks for a sum without the numbers).
"""

from __future__ import annotations

from typing import Any

CHAT, PROMPT_COMPLETION = "chat", "prompt-completion"
# The keys under which a message states its reasoning apart from its content (the answer).
REASONING_FIELDS = ("reasoning_content", "thinking")
# The shapes whose fields are declared here: the fine-tuning formats whose example is one text.
FORMATS = (CHAT, PROMPT_COMPLETION)


def _contents(messages: Any, name: str) -> list[tuple[str, Any]]:
    """The reasoning and content of each message of a list (each text part of a list of parts), by
    its field's name."""
    if not isinstance(messages, list):
        return []
    fields: list[tuple[str, Any]] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(message, dict):
            fields += [(f"{name}[{i}].{key}", message[key]) for key in REASONING_FIELDS if key in message]
        if isinstance(content, list):
            for j, part in enumerate(content):
                text = part.get("text") if isinstance(part, dict) else None
                fields.append((f"{name}[{i}].content[{j}].text", text))
        else:
            fields.append((f"{name}[{i}].content", content))
    return fields


def _declared(record: Any, fmt: str) -> list[tuple[str, Any]]:
    """Every text field `fmt`'s shape of `record` declares, by name, with its value as the record holds it."""
    if not isinstance(record, dict):
        return []
    if fmt == PROMPT_COMPLETION:
        prompt, completion = record.get("prompt"), record.get("completion")
        if isinstance(prompt, list):
            return _contents(prompt, "prompt") + _contents(completion, "completion")
        return [("prompt", prompt), ("completion", completion)]
    if "messages" in record:
        return _contents(record["messages"], "messages")
    if "conversations" in record:
        turns = record["conversations"] if isinstance(record["conversations"], list) else []
        return [("system", record.get("system"))] + [
            (f"conversations[{i}].value", t.get("value") if isinstance(t, dict) else None)
            for i, t in enumerate(turns)
        ]
    history = record.get("history")
    earlier = [
        (f"history[{i}][{j}]", text)
        for i, pair in enumerate(history if isinstance(history, list) else [])
        for j, text in enumerate(pair if isinstance(pair, list) else [])
    ]
    return [(key, record.get(key)) for key in ("system", "instruction", "input", "output")] + earlier


def record_texts(record: Any, fmt: str) -> list[tuple[str, str]]:
    """The non-blank text fields `fmt`'s shape of `record` declares, by name, each stripped of the
    whitespace around it: what its rendered example must hold."""
    return [
        (name, value.strip())
        for name, value in _declared(record, fmt)
        if isinstance(value, str) and value.strip()
    ]


def fields_missing(texts: list[tuple[str, str]], rendered: str) -> list[str]:
    """The names of the record's fields (`record_texts`) whose text the rendered example does not hold."""
    return [name for name, text in texts if text not in rendered]
