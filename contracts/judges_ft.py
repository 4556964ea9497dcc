"""Judges of the fine-tuning evaluation gates (GATE-FT-…): `stack evalmatrix` and `stack memorization`.

Pure functions of what the command measured and the gate's thresholds, like every judge in
`contracts.judges`; imported at the end of that module so they register with the others.
"""

from __future__ import annotations

from typing import Any

from contracts.judges import Malformed, Measured, Thresholds, count, items, judges, number

# What GATE-FT-003's message tells the user to change: the usual causes of memorisation.
MEMORISATION_REMEDIES = (
    "train fewer steps, use a lower LoRA rank or learning rate, add dropout, or deduplicate the training data"
)


@judges("GATE-FT-001", needs=("few_shot_bpb", "adapter_bpb"))
def _adapter_beats_few_shot(m: Measured, t: Thresholds) -> list[str]:
    few_shot, adapter = number(m, "few_shot_bpb"), number(m, "adapter_bpb")
    improvement = few_shot - adapter
    if improvement >= t["min_bpb_improvement"]:  # NaN compares false: a NaN score fails
        return []
    return [
        f"the adapter's row scores {adapter:.4f} bits per byte against few-shot's {few_shot:.4f} "
        f"(better by {improvement:.4f}, at least {t['min_bpb_improvement']:g} wanted): the adapter was "
        "not worth training over prompting the base model with examples"
    ]


def _ids(value: Any, where: str) -> list[str]:
    """A row's item ids: a list of strings."""
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise Malformed(f"{where} is {value!r}, not a list of item ids")
    return value


def _row_problems(rows: Any) -> list[str]:
    """Every row scores the first row's ids, in its order, each once."""
    if not isinstance(rows, dict) or not rows:
        raise Malformed(f"'rows' is {rows!r}, not an object of row name → item ids")
    named = {name: _ids(ids, f"row {name!r}") for name, ids in rows.items()}
    first_name, first = next(iter(named.items()))
    problems = []
    if not first:
        problems.append(f"row {first_name} scored no item")
    repeated = sorted({i for i in first if first.count(i) > 1})
    if repeated:
        problems.append(f"row {first_name} scores items more than once: {', '.join(repeated[:5])}")
    for name, ids in named.items():
        if ids != first:
            missing = [i for i in first if i not in ids]
            extra = [i for i in ids if i not in first]
            problems.append(
                f"row {name} does not score row {first_name}'s items in order "
                f"(missing {missing[:5]}, extra {extra[:5]}, {len(ids)} against {len(first)})"
            )
    return problems


def _leak_problems(draws: list[Any]) -> list[str]:
    """No few-shot example placed before an item is that item, by id or by content digest."""
    problems = []
    for draw in draws:
        if not isinstance(draw, dict) or not isinstance(draw.get("item"), str):
            raise Malformed(f"few-shot draw {draw!r} names no item")
        item, digest = draw["item"], draw.get("item_sha256")
        for example in items(draw, "examples"):
            if not isinstance(example, dict) or not isinstance(example.get("id"), str):
                raise Malformed(f"few-shot example {example!r} of item {item} has no id")
            if example["id"] == item:
                problems.append(f"item {item} is scored with itself as a few-shot example (by id)")
            elif digest is not None and example.get("sha256") == digest:
                problems.append(
                    f"item {item} is scored with its own prompt and completion as a few-shot example "
                    f"(example {example['id']}, same sha256)"
                )
    return problems


@judges("GATE-FT-002", needs=("rows+", "few_shot"))
def _same_items_no_leak(m: Measured, _t: Thresholds) -> list[str]:
    return _row_problems(m.get("rows")) + _leak_problems(items(m, "few_shot"))


def _overlaps(m: Measured, key: str, longest: int) -> list[int]:
    """Per-example verbatim run lengths: counts no longer than the continuation they were found in."""
    values = items(m, key)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= longest for v in values):
        raise Malformed(f"{key!r} holds values that are not token counts from 0 to {longest}")
    return values


def reproduced(runs: list[int], least: int) -> int:
    """How many examples' longest verbatim run reaches `least` tokens: the count GATE-FT-003 rates."""
    return sum(1 for run in runs if run >= least)


@judges("GATE-FT-003", needs=("continuation_tokens", "tuned_overlaps+", "base_overlaps"))
def _no_recitation(m: Measured, t: Thresholds) -> list[str]:
    continuation = count(m, "continuation_tokens")
    tuned = _overlaps(m, "tuned_overlaps", continuation)
    base = _overlaps(m, "base_overlaps", continuation)
    least = int(t["min_verbatim_tokens"])
    if continuation < least:
        return [
            f"a continuation of {continuation} tokens cannot hold a verbatim run of {least}; generate more"
        ]
    if not tuned:
        return ["no training example was measured"]
    count_tuned = reproduced(tuned, least)
    rate = count_tuned / len(tuned)
    if rate <= t["max_rate"]:
        return []
    return [
        f"the fine-tuned model reproduces {count_tuned} of {len(tuned)} training examples verbatim for "
        f"{least}+ tokens (rate {rate:.3f} > max_rate {t['max_rate']:g}; the base model "
        f"{reproduced(base, least)} of {len(base)}): {MEMORISATION_REMEDIES}"
    ]
