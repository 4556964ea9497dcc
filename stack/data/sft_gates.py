"""The supervision gates of fine-tuning data, measured on the arrays a run actually reads.

Labels: one uint32 per token, `example * 2 + supervised`, where `example` numbers the examples
of a shard from 1 and 0 marks the padding that fills a packed window. Every supervised token is a
target the loss can score: never padding, never the first token of its example. GATE-SFT-001 is
judged on
(tokens, labels) at prepare, before anything is written, and again by the reader of every
training run on the files it maps; GATE-SFT-002 on the marker counts of the rendering.

At prepare GATE-SFT-001 also reads each assistant turn back from the packed tables (`check_turns`):
its supervised tokens, decoded where they stand in the turn, must be exactly the turn's text after
the marker (the assistant's content) and end with the EOS, the text written from the template and
the messages, never from the mask (stack.data.sft_template.supervised_texts); for a tokenizer that
normalises, the tokenizer's round trip of that text. A mask that starts one token late, or one
early, shows there. And it reads every example back whole (`check_rendering`): every id of it,
the prompt too, against a text written from its messages alone, never from the grouping of turns
the rendering used, so a turn the rendering dropped shows. The label files of the tables so
judged are hashed into the manifest; every training run maps them only if they match, and checks
each batch it serves against them (GATE-DATA-001, GATE-DATA-005): what the loss consumes is what
was judged here. Preference pairs have no assistant turns; their check (`check_boundary`) reads
each pair back at its mask (contracts.pair_rows) against the pairs the data holds, at prepare and
on every batch a DPO loss reads, so a mask off the prompt/completion boundary shows there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.gates import Outcome, gate_require, measure
from contracts.packing import greedy_packing
from contracts.pair_rows import pair_turns_at, pair_turns_at_mask, row_bounds
from contracts.split import example_identity, stored_example_key
from stack.data.split import index_row
from stack.data.tokenizer import PretrainedTokenizer

if TYPE_CHECKING:
    from stack.data.sft_template import ExampleText, TurnText
    from stack.data.tokenizer import Tokenizer


def examples_of(labels: np.ndarray) -> np.ndarray:
    """The example number of each token (0: padding)."""
    return np.asarray(labels) >> 1


def supervised_of(labels: np.ndarray) -> np.ndarray:
    """Whether each token is a supervised target."""
    return (np.asarray(labels) & 1).astype(bool)


def supervision_outcome(
    tokens: np.ndarray, labels: np.ndarray, eos_id: int, model_template: bool = False
) -> Outcome:
    """GATE-SFT-001's measurement: per example, supervised tokens, and EOS ids left unsupervised,
    apart those a supervised token of their example follows (`prompt_eos`: the end of a user's or
    system's turn, which a model's own template may write as the EOS; `model_template` says the
    examples were rendered by one); and the supervised positions no loss can score as prepared:
    those of padding (example 0, which is no example, so the per-example counts never see them)
    and those that open their example (nothing of it comes before them to predict them from)."""
    example = examples_of(labels).astype(np.int64)
    supervised = supervised_of(labels)
    opens = np.diff(example, prepend=-1) != 0
    eos = np.asarray(tokens) == eos_id
    real = example > 0
    followed = _supervised_after(example, supervised)
    n = int(example.max(initial=0)) + 1
    per_example = np.bincount(example[real], weights=supervised[real], minlength=n)[1:]
    eos_count = np.bincount(example[real], weights=eos[real], minlength=n)[1:]
    present = np.bincount(example[real], minlength=n)[1:] > 0
    per_example, eos_count = per_example[present], eos_count[present]
    fewest = int(per_example.min()) if per_example.size else 0
    measured = {
        "examples": int(present.sum()),
        "fewest_supervised_tokens": fewest,
        "first_example_fewest": int(np.flatnonzero(present)[per_example.argmin()] + 1)
        if present.any()
        else 0,
        "examples_without_eos": int((eos_count == 0).sum()),
        "unsupervised_eos": int((eos & ~supervised & real & ~followed).sum()),
        "prompt_eos": int((eos & ~supervised & real & followed).sum()),
        "model_template": model_template,
        "padding_supervised": int(supervised[~real].sum()),
        "opening_supervised": int((supervised & opens & real).sum()),
    }
    return measure("GATE-SFT-001", measured, holds="every example is supervised, its EOS included")


def _supervised_after(example: np.ndarray, supervised: np.ndarray) -> np.ndarray:
    """Whether a supervised position of the same example comes after each position."""
    later = np.zeros(len(example), dtype=bool)
    if len(example) > 1:
        # A supervised position's example, carried backwards: the last one at or after each position.
        marks = np.where(supervised, example, 0)[::-1]
        index = np.where(marks > 0, np.arange(len(marks)), -1)
        last = np.maximum.accumulate(index)
        carried = np.where(last >= 0, marks[np.maximum(last, 0)], 0)[::-1]
        later[:-1] = carried[1:] == example[:-1]
    return later


@gate_require(
    "GATE-SFT-001",
    lambda tokens, labels, eos_id, model_template: supervision_outcome(
        tokens, labels, eos_id, model_template
    ),
)
def check_supervision(
    tokens: np.ndarray, labels: np.ndarray, eos_id: int, model_template: bool = False
) -> None:
    """Refuse data in which an example teaches nothing, or never teaches the model to stop."""


def packing_outcome(labels: np.ndarray, lengths: list[int], pack_len: int) -> Outcome:
    """GATE-SFT-001's check packed, on the tables as written: the windows they hold ((length − 1) /
    pack_len) and their length, and where each example starts (its first position, by the example
    numbers of `labels`), against the greedy packing of the examples' `lengths` (contracts.packing)."""
    rule = greedy_packing(lengths, pack_len)
    spans = _example_spans(labels)
    written = [spans[n][0] if n in spans else -1 for n in range(1, len(lengths) + 1)]
    measured = {
        "windows_written": (len(labels) - 1) // pack_len,
        "windows_packed": rule.windows,
        "tokens_written": len(labels),
        "tokens_packed": rule.tokens,
        "examples_misplaced": sum(1 for a, b in zip(written, rule.starts, strict=True) if a != b),
    }
    return measure(
        "GATE-SFT-001", measured, holds=f"the {len(lengths)} examples are packed as the greedy rule packs"
    )


