"""Verbatim recall of training examples: does a fine-tuned model recite what it was trained on?

For each of N training examples with at least P + C tokens, the first P tokens are the prefix
and the next C the true continuation. Each model continues the prefix greedily for C tokens
(`generate_long`), and every draw is replayed as greedy from the logits it was made from, those
the model's for the text so far (GATE-TRAIN-005: a recall of sampled text would measure the
sampler's luck, not the model's memory); the example's score is the longest
run of consecutive tokens the generated continuation shares, verbatim, with the true one
(the longest common substring, found by dynamic programming in O(C²)). An example counts as
reproduced when that run is at least the spec's min_verbatim_tokens; GATE-FT-003 (warning) fires
when the fine-tuned model reproduces more than max_rate of the examples. The base model is
measured on the same prefixes as a control: text any model of the language would continue the
same way (licence headers, boilerplate) shows up in both.

Every continuation's ids are kept (memorization.json's `continuations`: the true ones and each
row's), and GATE-FT-003's check runs holds each run to the one contracts.verbatim finds between
them, a rule written apart from `longest_common_run`; the checker finds every run again from them.

Examples are whole documents from a prepared DATA_DIR's train split, or lines of a JSONL file
({"text"}, {"prompt", "completion"} joined, or a chat record {"messages"} rendered by the chat
template into the ids SFT trained on), drawn without replacement by a seeded generator
(contracts.recall_draw). GATE-FT-003's check drawn draws again from the seed the record states and
the lengths of the pool as read (`check_drawn_examples`): examples drawn with another seed than the
one recorded describe another set than the record says. Its check tokens holds the text of the ids
each JSONL example was measured on to the start of its record's text as contracts.recall_draw
writes it (`check_example_texts`): an example tokenized without its prompt is seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contracts import recall_draw
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.recall_draw import drawn_indices, eligible_indices
from contracts.spec import load_spec
from contracts.verbatim import longest_common_run as statute_run
from stack.data.line_ends import text_lines
from stack.data.sft_template import ChatTemplate, example_text, example_turns, load_template, render
from stack.data.tokenizer import Tokenizer
from stack.eval.texts import split_documents
from stack.model.generate import generate_long
from stack.model.gpt import GPT
from stack.model.sampling_checks import (
    PROBE_TOKENS,
    DrawTally,
    Sampler,
    SpreadLogits,
    check_drawn,
    probe_width,
    watching_draws,
)
from stack.tune.frozen import weights_sha256


@dataclass(frozen=True)
class Example:
    """A training example's tokens, where it came from (shown in the result), and its index in the
    pool it was drawn from."""

    source: str
    tokens: list[int]
    index: int


@dataclass(frozen=True)
class Drawn:
    """The examples drawn, and the length in tokens of every example of the pool, in pool order."""

    examples: list[Example]
    pool: list[int]


@dataclass(frozen=True)
class Recall:
    """Per example, the longest verbatim run each model's continuation shares with the true one."""

    sources: list[str]
    prefix: int
    continuation: int
    tuned: list[int]
    base: list[int]
    # Per row, the sha256 of the weights of the model handed in for it and of the one that generated
    models_given: dict[str, str]
    models_measured: dict[str, str]
    # The ids of every continuation: "true" (each example's, after its prefix) and each row's, as drawn
    continuations: dict[str, list[list[int]]]
    # Per example, the ids measured: the prefix the rows continued, then the true continuation
    measured_ids: list[list[int]] = field(default_factory=list)

    def recomputed(self, row: str) -> list[int]:
        """Each example's run between `row`'s continuation and the true one, by contracts.verbatim."""
        return [
            statute_run(g, t)
            for g, t in zip(self.continuations[row], self.continuations["true"], strict=True)
        ]


def short_examples(longest: int, length: int) -> str:
    """Why no example can be measured, and what can still move: the continuation cannot be shorter
    than GATE-FT-003's min_verbatim_tokens (`stack memorization` refuses it), so advising a shorter
    one where it is at that minimum would send users to a second refusal."""
    least = int(load_spec().threshold("GATE-FT-003", "min_verbatim_tokens"))
    said = f"no training example has the {length} tokens a prefix and a continuation need"
    said += f" (the longest has {longest})"
    if longest <= least:
        return f"{said}; give examples longer than the {least}-token continuation GATE-FT-003 measures"
    return (
        f"{said}; make --prefix + --continuation at most {longest} (the continuation at least "
        f"GATE-FT-003's min_verbatim_tokens, {least}), or give longer examples"
    )


def choose(lengths: list[int], n: int, length: int, seed: int) -> list[int]:
    """Indices of up to n examples of at least `length` tokens, drawn without replacement, in order."""
    if not eligible_indices(lengths, length):
        raise BadInput(short_examples(max(lengths, default=0), length))
    return drawn_indices(lengths, n, length, seed)


