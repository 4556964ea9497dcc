"""Which metrics.jsonl line gives which TensorBoard scalar and text, and what is read back held to the lines.

`train.tensorboard = true` mirrors every line the loop writes to metrics.jsonl into TensorBoard
event files (stack.train.tensorboard.Board), promising curves "from the same host values the line
holds". This module is that promise written out once: `line_scalars` is the rule of which line
gives which tag (the Board writes by it), and `mismatches` holds the scalars TensorBoard's own
reader finds in the event files to what the metrics lines give by the same rule, each at its
line's own `step`, both ways. The expected side is derived here from metrics.jsonl alone, so a
writer that counts lines instead of reading their step (train/loss at steps
2, 4, 5, 8, 9, 11 for 1..6, which every other gate lets pass) cannot move both sides. GATE-TRAIN-001's check
tensorboard judges the count this gives.

TensorBoard stores a scalar as float32: a value is compared at float32 (`float32`), nothing looser.
What TensorBoard shows of a (tag, step) written more than once is the last write, after a resume's
purge dropped what a dead process logged past the step resumed from; metrics.jsonl rolls those lines
back likewise, so its last line per (tag, step) is the one compared.

Texts likewise (`line_texts`, the Board's rule too): a sample line gives the text `samples`, its
generated texts each indented and joined by a blank line; an event line (any line but a step, an
evaluation or a sample) gives the text `events`, its type and its fields. Each is at the line's
step (a line without one: the last step before it), and `text_mismatches` holds the texts read back
to the lines', each written text once, both ways (a `samples` text
that keeps 1 of 3 texts, or an `events` text lost, passes every other gate).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# The step line's fields that are no curve: counters and identities.
NOT_CURVES = ("type", "step", "epoch", "batch_sha256")
EVAL_CURVES = ("heldout_loss", "heldout_stderr", "train_loss")

Scalar = tuple[str, int, float]  # (tag, step, value) as TensorBoard shows it
Text = tuple[str, int, str]  # (tag, step, text) as TensorBoard shows it
# The text tags the lines give, and the fields of an event line that are not its detail.
SAMPLES, EVENTS = "samples", "events"
TEXT_TAGS = (SAMPLES, EVENTS)
NOT_DETAIL = ("type", "step")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def line_scalars(kind: str, fields: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) of every scalar a metrics line of type `kind` gives: a step line every number
    but its counters under train/<name>, an evaluation its three losses under eval/, a sample its
    coherence score; other lines (events) give text only."""
    if kind == "step":
        return [(f"train/{k}", v) for k, v in fields.items() if k not in NOT_CURVES and _number(v)]
    if kind == "eval":
        return [(f"eval/{k}", fields[k]) for k in EVAL_CURVES if _number(fields.get(k))]
    if kind == "sample" and _number(fields.get("score")):
        return [("sample/coherence", fields["score"])]
    return []


def float32(value: float) -> float:
    """`value` as TensorBoard stores it: rounded to the nearest float32 (beyond its range, ±inf)."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def expected(lines: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], float]:
    """(tag, step) → the value metrics.jsonl's lines give it, each at the line's own `step` (the
    last line of a (tag, step) written twice); a line with no integer step gives no curve point."""
    points: dict[tuple[str, int], float] = {}
    for line in lines:
        step = line.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for tag, value in line_scalars(str(line.get("type")), line):
            points[(tag, step)] = float(value)
    return points


def shown(scalars: Iterable[Scalar]) -> dict[tuple[str, int], float]:
    """(tag, step) → the value TensorBoard shows: the last of the scalars read in file order."""
    return {(tag, int(step)): float(value) for tag, step, value in scalars}


def _same(read: float, given: float) -> bool:
    stored = float32(given)
    return read == stored or (math.isnan(read) and math.isnan(stored))


def mismatches(scalars: Iterable[Scalar], lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every (tag, step) where the scalars read back and the metrics lines disagree, in step order:
    a scalar no line gives, a line's number no scalar shows, or a value other than the line's at
    float32. [] = the curves are the lines'."""
    read, given = shown(scalars), expected(lines)
    problems = []
    for tag, step in sorted(read.keys() | given.keys(), key=lambda key: (key[1], key[0])):
        value, wanted = read.get((tag, step)), given.get((tag, step))
        if wanted is None:
            problems.append(f"{tag} at step {step} shows {value:.7g}, which no line gives")
        elif value is None:
            problems.append(f"{tag} at step {step} is missing (its line holds {wanted:.7g})")
        elif not _same(value, wanted):
            problems.append(f"{tag} at step {step} shows {value:.7g}, its line holds {wanted:.7g}")
    return problems


def line_texts(kind: str, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(tag, text) of every text a metrics line of type `kind` gives: a sample line its generated
    texts as `samples` (each indented four spaces, joined by a blank line), an event line `events`
    (its type, then each field but its step as name=value); a step or evaluation line none."""
    if kind == "sample":
        texts = fields.get("texts", [])
        return [(SAMPLES, "\n\n".join(f"    {text}".replace("\n", "\n    ") for text in texts))]
    if kind in ("step", "eval"):
        return []
    detail = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in NOT_DETAIL)
    return [(EVENTS, f"{kind}: {detail}")]


def expected_texts(lines: Iterable[Mapping[str, Any]]) -> Counter[Text]:
    """Every (tag, step, text) metrics.jsonl's lines give, each at its line's `step` (a line without
    an integer one: the last step before it, 0 at first), counted."""
    step, texts = 0, Counter[Text]()
    for line in lines:
        if isinstance(line.get("step"), int) and not isinstance(line.get("step"), bool):
            step = line["step"]
        for tag, text in line_texts(str(line.get("type")), line):
            texts[(tag, step, text)] += 1
    return texts


def text_mismatches(texts: Iterable[Text], lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every text read back that no line gives and every line's text not read back (each written
    text once), in step order. [] = the texts are the lines'."""
    read, given = Counter(texts), expected_texts(lines)
    extra = [(step, tag, text, "shows") for tag, step, text in (read - given).elements()]
    lost = [(step, tag, text, "is missing") for tag, step, text in (given - read).elements()]
    return [
        f"text {tag} at step {step} {what} {text[:60]!r}"
        + (", which no line gives" if what == "shows" else "")
        for step, tag, text, what in sorted(extra + lost)
    ]
