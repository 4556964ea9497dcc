"""How a model tuned on chats is asked: a prompt written in the template it was tuned in.

A model tuned on chats answers as it was tuned only when asked in its template: a user turn, then
what the template writes to ask for the assistant's reply (its generation prompt, `Assistant: ` in
the stack's `chat` template, `<|im_start|>assistant\\n` in ChatML). A bare question reads to it as
text to continue. `stack sample` and `stack evalmatrix` say so when their prompts hold no
generation prompt, and show the prompt written in the template (`ChatAsk.asked`).

The template is the one the checkpoint carries, chosen as `stack prepare` chooses it for the
model's data (stack.data.sft_prepare.chosen_renderer): the stack template it was tuned in, or an
imported model's own Jinja, rendered by transformers as `apply_chat_template` renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.data.chat_jinja import ASSISTANT, chat_template_of, render_text
from stack.data.chat_render import ModelTemplate
from stack.data.tokenizer import Tokenizer

USER = "user"
# The user turn a template is rendered with to find its generation prompt.
PROBE = "?"


@dataclass(frozen=True)
class ChatAsk:
    """A chat template as a prompt is asked in: its name, one user turn with the generation
    prompt as it writes it, and that generation prompt."""

    name: str
    render: Callable[[str], str]
    reply_prefix: str

    @property
    def marker(self) -> str:
        """What a prompt holds when it asks for a reply in this template."""
        return self.reply_prefix.strip()

    def asked(self, prompt: str) -> str | None:
        """`prompt` as one user turn asking for a reply, or None when it holds the marker already."""
        return None if self.marker in prompt else self.render(prompt)


def chat_ask(state: dict[str, Any], tokenizer: Tokenizer) -> ChatAsk | None:
    """How the checkpoint of `state` is asked, or None for a model tuned on no chat, and for a
    template that writes no generation prompt or cannot render one user turn (no advice is better
    than a wrong one)."""
    from stack.data.sft_prepare import chosen_renderer

    jinja = chat_template_of(state)
    if jinja is None:
        return None
    renderer = chosen_renderer(None, jinja, tokenizer)
    if isinstance(renderer, ModelTemplate):

        def render(prompt: str) -> str:
            return renderer.render([{"role": USER, "content": prompt}], add_generation_prompt=True)

        try:
            asking, bare = render(PROBE), renderer.render([{"role": USER, "content": PROBE}])
        except Exception:  # the template's own error (TemplateError, TypeError), or no transformers
            return None
        reply = asking[len(bare) :] if asking.startswith(bare) else ""
        ask = ChatAsk(renderer.name, render, reply)
    else:
        spec = renderer.spec
        ask = ChatAsk(
            f"the template {spec.name}",
            lambda prompt: render_text(spec, [(USER, prompt)], "", add_generation_prompt=True),
            spec.roles[ASSISTANT].prefix,
        )
    return ask if ask.marker else None
