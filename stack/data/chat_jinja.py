"""The chat template in the form other tools read it: a Jinja `chat_template`, and the text it renders.

A model tuned on chat turns must be talked to in the format it learned. The stack's template
(stack.data.sft_template) is data: a prefix and suffix per role, the assistant's turn ended by the
tokenizer's end-of-text. `jinja_of` writes the same rule as the Jinja template a Hugging Face
tokenizer renders with `apply_chat_template` (so do TRL, vLLM-style servers and lm-eval's chat
mode): each message's prefix, content and suffix, the assistant's followed by `eos_token`, and
with `add_generation_prompt` the assistant's prefix at the end. Every literal is written as a
Python string literal, which Jinja reads back exactly (newlines, quotes and non-ASCII included),
and the template has no line breaks of its own, so `trim_blocks` and `lstrip_blocks` cannot eat
one. A role the template lacks raises, as the stack refuses it.

`render_text` is the stack's own rendering of a conversation as text: the same pieces
`sft_template.render` tokenizes, with the end-of-text id written as its token. The Jinja
template must render every conversation to exactly this text (tests/data/test_chat_jinja.py checks
both against transformers).

A checkpoint carries its template under the state key `chat_template` ({name, sha256, jinja}):
the template its training data was rendered with, else the one of the model it started from, or
an imported model's own Jinja. `stack export --format hf` writes it into tokenizer_config.json.
A run that would tune a model shipping a template on data rendered with another is refused at
set-up unless the change is accepted on record (`check_template_change`): the data of a model
that ships one is rendered by it (`render_jinja`, stack.data.chat_render).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.checkpoints import CHAT_TEMPLATE_KEY
from contracts.errors import BadInput
from stack.data.sft_template import TEMPLATES_DIR, ChatTemplate, TemplateFile, load_template

STATE_KEY = CHAT_TEMPLATE_KEY  # state.json's key of the checkpoint's chat template (contracts.checkpoints)
ASSISTANT = "assistant"
IMPORTED = "imported"  # the name of an imported model's own template (stack.export.importer)


def _literal(text: str) -> str:
    """`text` as a Jinja string literal (Jinja unescapes Python's escapes, so `repr` round-trips)."""
    return repr(text)


def jinja_of(spec: TemplateFile) -> str:
    """The Jinja chat template that renders conversations as the stack's template `spec` does."""
    branches = []
    for role, turn in spec.roles.items():
        end = "{{ eos_token }}" if role == ASSISTANT else f"{{{{ {_literal(turn.suffix)} }}}}"
        body = f"{{{{ {_literal(turn.prefix)} }}}}{{{{ message['content'] }}}}{end}"
        keyword = "if" if not branches else "elif"
        branches.append(f"{{%- {keyword} message['role'] == {_literal(role)} -%}}{body}")
    refusal = (
        "{%- else -%}{{ raise_exception('the chat template "
        + spec.name.replace("\\", "\\\\").replace("'", "\\'")
        + " has no role ' + message['role']) }}"
    )
    prompt = spec.roles[ASSISTANT].prefix
    return (
        "{%- for message in messages -%}"
        + "".join(branches)
        + refusal
        + "{%- endif -%}{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{{{{ {_literal(prompt)} }}}}{{%- endif -%}}"
    )


def render_text(
    spec: TemplateFile, turns: list[tuple[str, str]], eos_token: str, add_generation_prompt: bool = False
) -> str:
    """The stack's rendering of `turns` ((role, content) pairs) as text, `eos_token` after each
    assistant turn, and the assistant's prefix at the end when a reply is to be generated."""
    pieces = []
    for role, content in turns:
        turn = spec.roles[role]
        pieces += [turn.prefix, content, eos_token if role == ASSISTANT else turn.suffix]
    if add_generation_prompt:
        pieces.append(spec.roles[ASSISTANT].prefix)
    return "".join(pieces)


def render_jinja(
    jinja: str,
    messages: Sequence[Mapping[str, Any]],
    special_tokens: Mapping[str, str],
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """A model's own Jinja chat template rendered as `apply_chat_template` renders it: by
    transformers' own renderer (so every filter and global a template may use is the one it was
    written for), the tokenizer's named special tokens (`bos_token`, `eos_token`, ...) as variables,
    and a message's keys whose value is None left out, as transformers leaves them out. A template
    that cannot render the messages raises what its renderer raises (a TemplateError, a TypeError)."""
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        raise BadInput(
            "rendering a model's own chat template needs transformers: pip install 'gatestack[export]', or "
            "render with the stack's template instead (--template chat)"
        ) from None
    plain = [{key: value for key, value in message.items() if value is not None} for message in messages]
    rendered, _ = render_jinja_template(
        [plain],
        tools=None if tools is None else list(tools),
        chat_template=jinja,
        add_generation_prompt=add_generation_prompt,
        **special_tokens,
    )
    return str(rendered[0])


def data_template(data_dir: Path) -> dict[str, Any] | None:
    """The template record of a DATA_DIR whose examples a chat template rendered, else None."""
    from stack.data.manifest import load_manifest

    entry = load_manifest(data_dir).sft
    if entry is None or entry.chat_template is None:
        return None
    return {"name": entry.template, "sha256": entry.template_sha256, "jinja": entry.chat_template}


def chat_template_of(state: dict[str, Any]) -> str | None:
    """The Jinja chat template a checkpoint's state carries, or None."""
    record = state.get(STATE_KEY)
    return str(record["jinja"]) if isinstance(record, dict) and record.get("jinja") else None


def shipped_template(jinja: str) -> ChatTemplate | None:
    """The stack's shipped template (stack/data/templates) whose Jinja is `jinja`, or None: a model
    tuned on chats by the stack carries its template as Jinja, and is asked again in the template."""
    shipped = [load_template(path.stem) for path in sorted(TEMPLATES_DIR.glob("*.yaml"))]
    return next((found for found in shipped if jinja_of(found.spec) == jinja), None)


def _described(record: dict[str, Any]) -> str:
    """A template record by its name and the sha256 of its Jinja."""
    sha = str(record.get("sha256") or hashlib.sha256(str(record.get("jinja")).encode("utf-8")).hexdigest())
    name = "its own chat template" if record.get("name") == IMPORTED else str(record.get("name"))
    return f"{name} (sha256 {sha[:12]})"


def check_template_change(
    data: dict[str, Any] | None, shipped: dict[str, Any] | None, accepted: str | None
) -> None:
    """Refuse, at a run's set-up, to tune a model that ships a chat template on data rendered with
    another, unless the change is accepted on record (`data.chat_template_change`, its reason kept in
    the run's config): the run's checkpoints would carry the data's template, and the model's own
    would be gone from every export of it, unsaid. Data rendered with the model's own template (its
    Jinja, the same text) and a model that ships none are no change."""
    if data is None or shipped is None or accepted is not None or data.get("jinja") == shipped.get("jinja"):
        return
    raise BadInput(
        f"the data was rendered with {_described(data)}, but the model ships {_described(shipped)}, which "
        "training on it would replace: prepare the data again with --tokenizer naming the model and no "
        "--template (it renders with the model's own), or accept the change on record with "
        '--set data.chat_template_change="why"'
    )
