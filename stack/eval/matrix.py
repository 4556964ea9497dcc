"""An evaluation matrix: the same held-out items scored four ways, so an adapter is judged against
what prompting its base model already gets.

| row | model           | before the item's prompt                                       |
|-----|-----------------|----------------------------------------------------------------|
| A   | base            | nothing                                                        |
| B   | base            | k examples (prompt + completion) drawn from the training data  |
| C   | base + adapter  | nothing                                                        |
| D   | the adapter's model, else the base | the passages BM25 retrieves for the prompt  |

Each row scores every item's reference completion (stack.eval.completion): bits per byte over
the UTF-8 bytes of all completions, loss per completion token, and with `exact` the share of items
whose greedy continuation is the completion. Rows C and D need an adapter and a document folder.
The per-item scores are kept (evalmatrix.json's `scores`), and each item's completion
(`completions`): each row is the scores' sum, by the function the integrity check re-derives the
record's rows with (contracts.derive.evalmatrix.row_summary), and each score's bytes are held to the
UTF-8 bytes of the completion its forward scored (GATE-FT-002's check bytes, contracts.likelihood).

Two gates judge the matrix. GATE-FT-002 (blocking): every row scored the same item ids in the
same order, and no few-shot example is the item it precedes, by id or by content; the draw
already leaves both out, and the gate shows it did. GATE-FT-001 (warning): row C beats row B by
min_bpb_improvement bits per byte, or the adapter was not worth training.

Few-shot draws are seeded per item (the seed and the item's id), so an item gets the same
examples whatever the order or number of the items beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from contracts.bm25 import FolderPassage, bm25, folder_passages, passages_read
from contracts.derive.evalmatrix import row_summary
from contracts.errors import BadInput
from contracts.few_shot import seeded_sample, shown
from contracts.gates import Outcome, gate_ensure, measure
from contracts.likelihood import summed_nll, utf8_bytes
from contracts.truncation import Window, completion_window, window_sha256
from stack.data.tokenizer import Tokenizer
from stack.eval.bpb import check_round_trip
from stack.eval.completion import score_completion
from stack.eval.items import Item
from stack.eval.retrieval import BM25
from stack.model.consumed import Consumed, recording
from stack.model.gpt import GPT

SEPARATOR = "\n\n"  # between few-shot examples, passages and the prompt


@dataclass(frozen=True)
class Row:
    """One row of the matrix: its letter, what it is, which model scores it, what comes before."""

    name: str
    label: str
    model: str  # base | adapter
    context: str  # none | few-shot | retrieval


@dataclass(frozen=True)
class Draw:
    """The few-shot examples placed before one item."""

    item: Item
    examples: list[Item]

    def measured(self) -> dict[str, Any]:
        """The draw as GATE-FT-002 reads it: ids and content digests."""
        examples = [{"id": e.id, "sha256": e.sha256} for e in self.examples]
        return {"item": self.item.id, "item_sha256": self.item.sha256, "examples": examples}


@dataclass(frozen=True)
class RowResult:
    """What one row measured: each item's score (id, nll, tokens, bytes, dropped, exact), in order.

    The per-item scores are the raw result the record cites (evalmatrix.json's `scores`); the row's
    numbers are their sums, by the function the integrity check re-derives them with.
    """

    row: Row
    scores: list[dict[str, Any]]
    contexts: list[str]  # per item, the sha256 of the text the model read before its completion
    # per item, the digest of the ids its scoring forward read and scored, as taped
    # (contracts.truncation.window_sha256), and the context the scoring model holds
    windows: list[str] = field(default_factory=list)
    ctx: int = 0
    # per item, the summed NLL of the taped targets under the taped logits (contracts.likelihood)
    nll_taped: list[float | None] = field(default_factory=list)
    # per item, the UTF-8 bytes of the text the taped targets decode to (contracts.likelihood)
    bytes_decoded: list[int | None] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [score["id"] for score in self.scores]

    def summary(self) -> dict[str, Any]:
        """The row as the result JSON and the evidence record show it."""
        named = {
            "row": self.row.name,
            "label": self.row.label,
            "model": self.row.model,
            "context": self.row.context,
        }
        return row_summary(named, self.scores)

    @property
    def bits_per_byte(self) -> float:
        return float(self.summary()["bits_per_byte"])


@dataclass(frozen=True)
class Matrix:
    """Every row's result, the few-shot draws, and the passages retrieved per item."""

    rows: list[RowResult]
    draws: list[Draw]
    retrieved: dict[str, list[dict[str, Any]]]
    # per item, the statute's BM25 scores (contracts.bm25) of the passages retrieved, in their order,
    # and the best of a passage left out (0: none), every passage rescored apart from the retriever
    rescored: dict[str, dict[str, Any]]
    # the retriever's passages and the statute's walk of the stated folder (contracts.bm25
    # .passages_read of each: passages per file and the list's sha256); empty without --docs
    folder: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self, name: str) -> RowResult:
        """The result of the row named `name` (A, B, C, D)."""
        return next(r for r in self.rows if r.row.name == name)


