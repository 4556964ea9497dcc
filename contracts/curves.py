"""Which metrics.jsonl line gives which TensorBoard scalar, and the scalars read back held to the lines.

`train.tensorboard = true` mirrors every line the loop writes to metrics.jsonl into TensorBoard
event files (stack.train.tensorboard.Board), promising curves "from the same host values the line
holds". This module is that promise written out once: `line_scalars` is the rule of which line
gives which tag (the Board writes by it), and `mismatches` holds the scalars TensorBoard's own
reader finds in the event files to what the metrics lines give by the same rule, each at its
line's own `step`, both ways. The expected side is derived here from metrics.jsonl alone, so a
writer that counts lines instead of reading their step (round-11 mutant R179: train/loss at steps
2, 4, 5, 8, 9, 11 for 1..6, every gate passed) cannot move both sides. GATE-TRAIN-001's check
tensorboard judges the count this gives.

TensorBoard stores a scalar as float32: a value is compared at float32 (`float32`), nothing looser.
What TensorBoard shows of a (tag, step) written more than once is the last write, after a resume's
purge dropped what a dead process logged past the step resumed from; metrics.jsonl rolls those lines
back likewise, so its last line per (tag, step) is the one compared.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

# The step line's fields that are no curve: counters and identities.
NOT_CURVES = ("type", "step", "epoch", "batch_sha256")
EVAL_CURVES = ("heldout_loss", "heldout_stderr", "train_loss")

Scalar = tuple[str, int, float]  # (tag, step, value) as TensorBoard shows it


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
