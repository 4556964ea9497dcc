"""How many tokens `stack synth` draws for each part of a sample: the statute GATE-SYNTH-002's check
budgets holds every continuation to, apart from stack.tune.synth's own arithmetic.

A synthesis draws the instruction after the template's user prefix (`prompt_tokens` ids) and the
response after the whole user turn and the assistant prefix. Each draw takes exactly its budget (the
sampler does not stop early; the text is cut at the first end-of-text afterwards), so the number of
tokens drawn is the budget, and a part's text ends at its end-of-text or is exactly that long:

- instruction: the stated `max_instruction_tokens`, at most half the context left after its prompt;
- response: the stated `max_response_tokens`, at most the context left after its prompt less the
  one position kept for the end-of-text that closes the turn when the sample is prepared as a chat.

A budget under one draws nothing (the sample is dropped as `no_room`).
"""

from __future__ import annotations

# The parts of a sample, in the order they are drawn.
PARTS = ("instruction", "response")


def part_budget(part: str, asked: int, ctx: int, prompt_tokens: int) -> int:
    """Tokens drawn for `part` after a prompt of `prompt_tokens` ids, by a model of context `ctx`,
    where the settings ask for at most `asked` (0: no room, nothing is drawn)."""
    if part not in PARTS:
        raise ValueError(f"a sample has no part {part!r} (parts: {', '.join(PARTS)})")
    left = ctx - prompt_tokens
    room = left // 2 if part == "instruction" else left - 1
    return max(0, min(asked, room))


def text_tokens(drawn: int, eot_at: int | None) -> int:
    """Tokens of a part's text: those drawn before the first end-of-text, all of them without one."""
    return drawn if eot_at is None else eot_at