@dataclass(frozen=True)
class Setup:
    """What the matrix is asked to score with: models, the few-shot pool and the retriever."""

    base: GPT
    adapter: GPT | None
    tokenizer: Tokenizer
    pool: list[Item]
    shots: int
    retriever: BM25 | None
    passages: int
    seed: int
    exact: bool


def rows_of(setup: Setup) -> list[Row]:
    """The rows this setup can score: A and B always, C with an adapter, D with documents."""
    rows = [Row("A", "base", "base", "none"), Row("B", f"base + {setup.shots}-shot", "base", "few-shot")]
    if setup.adapter is not None:
        rows.append(Row("C", "base + adapter", "adapter", "none"))
    if setup.retriever is not None:
        model = "adapter" if setup.adapter is not None else "base"
        rows.append(Row("D", f"{model} + retrieval", model, "retrieval"))
    return rows


def model_of(setup: Setup, row: Row) -> GPT:
    """The model that scores `row`: the adapter's for rows that name it (only made when there is one)."""
    return setup.adapter if row.model == "adapter" and setup.adapter is not None else setup.base


def eligible_examples(item: Item, pool: list[Item]) -> list[Item]:
    """The pool without the item itself: not its id, and not its content under another id."""
    return [p for p in pool if p.id != item.id and p.sha256 != item.sha256]


def draw_examples(item: Item, pool: list[Item], shots: int, seed: int) -> Draw:
    """`shots` examples for `item`, drawn from the pool by a generator seeded with seed and the item's id."""
    eligible = eligible_examples(item, pool)
    if len(eligible) < shots:
        raise BadInput(
            f"item {item.id}: the training data has {len(eligible)} examples other than it, fewer than "
            f"--shots {shots}; give more training examples or fewer shots"
        )
    return Draw(item, seeded_sample(seed, item.id, eligible, shots))


def retrieve(retriever: BM25, item: Item, passages: int) -> list[dict[str, Any]]:
    """The passages placed before `item`: its prompt is the query."""
    found = retriever.top(item.prompt, passages)
    return [{"source": p.source, "paragraph": p.index, "score": score, "text": p.text} for p, score in found]


