"""A reference completion scored after a context: its negative log-likelihood, and greedy exact match.

The context and the completion are tokenized apart, so which tokens are scored is a token index,
not a guess after joint tokenization; the completion is tokenized under the round-trip check of
GATE-EVAL-003, so its bits per byte divide by every byte of it. The context starts with the
end-of-text id, where a document starts, so even an empty prompt gives the first completion token
something to be predicted from.

A context too long for the model is cut from the left, keeping the tokens nearest the completion,
and the cut is counted (`dropped`): a row whose few-shot examples or passages were cut says so.
The completion itself is never cut; one that does not fit beside a single context token is refused.
The scoring forward records the ids it read and the targets it scored on the active tape
(stack.model.consumed): GATE-FT-002 holds them to contracts.truncation.completion_window, and the
NLL to the sum contracts.likelihood.summed_nll computes from the logits it taped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contracts.errors import BadInput
from stack.data.tokenizer import Tokenizer
from stack.eval.bpb import check_round_trip
from stack.model.consumed import Consumed, mode_of, record
from stack.model.consumed import kept as kept_logits
from stack.model.generate import generate
from stack.model.gpt import GPT


@dataclass(frozen=True)
class Scored:
    """One completion under one context: summed NLL (nats), its tokens, context tokens cut, exact match,
    and the greedy continuation's text the exact match compared (None without exact match)."""

    nll: float
    tokens: int
    dropped: int
    exact: bool | None
    greedy: str | None = None


def matches(greedy: str, completion: str) -> bool:
    """The scorer's exact match: the greedy text is the completion, surrounding whitespace aside."""
    return greedy.strip() == completion.strip()


def fit_context(context: list[int], completion: int, ctx: int, where: str) -> tuple[list[int], int]:
    """The newest context tokens that fit before `completion` tokens in `ctx`, and how many were cut."""
    room = ctx - completion
    if room < 1:
        raise BadInput(
            f"{where}: the completion has {completion} tokens and the model's context holds {ctx}; "
            "shorten the completion or use a model with a longer context"
        )
    kept = context[-room:]
    return kept, len(context) - len(kept)


@torch.inference_mode()
def score_completion(
    model: GPT, tokenizer: Tokenizer, context: str, completion: str, *, exact: bool, where: str
) -> Scored:
    """The completion's NLL after `context`; with `exact`, whether greedy decoding reproduces it."""
    device = model.embed.weight.device
    target = check_round_trip(tokenizer, completion)
    context_ids = [tokenizer.eot_id, *tokenizer.encode_prompt(context)]
    kept, dropped = fit_context(context_ids, len(target), model.config.ctx, where)
    sequence = torch.tensor([kept + target], dtype=torch.long, device=device)
    inputs, start = sequence[:, :-1], len(kept) - 1
    logits, _ = model(inputs, None)
    targets = sequence[0, start + 1 :]
    nll = float(F.cross_entropy(logits[0, start:].float(), targets, reduction="sum").double())
    # what this forward read and scored, and the logits it scored them on (a tape that keeps logits),
    # on the tape GATE-FT-002's checks windows and nll read
    scored = F.pad(targets, (start, 0), value=-1)[None]
    record(Consumed(inputs, scored, None, logits.dtype, mode=mode_of(model), logits=kept_logits(logits)))
    if not exact:
        return Scored(nll, len(target), dropped, None)
    grown = generate(model, sequence[:, : len(kept)], len(target), temperature=0.0)
    greedy = tokenizer.text_of(grown[0, len(kept) :].tolist())
    return Scored(nll, len(target), dropped, matches(greedy, completion), greedy)