@gate_require(
    "GATE-SFT-001",
    lambda labels, lengths, pack_len: packing_outcome(labels, lengths, pack_len),
)
def check_packing(labels: np.ndarray, lengths: list[int], pack_len: int) -> None:
    """Refuse tables whose windows are not the greedy packing of their examples (contracts.packing)."""


def markers_outcome(assistant_turns: int, markers_missing: int) -> Outcome:
    """GATE-SFT-002's measurement: assistant turns whose marker ids the tokenized text did not hold."""
    measured = {"assistant_turns": assistant_turns, "markers_missing": markers_missing}
    return measure("GATE-SFT-002", measured, holds=f"the marker was found in all {assistant_turns} turns")


@gate_require(
    "GATE-SFT-002", lambda assistant_turns, markers_missing: markers_outcome(assistant_turns, markers_missing)
)
def check_markers(assistant_turns: int, markers_missing: int) -> None:
    """Refuse a template whose assistant marker is lost in tokenization: an error, never a dropped example."""


def supervised_runs(supervised: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of supervised positions, in order."""
    edges = np.diff(np.concatenate([[0], supervised.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _example_spans(labels: np.ndarray) -> dict[int, tuple[int, int]]:
    """(start, end) of each example number's positions: an example is packed whole, in one piece."""
    at = np.flatnonzero(examples_of(labels) > 0)
    numbers = examples_of(labels)[at]
    firsts = np.flatnonzero(np.diff(numbers, prepend=-1) != 0)
    lasts = np.append(firsts[1:], len(at)) - 1
    return {int(numbers[f]): (int(at[f]), int(at[last]) + 1) for f, last in zip(firsts, lasts, strict=True)}


def stored_example_keys(tokens: np.ndarray, labels: np.ndarray, tokenizer: Tokenizer) -> list[bytes]:
    """The key of every example of packed tables as they are written (GATE-DATA-005's check
    `stored`): its positions' ids decoded run by run of supervision (contracts.split.stored_example_key),
    a pair's padding between its rows left out, in example order."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    numbers, supervised = examples_of(labels), supervised_of(labels)
    keys = []
    for number, (lo, hi) in sorted(_example_spans(labels).items()):
        mine = numbers[lo:hi] == number
        ids, marks = tokens[lo:hi][mine], supervised[lo:hi][mine]
        cuts = np.flatnonzero(np.diff(marks)) + 1
        runs = [
            (bool(mark[0]), tokenizer.decode(run.tolist()))
            for run, mark in zip(np.split(ids, cuts), np.split(marks, cuts), strict=True)
        ]
        keys.append(stored_example_key(runs))
    return keys


def round_trip(tokenizer: Tokenizer, text: str) -> str:
    """`text` as the tokenizer gives it back: the decoding of its encoding. A tokenizer that
    normalises (lower-cases, writes spaces as "▁") returns its normal form, not the text."""
    return tokenizer.decode(tokenizer.encode(text))


def turn_verdict(
    turn: np.ndarray, supervised: int, expected: TurnText, tokenizer: Tokenizer
) -> tuple[str, bool]:
    """One assistant turn's ids as packed (its last `supervised` supervised) against its text:
    `held`, `mismatched` (the supervision does not start where the text after the marker does, or
    does not end with the EOS) or `unjudged` (the ids decode neither to the turn's text nor to the
    tokenizer's round trip of it); and whether it was judged against the round trip (a tokenizer
    that normalises: then the part before the supervision must decode to the round trip of the
    text through the marker)."""
    before, text, ends_with_eos = expected
    if ends_with_eos and turn[-1] != tokenizer.eot_id:
        return "mismatched", False
    whole = tokenizer.decode(turn[:-1] if ends_with_eos else turn)
    by_round_trip = whole != before + text
    if by_round_trip and whole != round_trip(tokenizer, before + text):
        return "unjudged", False
    seen = round_trip(tokenizer, before) if by_round_trip else before
    held = tokenizer.decode(turn[: len(turn) - supervised]) == seen
    return "held" if held else "mismatched", by_round_trip


def turns_outcome(
    tokens: np.ndarray, labels: np.ndarray, texts: Sequence[list[TurnText]], tokenizer: Tokenizer
) -> Outcome:
    """GATE-SFT-001's check of the assistant turns: example k (from 1) of the tables against
    `texts[k - 1]`, its turns as text. The j-th run of supervised tokens of an example is its j-th
    turn's, and the turn's ids run from the end of the run before to the end of its own
    (`turn_verdict`); an example with another number of runs than turns mismatches in all of them.
    A turn of a tokenizer that normalises is judged against the tokenizer's round trip of its text
    (counted in `turns_by_round_trip` as well); one whose ids decode to neither its text nor that
    cannot be judged by text and is counted apart."""
    tokens, supervised = np.asarray(tokens), supervised_of(labels)
    spans = _example_spans(labels)
    verdicts = {"held": 0, "mismatched": 0, "unjudged": 0, "by round trip": 0}
    first: dict[str, Any] | None = None
    for number, turns in enumerate(texts, start=1):
        lo, hi = spans.get(number, (0, 0))
        ids, runs = tokens[lo:hi], supervised_runs(supervised[lo:hi])
        found = [("mismatched", False)] * len(turns)
        if len(runs) == len(turns):
            starts = [0] + [end for _, end in runs[:-1]]
            found = [
                turn_verdict(ids[start:end], end - begin, expected, tokenizer)
                for start, (begin, end), expected in zip(starts, runs, turns, strict=True)
            ]
        for verdict, by_round_trip in found:
            verdicts[verdict] += 1
            verdicts["by round trip"] += by_round_trip
        missed = [i for i, (verdict, _) in enumerate(found) if verdict == "mismatched"]
        if first is None and missed:
            first = {"example": number, "turn": missed[0] + 1, "supervised_runs": len(runs)}
    measured = {
        "turns_held": verdicts["held"],
        "turns_mismatched": verdicts["mismatched"],
        "turns_unjudged": verdicts["unjudged"],
        "turns_by_round_trip": verdicts["by round trip"],
        **({"first_mismatch": first} if first else {}),
    }
    return measure("GATE-SFT-001", measured, holds="each assistant turn supervises its content and EOS")


@gate_require(
    "GATE-SFT-001",
    lambda tokens, labels, texts, tokenizer: turns_outcome(tokens, labels, texts, tokenizer),
)
def check_turns(
    tokens: np.ndarray, labels: np.ndarray, texts: Sequence[list[TurnText]], tokenizer: Tokenizer
) -> None:
    """Refuse tables in which an assistant turn supervises other tokens than its content and EOS."""


def _in_order(text: str, pieces: Sequence[str]) -> bool:
    """Whether every piece appears in `text`, each after the one before it."""
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def _gives_back(tokenizer: Tokenizer, texts: Sequence[str]) -> bool:
    """Whether the tokenizer gives `texts` back when each is encoded apart and the ids are decoded
    together, as a rendering encodes its pieces apart: a byte or byte-level tokenizer does, one
    that normalises (lower-cases, marks the start of every piece with a space) does not."""
    ids = [i for text in texts for i in tokenizer.encode(text)]
    return tokenizer.decode(ids) == "".join(texts)


def example_verdict(ids: np.ndarray, expected: ExampleText, tokenizer: Tokenizer) -> str:
    """One packed example's ids against its text: `rendered` when its pieces between EOS ids decode
    to the example's whole text; for a tokenizer that does not give its messages back (it
    normalises), `by_content` when every message's content, as the tokenizer gives it back, appears
    in order; else `misrendered`. A tokenizer that gives them back is judged by the whole text
    alone: a message, or the text around it, missing from the ids is misrendered, never unjudged."""
    whole, contents = expected
    cuts = np.flatnonzero(np.asarray(ids) == tokenizer.eot_id) + 1
    decoded = "".join(tokenizer.decode(piece) for piece in np.split(np.asarray(ids), cuts) if piece.size)
    if decoded == whole:
        return "rendered"
    if _gives_back(tokenizer, contents):
        return "misrendered"
    given_back = [round_trip(tokenizer, content).strip() for content in contents]
    return "by_content" if _in_order(decoded, [c for c in given_back if c]) else "misrendered"


def example_verdicts(
    tokens: np.ndarray, labels: np.ndarray, texts: Sequence[ExampleText], tokenizer: Tokenizer
) -> list[str]:
    """Each example k (from 1) of the tables against `texts[k - 1]` (`example_verdict`), in order;
    an example the tables do not hold is misrendered."""
    tokens, spans = np.asarray(tokens), _example_spans(labels)
    verdicts = []
    for number, expected in enumerate(texts, start=1):
        lo, hi = spans.get(number, (0, 0))
        verdicts.append(example_verdict(tokens[lo:hi], expected, tokenizer) if hi > lo else "misrendered")
    return verdicts


def rendering_outcome(
    tokens: np.ndarray, labels: np.ndarray, texts: Sequence[ExampleText], tokenizer: Tokenizer
) -> Outcome:
    """GATE-SFT-001's check of whole examples: example k (from 1) of the tables, every id of it (the
    unsupervised prompt too), against `texts[k - 1]`, its messages as text (`example_verdict`).
    The supervision check reads only what follows each marker, and the turn check each turn
    against the same grouping of turns the rendering used; this one reads every message of the
    conversation, so a turn the rendering dropped (a system prompt) shows."""
    verdicts = {"rendered": 0, "by_content": 0, "misrendered": 0}
    first = 0
    for number, verdict in enumerate(example_verdicts(tokens, labels, texts, tokenizer), start=1):
        verdicts[verdict] += 1
        first = first or (number if verdict == "misrendered" else 0)
    measured = {
        "examples_rendered": verdicts["rendered"],
        "examples_by_content": verdicts["by_content"],
        "examples_misrendered": verdicts["misrendered"],
        **({"first_misrendered": first} if first else {}),
    }
    return measure("GATE-SFT-001", measured, holds="every example's ids are all of its messages")


@gate_require(
    "GATE-SFT-001",
    lambda tokens, labels, texts, tokenizer: rendering_outcome(tokens, labels, texts, tokenizer),
)
def check_rendering(
    tokens: np.ndarray, labels: np.ndarray, texts: Sequence[ExampleText], tokenizer: Tokenizer
) -> None:
    """Refuse tables in which an example's ids are not every message of its conversation."""