def rescored(
    statute: Callable[[str], list[float]],
    walked: list[FolderPassage],
    item: Item,
    retrieved: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every passage of the folder, as the statute walks it (contracts.bm25.folder_passages), scored
    again for `item`'s prompt by the statute, apart from the retriever's index and its reader: the
    scores of those retrieved, in their order (0 for one the walk does not find, source, number and
    text), and the best of those left out (0 when none is). Retrieval took the best when none left
    out is better."""
    scores = statute(item.prompt)
    at = {passage: i for i, passage in enumerate(walked)}
    taken = [at.get((p["source"], p["paragraph"], p["text"])) for p in retrieved]
    kept = set(taken)
    left = (s for i, s in enumerate(scores) if i not in kept)
    return {"scores": [0.0 if i is None else scores[i] for i in taken], "best_left": max(left, default=0.0)}


def framed(before: list[str], prompt: str) -> str:
    """The text a row puts before a completion: each piece followed by SEPARATOR, then the prompt."""
    return "".join(text + SEPARATOR for text in before) + prompt


def row_contexts(
    row: Row, items: list[Item], draws: dict[str, Draw], retrieved: dict[str, list[dict[str, Any]]]
) -> list[tuple[Item, str]]:
    """Each item with the text the row puts before its completion."""
    contexts = []
    for item in items:
        before: list[str] = []
        if row.context == "few-shot":
            before = [e.prompt + e.completion for e in draws[item.id].examples]
        elif row.context == "retrieval":
            before = [p["text"] for p in retrieved[item.id]]
        contexts.append((item, framed(before, item.prompt)))
    return contexts


def stated_context(row: Row, item: Item, matrix: Matrix) -> str:
    """The text `row` states it put before `item`'s completion, from what the record shows: the
    item's prompt after its draw's examples as examples show (`Item.text`), or after the passages
    retrieved for it. GATE-FT-002 holds the text each forward read to it."""
    if row.context == "few-shot":
        draw = next(d for d in matrix.draws if d.item.id == item.id)
        return framed([e.text for e in draw.examples], item.prompt)
    if row.context == "retrieval":
        return framed([p["text"] for p in matrix.retrieved[item.id]], item.prompt)
    return item.prompt


def text_sha256(text: str) -> str:
    """The digest a context is compared by (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def score_row(
    row: Row, model: GPT, setup: Setup, contexts: list[tuple[Item, str]], advance: Callable[[], None]
) -> RowResult:
    """Score every (item, context) of one row: one score per item, bytes counted on the completion."""
    scores, read, windows, nlls, decoded = [], [], [], [], []
    for item, context in contexts:
        read.append(text_sha256(context))  # the text the model is handed, as handed
        where = f"row {row.name}, item {item.id}"
        with recording(keep_logits=True) as tape:
            scored = score_completion(
                model, setup.tokenizer, context, item.completion, exact=setup.exact, where=where
            )
        windows.append(taped_window(tape))
        nlls.append(taped_nll(tape))
        decoded.append(taped_bytes(tape, setup.tokenizer))
        scores.append(
            {
                "id": item.id,
                "nll": scored.nll,
                "tokens": scored.tokens,
                "bytes": len(item.completion.encode("utf-8")),
                "dropped": scored.dropped,
                "exact": bool(scored.exact) if setup.exact else None,
                # the greedy continuation that exact match compared: GATE-FT-002's check exact
                # compares it again by contracts.exact_match, in the run and in the checker
                "greedy": scored.greedy if setup.exact else None,
            }
        )
        advance()
    return RowResult(row, scores, read, windows, model.config.ctx, nlls, decoded)


def taped_window(tape: list[Consumed]) -> str:
    """The digest of the ids the one scoring forward of a completion read and scored, as taped; a
    tape without exactly one scoring says how many it holds (no digest matches that)."""
    if len(tape) != 1:
        return f"{len(tape)} scorings taped"
    (consumed,) = tape
    return window_sha256(consumed.inputs[0].tolist(), consumed.targets[0].tolist())


def taped_nll(tape: list[Consumed]) -> float | None:
    """The summed NLL of the one scoring forward's taped targets under the logits it taped
    (contracts.likelihood.summed_nll, apart from the stack's loss); None when the tape holds another
    number of scorings or no logits (no stated NLL matches that)."""
    if len(tape) != 1 or tape[0].logits is None:
        return None
    return summed_nll(tape[0].logits, tape[0].targets)


def taped_bytes(tape: list[Consumed], tokenizer: Tokenizer) -> int | None:
    """The UTF-8 bytes (contracts.likelihood.utf8_bytes) of the text the one scoring forward's taped
    targets decode to: the completion as scored, which its bits per byte divide by; None when the
    tape holds another number of scorings (no stated count matches that)."""
    if len(tape) != 1:
        return None
    return utf8_bytes(tokenizer.decode([t for t in tape[0].targets[0].tolist() if t >= 0]))


def stated_windows(
    result: RowResult, items: list[Item], matrix: Matrix, tokenizer: Tokenizer
) -> list[Window]:
    """Per item, what the row's scoring forward should read and score by the documented rule
    (contracts.truncation.completion_window) applied to the context the row states."""
    return [
        completion_window(
            tokenizer.eot_id,
            tokenizer.encode_prompt(stated_context(result.row, item, matrix)),
            check_round_trip(tokenizer, item.completion),
            result.ctx,
        )
        for item in items
    ]


def pool_measured(pool: list[Item]) -> list[dict[str, str]]:
    """The few-shot pool as GATE-FT-002's check draws reads it and evalmatrix.json keeps it: each
    example's id and content digest, in the pool's order (the order a draw samples from)."""
    return [{"id": p.id, "sha256": p.sha256} for p in pool]


def same_items_outcome(matrix: Matrix, items: list[Item], setup: Setup, config: Mapping[str, Any]) -> Outcome:
    """GATE-FT-002 over the matrix as scored: each row's item ids, every few-shot draw, the text
    each row's forwards read before each completion against the text the row states (`stated_context`),
    the ids each scoring forward read and scored, as taped, and the context ids it cut, against the
    documented cut of the stated context (`stated_windows`), each item's NLL against the sum of its
    taped targets' NLL under its taped logits (`taped_nll`), each item's bytes against the UTF-8
    bytes of the text its taped targets decode to (`taped_bytes`), and each item's retrieved passages
    against the best of those left, all scored by the statute over the passages its own walk of the
    stated folder finds, and the retriever's passage list against that walk (`rescored`,
    contracts.bm25.folder_passages); and every draw against the
    one contracts.few_shot draws again from the seed, the item and the pool (check draws); and each
    item's exact match, as its row scored it, against the exact match the record states it asked
    for and against contracts.exact_match of the greedy continuation it compared (check exact). The
    settings these are held to (seed, shots, passages, exact_match) are the ones the record states
    (`config`), not the setup's: a setting that never reached the setup shows as a draw, a retrieval
    or a score other than the record says."""
    tokenizer = setup.tokenizer
    rows = {r.row.name: r.ids for r in matrix.rows}
    measured: dict[str, Any] = {"rows": rows, "few_shot": [d.measured() for d in matrix.draws]}
    measured |= {
        "draws_pool": pool_measured(setup.pool),
        "draws_seed": config["seed"],
        "draws_shots": config["shots"],
    }
    measured["contexts_read"] = {r.row.name: r.contexts for r in matrix.rows}
    measured["contexts_stated"] = {
        r.row.name: [text_sha256(stated_context(r.row, item, matrix)) for item in items] for r in matrix.rows
    }
    stated = {r.row.name: stated_windows(r, items, matrix, tokenizer) for r in matrix.rows}
    measured["windows_read"] = {r.row.name: r.windows for r in matrix.rows}
    measured["windows_stated"] = {
        name: [window_sha256(w.inputs, w.targets) for w in windows] for name, windows in stated.items()
    }
    measured["dropped_read"] = {r.row.name: [score["dropped"] for score in r.scores] for r in matrix.rows}
    measured["dropped_stated"] = {name: [w.dropped for w in windows] for name, windows in stated.items()}
    measured["nll_read"] = {r.row.name: [score["nll"] for score in r.scores] for r in matrix.rows}
    measured["nll_taped"] = {r.row.name: r.nll_taped for r in matrix.rows}
    measured["bytes_read"] = {r.row.name: [score["bytes"] for score in r.scores] for r in matrix.rows}
    measured["bytes_decoded"] = {r.row.name: r.bytes_decoded for r in matrix.rows}
    measured["exact_read"] = {r.row.name: [score["exact"] for score in r.scores] for r in matrix.rows}
    measured["exact_stated"] = config["exact_match"]
    measured["exact_greedy"] = {r.row.name: [score["greedy"] for score in r.scores] for r in matrix.rows}
    measured["exact_completions"] = [item.completion for item in items]
    if matrix.retrieved:
        measured["retrieval"] = [
            {"item": item, "asked": config["passages"], **matrix.rescored[item]} for item in matrix.retrieved
        ]
        measured["passages_read"] = matrix.folder["read"]
        measured["passages_statute"] = matrix.folder["statute"]
    return measure("GATE-FT-002", measured, holds="every row scored the same items, none as its own example")


@gate_ensure(
    "GATE-FT-002",
    lambda setup, items, config, result: same_items_outcome(result, items, setup, config),
)
def score_matrix(
    setup: Setup, items: list[Item], advance: Callable[[str], None], config: Mapping[str, Any]
) -> Matrix:
    """Every row of the setup over `items`; `advance(row)` after each item scored. `config` is the
    record's: the settings GATE-FT-002 holds what the setup did to, apart from the setup."""
    draws = {item.id: draw_examples(item, setup.pool, setup.shots, setup.seed) for item in items}
    retrieved, rescores, folder = {}, {}, {}
    if setup.retriever is not None:
        retrieved = {item.id: retrieve(setup.retriever, item, setup.passages) for item in items}
        # the folder the record states, walked by the statute apart from the retriever's reader
        walked = folder_passages(Path(config["docs"])) if config["docs"] is not None else []
        statute = bm25([text for _, _, text in walked])
        rescores = {item.id: rescored(statute, walked, item, retrieved[item.id]) for item in items}
        read = [(p.source, p.index, p.text) for p in setup.retriever.passages]
        folder = {"read": passages_read(read), "statute": passages_read(walked)}
    results = []
    for row in rows_of(setup):
        contexts = row_contexts(row, items, draws, retrieved)
        results.append(score_row(row, model_of(setup, row), setup, contexts, partial(advance, row.name)))
    return Matrix(results, list(draws.values()), retrieved, rescores, folder)


def adapter_outcome(matrix: Matrix) -> Outcome:
    """GATE-FT-001: row C's bits per byte against row B's."""
    few_shot = matrix.row("B")
    measured = {
        "few_shot_bpb": few_shot.bits_per_byte,
        "adapter_bpb": matrix.row("C").bits_per_byte,
        **shown([score["dropped"] for score in few_shot.scores]),
    }
    return measure("GATE-FT-001", measured, holds="the adapter beats few-shot prompting of its base")


@gate_ensure("GATE-FT-001", lambda matrix: adapter_outcome(matrix))
def adapter_gain(matrix: Matrix) -> float:
    """How many bits per byte the adapter (row C) saves over few-shot prompting (row B)."""
    return matrix.row("B").bits_per_byte - matrix.row("C").bits_per_byte
