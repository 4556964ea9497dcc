"""Preference pairs: the JSONL reader, the tokenizer's view of a pair, and a resumable batcher.

A line is `{"prompt": str, "chosen": str, "rejected": str}`, or the chat form, where `prompt` is
a list of `{"role", "content"}` messages and `chosen`/`rejected` each one assistant message (a
list of one, or the message itself). Chat messages are rendered with the SFT chat template
(stack/data/templates/, `--template`), the assistant's prefix ending the prompt, so the
completion is only what the assistant said.

Prompt and completion are tokenized apart (the completion followed by the end-of-text id), so
the boundary between what is scored and what is not is a token index, never a guess made after
the fact. A sequence that does not fit the model's context is refused, not cut: a silent cut
of the completion changes what is preferred.

The batcher serves the pairs in a seeded order per epoch; its state (epoch, position) goes into
every checkpoint so that a resumed run sees the batches the uninterrupted one would have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from stack.data.sft_template import ChatTemplate
from stack.data.tokenizer import Tokenizer

ASSISTANT = "assistant"


@dataclass(frozen=True)
class Pair:
    """One preference: a prompt and two completions, the first preferred."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class TokenPair:
    """A pair as token ids: the prompt's, and each completion's (ending with end-of-text)."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]


@dataclass(frozen=True)
class PairBatch:
    """Chosen sequences (rows 0..B-1) then rejected ones (B..2B-1), padded on the right.

    `mask[b, t]` is True where tokens[b, t] is a completion token to score; `prompt_lens` and
    `lengths` say where each row's prompt ends and its sequence ends, independently of the mask,
    which is how GATE-DPO-005 checks the mask.
    """

    tokens: torch.Tensor  # (2B, T) int64
    mask: torch.Tensor  # (2B, T) bool
    prompt_lens: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def pairs(self) -> int:
        """B: how many preference pairs the batch holds."""
        return self.tokens.shape[0] // 2


def render_prompt(messages: list[dict[str, Any]], template: ChatTemplate) -> str:
    """Messages as the template writes them, then the assistant's prefix: what the completion follows."""
    roles = template.spec.roles
    for message in messages:
        if message["role"] not in roles or message["role"] == ASSISTANT:
            raise BadInput(
                f"a prompt message has role {message['role']!r}; give "
                f"{', '.join(r for r in roles if r != ASSISTANT)} turns before the completion"
            )
    text = "".join(roles[m["role"]].prefix + m["content"] + roles[m["role"]].suffix for m in messages)
    return text + roles[ASSISTANT].prefix


def _message(value: Any, where: str) -> dict[str, Any]:
    """One message, checked: a dict with string role and content."""
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    if not isinstance(value.get("content"), str):
        raise BadInput(f"{where}: a chat message must be an object with a string 'role' and 'content'")
    return value


def _completion(value: Any, where: str) -> str:
    """A completion: a string, an assistant message, or a list of exactly one."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    message = _message(value, where)
    if message["role"] != ASSISTANT:
        raise BadInput(f"{where}: a completion must be the assistant's message, not {message['role']!r}")
    return str(message["content"])


def parse_pair(record: Any, where: str, template: ChatTemplate) -> Pair:
    """A pair from one decoded JSONL line, in plain or chat form."""
    if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= record.keys():
        raise BadInput(f"{where}: a preference line needs 'prompt', 'chosen' and 'rejected'")
    prompt = record["prompt"]
    if isinstance(prompt, list):
        prompt = render_prompt([_message(m, where) for m in prompt], template)
    if not isinstance(prompt, str) or not prompt:
        raise BadInput(f"{where}: 'prompt' must be non-empty text or a list of chat messages")
    chosen, rejected = _completion(record["chosen"], where), _completion(record["rejected"], where)
    if chosen == rejected:
        raise BadInput(f"{where}: 'chosen' and 'rejected' are the same text; there is nothing to prefer")
    return Pair(prompt, chosen, rejected)


def read_pairs(path: Path, template: ChatTemplate) -> list[Pair]:
    """Every pair of a JSONL file (blank lines skipped), chat ones rendered by `template`; refuse a
    file without any."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{number}: not JSON ({exc.msg}); one object per line") from None
        pairs.append(parse_pair(record, f"{path}:{number}", template))
    if not pairs:
        raise BadInput(f"{path} holds no preference pairs; give a JSONL file of prompt/chosen/rejected")
    return pairs