def pair_windows(tokens: np.ndarray, labels: np.ndarray, pair_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The pair windows of packed preference tables (every window of `pair_len` tokens, the token
    the last one reads past left out), (windows, pair_len) each: what `boundary_outcome` reads."""
    windows = (len(tokens) - 1) // pair_len
    cut = windows * pair_len
    shape = (windows, pair_len)
    return np.asarray(tokens)[:cut].reshape(shape), np.asarray(labels)[:cut].reshape(shape)


def written_text(tokenizer: Tokenizer, ids: list[int]) -> str:
    """`ids` as the text they were encoded from, each special's id (an end-of-text a chat-format
    prompt wrote, stack.data.sft_template.encode_turn) as its text, which `decode` drops."""
    special = {i: text for text, i in tokenizer.special_tokens.items()}
    array = np.asarray(ids, dtype=np.int64)
    pieces = np.split(array, np.flatnonzero(np.isin(array, list(special))))
    return "".join(
        special.get(int(piece[0]), "") + tokenizer.decode(piece[int(int(piece[0]) in special) :].tolist())
        for piece in pieces
        if piece.size
    )


def _held(turns: list[tuple[str, str]] | None, identities: set[int]) -> bool:
    """Whether `turns` are a pair the data holds: its identity's key (the index's) in `identities`."""
    return turns is not None and index_row(example_identity(turns), "train")[0] in identities


def pair_verdict(rows: np.ndarray, scored: np.ndarray, identities: set[int], tokenizer: Tokenizer) -> str:
    """One pair's two rows read at their masks (contracts.pair_rows.pair_turns_at_mask): `held` when
    they give back a pair the data holds; else `off` (the mask is off the boundary) when the
    tokenizer is the stack's own, which gives every text back, or when the rows cut one token
    before or after the mask give back a pair the data holds; else `unjudged`: a Hugging Face
    tokenizer may normalise (lower-case, mark spaces), and its decoding is then no pair's text."""
    eot = tokenizer.eot_id
    decode = functools.partial(written_text, tokenizer)
    if _held(pair_turns_at_mask(list(rows), list(scored), eot, decode), identities):
        return "held"
    bounds = [row_bounds(marks, ids, eot) for ids, marks in zip(rows, scored, strict=True)]
    known = [b for b in bounds if b is not None]
    if len(known) < len(bounds) or not isinstance(tokenizer, PretrainedTokenizer):
        return "off"
    cuts = [[(first + shift, last) for first, last in known] for shift in (-1, 1)]
    return (
        "off"
        if any(_held(pair_turns_at(list(rows), cut, decode), identities) for cut in cuts)
        else "unjudged"
    )


