"""A figure in the README or the docs that cites a record is read from it: an edited figure is a
violation.

A figure is cited as a Markdown link to the record whose fragment says which of its numbers the
figure is, so a reader clicks through to the evidence and the checker derives the number again:

    [1.017×](evidence/runs/bench-train-20261127T075906/metadata.json#metrics.ratio)
    [423 k](evidence/runs/gpt2-deterministic-true/metadata.json#median(tokens_per_s))
    [11 %](evidence/runs/ON/metadata.json#overhead(OFF:median(tokens_per_s),median(tokens_per_s)))

A fragment is a quantity of the linked record: a field by its dotted path (a list's item by its
index: `metrics.modes.0.steps`), or `median(KEY)`, the median of KEY over the step lines of the
metrics.jsonl filed beside it (`median(KEY,18..29)`: over steps 18 to 29 only). A figure derived
from several quantities names one of the benchmarks' formulas (contracts/derive/benchmarks.py:
`quotient`, `overhead`) over quantities, each of the linked record or of another
(`RUN:QUANTITY`). The figure's unit scales it: `%` is a hundredth, `k` a thousand, `M` a million,
`G` a billion (`×` and a bare number are the value itself); and a figure written with d decimals
stands for the value rounded to d decimals, so it must lie within half a unit of its last digit of
the value.

The README links into the ledger itself. A page of the docs links to the copy of the record the
site build publishes (`reference/evidence/RUN/metadata.json`, relative to the page: the strict
build refuses a link out of docs/), and the figure is read from the ledger's record all the same.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.derive.benchmarks import FLOAT_SLACK, overhead, quotient
from contracts.evidence import EVIDENCE_FILE, LEDGER_DIR

# The start of a figure cited by a link into the ledger: the figure and the run; its fragment
# runs to the parenthesis that closes the link (`_fragment`).
FIGURE_LINK_RE = re.compile(
    r"\[(?P<figure>[^\]]+)\]\((?:evidence/runs|(?:\.\./)*reference/evidence)/(?P<run>[A-Za-z0-9][A-Za-z0-9._-]*)/"
    + re.escape(EVIDENCE_FILE)
    + "#"
)
# A figure: a signed number, its separators and its unit.
FIGURE_RE = re.compile(r"^(?P<sign>[-−]?)(?P<number>\d[\d,]*(?:\.\d+)?)\s*(?P<unit>%|k|M|G|×)?$")
UNITS = {"%": 100.0, "k": 1e-3, "M": 1e-6, "G": 1e-9, "×": 1.0, None: 1.0}
FORMULAS: dict[str, Callable[..., float]] = {"quotient": quotient, "overhead": overhead}
MEDIAN_RE = re.compile(r"^median\((?P<key>\w+)(?:,(?P<first>\d+)\.\.(?P<last>\d+))?\)$")
FORMULA_RE = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)$")


class Unreadable(Exception):
    """A citation whose record, field or formula cannot be read: named as the problem."""


def figure_problems(text: str, root: Path) -> list[tuple[int, str]]:
    """(line number, problem) for every figure of `text` that its cited record does not give."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for match in FIGURE_LINK_RE.finditer(line):
            problem = _problem(match["figure"], match["run"], _fragment(line, match.end()), root)
            if problem is not None:
                problems.append((lineno, problem))
    return problems


def _fragment(line: str, start: int) -> str:
    """The fragment from `start` to the parenthesis that closes its link (it may hold parentheses)."""
    depth = 0
    for index in range(start, len(line)):
        depth += (line[index] == "(") - (line[index] == ")")
        if depth < 0:
            return line[start:index]
    return line[start:]


def _problem(figure: str, run: str, fragment: str, root: Path) -> str | None:
    cited = f"evidence/runs/{run}#{fragment}"
    written = FIGURE_RE.match(figure.strip())
    if written is None:
        return f"cites {cited} for {figure!r}, which is not a figure (a number and its unit: %, k, M, G, ×)"
    try:
        value = _quantity(fragment, run, root)
    except Unreadable as exc:
        return f"cites {cited} for {figure!r}, but {exc}"
    number = float(written["number"].replace(",", "")) * (-1 if written["sign"] else 1)
    shown = value * UNITS[written["unit"]]
    decimals = len(written["number"].partition(".")[2])
    if abs(number - shown) <= 0.5 * 10.0**-decimals + FLOAT_SLACK * max(abs(shown), 1.0):
        return None
    return f"says {figure!r}, but {cited} gives {shown:.6g}{written['unit'] or ''}"


def _quantity(fragment: str, run: str, root: Path) -> float:
    """The number a fragment names of record `run` (module docstring)."""
    formula = FORMULA_RE.match(fragment)
    if formula is not None and formula["name"] in FORMULAS:
        args = [_argument(arg, run, root) for arg in _split_arguments(formula["args"])]
        try:
            return FORMULAS[formula["name"]](*args)
        except (TypeError, ZeroDivisionError) as exc:
            raise Unreadable(f"{formula['name']} of its quantities cannot be taken ({exc})") from exc
    median = MEDIAN_RE.match(fragment)
    if median is not None:
        steps = range(int(median["first"]), int(median["last"]) + 1) if median["first"] else None
        return _median(run, median["key"], root, steps)
    return _number(_field(_record(run, root), fragment), fragment)


def _argument(argument: str, run: str, root: Path) -> float:
    """A formula's argument: a quantity of the linked record, or of another (`RUN:QUANTITY`)."""
    other, _, quantity = argument.rpartition(":")
    return _quantity(quantity, other or run, root)


def _split_arguments(text: str) -> list[str]:
    """A formula's arguments, split at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def _record(run: str, root: Path) -> dict[str, Any]:
    path = root / LEDGER_DIR / run / EVIDENCE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unreadable(f"the ledger holds no readable record {run}") from exc


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            raise Unreadable(f"its record has no field {path}")
    return data


def _median(run: str, key: str, root: Path, steps: range | None) -> float:
    """The median of `key` over the step lines (those of `steps`, where given) of the run's filed
    metrics.jsonl."""
    path = root / LEDGER_DIR / run / "metrics.jsonl"
    try:
        lines = [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines() if raw.strip()]
    except (OSError, ValueError) as exc:
        raise Unreadable(f"{run} files no readable metrics.jsonl") from exc
    values = [
        line[key]
        for line in lines
        if line.get("type") == "step" and key in line and (steps is None or line.get("step") in steps)
    ]
    if not values:
        raise Unreadable(
            f"{run}'s step lines log no {key}"
            + (f" at steps {steps.start}..{steps.stop - 1}" if steps else "")
        )
    return _number(statistics.median(values), f"median({key})")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unreadable(f"its {what} is {value!r}, not a number")
    return float(value)