def data_examples(data_dir: Path, tokenizer: Tokenizer, n: int, length: int, seed: int) -> Drawn:
    """n documents of a DATA_DIR's train split (tokenized by `tokenizer`, checked by the caller),
    cut to `length` tokens; the split is read twice, so only the chosen documents are held."""
    lengths = [len(tokens) for tokens in split_documents(data_dir, "train", tokenizer.eot_id)]
    picked = set(choose(lengths, n, length, seed))
    examples = [
        Example(f"train document {i}", np.asarray(tokens[:length]).tolist(), i)
        for i, tokens in enumerate(split_documents(data_dir, "train", tokenizer.eot_id))
        if i in picked
    ]
    return Drawn(examples, lengths)


def _tokens_of(record: object, tokenizer: Tokenizer, template: ChatTemplate, where: str) -> list[int]:
    """A record's token ids: a text, a prompt and completion joined (as `prepare` joins them by
    default), or a chat rendered as `prepare --format chat` renders it (template text and EOS ids)."""
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return tokenizer.encode(record["text"])
    if (
        isinstance(record, dict)
        and isinstance(record.get("prompt"), str)
        and isinstance(record.get("completion"), str)
    ):
        return tokenizer.encode(record["prompt"] + record["completion"])
    if isinstance(record, dict) and "messages" in record:
        return render(template, tokenizer, example_turns(record, "chat", where), where).ids.tolist()
    raise BadInput(f"{where}: needs a string 'text', a string 'prompt' and 'completion', or chat 'messages'")


def jsonl_examples(
    path: Path, tokenizer: Tokenizer, n: int, length: int, seed: int, template: ChatTemplate | None = None
) -> Drawn:
    """n lines of a JSONL file, each tokenized as one example and cut to `length` tokens; chat records
    are rendered by `template` (default: the shipped one)."""
    template = template or load_template(None)
    examples, lengths = [], []
    lines, _, _ = text_lines(path, "a JSONL file of training examples")
    for number, line in lines:
        if not line.strip():
            continue
        where = f"--examples {path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: not JSON ({exc.msg}); write one object per line") from None
        tokens = _tokens_of(record, tokenizer, template, where)
        examples.append(Example(f"line {number}", tokens[:length], len(examples)))
        lengths.append(len(tokens))
    return Drawn([examples[i] for i in choose(lengths, n, length, seed)], lengths)


def drawn_outcome(drawn: Drawn, n: int, length: int, seed: int) -> Outcome:
    """GATE-FT-003's check drawn: the pool indices of the examples measured and their ranks among the
    pool's examples of at least `length` tokens (-1 for one that has fewer), beside what the draw
    needs to be made again (contracts.recall_draw): how many are eligible, n and the seed the
    record states."""
    eligible = eligible_indices(drawn.pool, length)
    rank = {index: position for position, index in enumerate(eligible)}
    measured = {
        "examples_seed": seed,
        "examples_n": n,
        "examples_length": length,
        "examples_eligible": len(eligible),
        "examples_ranks": [rank.get(e.index, -1) for e in drawn.examples],
        "examples_drawn": [e.index for e in drawn.examples],
    }
    return measure("GATE-FT-003", measured, holds="the examples measured are the ones the stated seed draws")


@gate_require("GATE-FT-003", drawn_outcome)
def check_drawn_examples(drawn: Drawn, n: int, length: int, seed: int) -> None:
    """Refuse a recall measured on other examples than the stated seed draws from the pool: the
    record would name a set it was not measured on."""


def rendered_examples(
    path: Path, examples: list[Example], tokenizer: Tokenizer, template: ChatTemplate
) -> list[str | None]:
    """Each example's record of the JSONL file `path` as text, read again and written by
    contracts.recall_draw apart from `_tokens_of` (a chat record as the template writes its
    messages, `example_text`); None for a pool index the file does not hold."""
    records = recall_draw.pool_records(path.read_bytes())

    def chat(record: dict[str, object], where: str) -> str:
        return example_text(template, tokenizer, example_turns(record, "chat", where))[0]

    return [
        recall_draw.example_text(records[e.index], f"--examples {path} record {e.index}", chat)
        if e.index < len(records)
        else None
        for e in examples
    ]


def texts_outcome(recall: Recall, rendered: list[str | None], tokenizer: Tokenizer) -> Outcome:
    """GATE-FT-003's check tokens: the text of the ids each example was measured on (its prefix and
    true continuation, as the rows were handed them) beside its record's text, cut to that length."""
    decoded = [tokenizer.decode(ids) for ids in recall.measured_ids]
    cut = [None if text is None else text[: len(d)] for text, d in zip(rendered, decoded, strict=True)]
    measured = {"examples_decoded": decoded, "examples_rendered": cut}
    return measure("GATE-FT-003", measured, holds="each example measured is the start of its record's text")


@gate_require("GATE-FT-003", texts_outcome)
def check_example_texts(recall: Recall, rendered: list[str | None], tokenizer: Tokenizer) -> None:
    """Name a recall measured on other ids than its --examples records' text (a prompt left out):
    its prefixes and true continuations would be cut from another text than the file holds."""