def boundary_outcome(
    windows: np.ndarray, labels: np.ndarray, identities: set[int], tokenizer: Tokenizer
) -> Outcome:
    """GATE-SFT-001's check boundary: every pair window (a row of `windows`, its chosen row then its
    rejected row, `labels` its label-file values) read at its mask (`pair_verdict`), against the
    pairs the DATA_DIR holds: the tables at prepare (`pair_windows`), each batch a DPO loss reads."""
    windows, labels = np.asarray(windows), np.asarray(labels)
    width = windows.shape[1] // 2
    rows = windows[:, : 2 * width].reshape(-1, 2, width)
    scored = supervised_of(labels[:, : 2 * width]).reshape(-1, 2, width)
    verdicts = [pair_verdict(r, s, identities, tokenizer) for r, s in zip(rows, scored, strict=True)]
    off = [i for i, verdict in enumerate(verdicts, start=1) if verdict == "off"]
    measured = {
        "pairs_held": verdicts.count("held"),
        "pairs_off_boundary": len(off),
        "pairs_unjudged": verdicts.count("unjudged"),
        **({"first_off_boundary": off[0]} if off else {}),
    }
    return measure(
        "GATE-SFT-001", measured, holds="each pair's mask scores its completions and their end-of-text"
    )


@gate_require(
    "GATE-SFT-001",
    lambda windows, labels, identities, tokenizer: boundary_outcome(windows, labels, identities, tokenizer),
)
def check_boundary(
    windows: np.ndarray, labels: np.ndarray, identities: set[int], tokenizer: Tokenizer
) -> None:
    """Refuse preference pairs whose mask is off the prompt/completion boundary of their own text."""