def tokenize_pair(pair: Pair, tokenizer: Tokenizer, max_tokens: int) -> TokenPair:
    """The pair's ids; refused when a sequence is longer than `max_tokens` (the context + 1)."""
    prompt = tuple(tokenizer.encode(pair.prompt))
    chosen = (*tokenizer.encode(pair.chosen), tokenizer.eot_id)
    rejected = (*tokenizer.encode(pair.rejected), tokenizer.eot_id)
    longest = len(prompt) + max(len(chosen), len(rejected))
    if longest > max_tokens:
        raise BadInput(
            f"a pair of {longest} tokens does not fit the model's {max_tokens - 1}-token context "
            f"(prompt {pair.prompt[:40]!r}…); shorten it or drop it"
        )
    return TokenPair(prompt, chosen, rejected)


def completion_mask(prompt_len: int, length: int, width: int) -> torch.Tensor:
    """True at the completion's positions [prompt_len, length) of a row `width` wide."""
    positions = torch.arange(width)
    return (positions >= prompt_len) & (positions < length)


def collate(pairs: list[TokenPair], pad_id: int, width: int | None = None) -> PairBatch:
    """One batch, right-padded with `pad_id` to `width` (default: the longest sequence)."""
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    lengths = tuple(len(prompt) + len(completion) for prompt, completion in rows)
    width = max(lengths) if width is None else width
    if width < max(lengths):
        raise BadInput(f"a batch of sequences up to {max(lengths)} tokens cannot be {width} wide")
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for row, (prompt, completion) in enumerate(rows):
        tokens[row, : lengths[row]] = torch.tensor(prompt + completion, dtype=torch.long)
    prompt_lens = tuple(len(prompt) for prompt, _ in rows)
    mask = torch.stack([completion_mask(p, n, width) for p, n in zip(prompt_lens, lengths, strict=True)])
    return PairBatch(tokens, mask, prompt_lens, lengths)


def collate_width(batch: PairBatch, pad_id: int, width: int) -> PairBatch:
    """`batch` re-padded to `width` columns, its rows and their bounds unchanged."""
    tokens = torch.full((batch.tokens.shape[0], width), pad_id, dtype=torch.long)
    keep = min(width, batch.tokens.shape[1])
    tokens[:, :keep] = batch.tokens[:, :keep]
    mask = torch.stack(
        [completion_mask(p, n, width) for p, n in zip(batch.prompt_lens, batch.lengths, strict=True)]
    )
    return PairBatch(tokens, mask, batch.prompt_lens, batch.lengths)


class PairBatcher:
    """Batches of `batch_size` pairs in a seeded order per epoch, resumable from `state_dict`."""

    def __init__(self, pairs: list[TokenPair], batch_size: int, seed: int, pad_id: int) -> None:
        if batch_size > len(pairs):
            raise BadInput(f"--batch-size {batch_size} is more than the {len(pairs)} pairs given")
        self.pairs, self.batch_size, self.seed, self.pad_id = pairs, batch_size, seed, pad_id
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.pairs), generator=generator).tolist()

    def next_batch(self) -> PairBatch:
        """The next batch; an epoch's last partial batch is skipped, every batch is full."""
        if self.position + self.batch_size > len(self.pairs):
            self.epoch, self.position = self.epoch + 1, 0
        chosen = self._order()[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return collate([self.pairs[i] for i in chosen], self.pad_id)

    def state_dict(self) -> dict[str, int]:
        """Where the batcher is: enough, with the pairs and the seed, to continue exactly."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "pairs": len(self.pairs)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state`; refused when it was saved over other pairs or another seed."""
        if state.get("pairs") != len(self.pairs) or state.get("seed") != self.seed:
            raise BadInput(
                f"the checkpoint's batcher ran over {state.get('pairs')} pairs with seed "
                f"{state.get('seed')}, not these {len(self.pairs)} with seed {self.seed}; "
                "resume with the run's own --pairs file"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