def longest_common_run(generated: list[int], true: list[int]) -> int:
    """The length of the longest run of consecutive tokens found, in order, in both sequences."""
    best, previous = 0, [0] * (len(true) + 1)
    for token in generated:
        current = [0] * (len(true) + 1)
        for j, other in enumerate(true, 1):
            if token == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


# What a continuation is replayed under: greedy, the largest logit at every draw.
GREEDY = Sampler(temperature=0.0)
# The spread probe's seed: greedy draws read no generator, so any fixed seed serves.
PROBE_SEED = 0


def _continued(model: nn.Module, idx: torch.Tensor, length: int) -> torch.Tensor:
    """The `length` tokens `model` continues each row of `idx` with, greedily: the one call that
    generates both a row's continuation and the spread probe's, so both are drawn alike."""
    return generate_long(model, idx, length, temperature=0.0)[:, idx.shape[1] :]


@torch.inference_mode()
def continue_greedily(
    model: GPT, prefixes: torch.Tensor, length: int, batch: int, tally: DrawTally
) -> list[list[int]]:
    """Each prefix's greedy continuation of `length` tokens, `batch` prefixes per call; each draw
    added to `tally` (GREEDY's) with the logits it was made from, for GATE-TRAIN-005 to replay."""
    device = model.embed.weight.device
    generator = torch.Generator(device=device)  # watched, never read: greedy draws take no sample
    grown = []
    for chunk in prefixes.split(batch):
        chunk = chunk.to(device)
        with watching_draws(model, generator) as draws:
            drawn = _continued(model, chunk, length)
        tally.add(draws, drawn, model, chunk)
        grown.append(drawn)
    return torch.cat(grown).tolist()


@torch.inference_mode()
def check_greedy(tally: DrawTally, vocab: int, device: torch.device) -> None:
    """GATE-TRAIN-005 over every continuation in `tally`, with the spread probe drawn by the same
    call: a recall measured on sampled text (a temperature above 0 on the way) is refused. On a
    model that recites, the largest logit is often so far ahead that a sample would pick it too;
    the probe's flat rows are where a sample and the largest logit part."""
    spread = SpreadLogits(probe_width(vocab, None), device, PROBE_SEED)
    with watching_draws(spread, torch.Generator(device=device)) as draws:
        drawn = _continued(spread, spread.prompt, PROBE_TOKENS)
    tally.add_probe(draws, spread.prompt, drawn)
    check_drawn(tally, None)


def recall_outcome(recall: Recall) -> Outcome:
    """GATE-FT-003 over the runs measured for both models, and (check runs) those contracts.verbatim
    finds in the continuations kept."""
    measured = {
        "tuned_overlaps": recall.tuned,
        "base_overlaps": recall.base,
        "continuation_tokens": recall.continuation,
        "models_given": recall.models_given,
        "models_measured": recall.models_measured,
        "tuned_runs_recomputed": recall.recomputed("fine-tuned"),
        "base_runs_recomputed": recall.recomputed("base"),
    }
    return measure(
        "GATE-FT-003", measured, holds="the fine-tuned model does not recite its training examples"
    )


def rows(tuned: GPT, base: GPT) -> tuple[tuple[str, GPT], ...]:
    """The rows of a recall table, each with the model that generates it: the fine-tuned, then the
    base, the control that says what any model of the corpus would recite."""
    return (("fine-tuned", tuned), ("base", base))


@gate_ensure("GATE-FT-003", lambda result: recall_outcome(result))
def measure_recall(
    tuned: GPT,
    base: GPT,
    examples: list[Example],
    prefix: int,
    continuation: int,
    batch: int,
    advance: Callable[[str], None],
) -> Recall:
    """Both models' longest verbatim runs over `examples` (each at least prefix + continuation long)."""
    tokens = torch.tensor([e.tokens[: prefix + continuation] for e in examples], dtype=torch.long)
    truth = tokens[:, prefix:].tolist()
    given = {"fine-tuned": weights_sha256(tuned), "base": weights_sha256(base)}
    runs, measured, tally = {}, {}, DrawTally(GREEDY)
    kept = {"true": [e.tokens[prefix : prefix + continuation] for e in examples]}  # as the examples hold them
    for name, model in rows(tuned, base):
        advance(name)
        measured[name] = weights_sha256(model)  # the row's model, as it generates
        kept[name] = continue_greedily(model, tokens[:, :prefix], continuation, batch, tally)
        runs[name] = [longest_common_run(g, t) for g, t in zip(kept[name], truth, strict=True)]
    check_greedy(tally, tuned.config.vocab, tuned.embed.weight.device)  # before any run is reported
    sources = [e.source for e in examples]
    ids = tokens.tolist()
    return Recall(sources, prefix, continuation, runs["fine-tuned"], runs["base"], given, measured, kept, ids)
