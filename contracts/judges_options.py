"""The judge of GATE-ARCH-013 (spec/gates/arch.yaml): every option, alone, in pairs and all together,
runs every command that reads or writes a model.

The measured matrix is what `stack options-matrix` saw: the options, the attention paths, the
commands (each with the refusals the matrix declares for it and the command whose output it
reads), the depth of every model it trained, and per model and command the cell's outcome (ok,
refused, gate, crashed, differs, skipped or missing) with the one line the command ended with.
From that alone the judge decides each cell (`cell_verdicts`):

    pass      ok, and no refusal is declared for this model
    refused   refused in one line holding a declared refusal's text, for a model the refusal
              applies to (one with its `option`, or one that `lacks` its option); or skipped
              because the command whose output it reads refused so
    fail      crashed, fired a gate, differs (exit 0, but its result is not the one the matrix
              checks it against: a silent wrong result), refused otherwise than declared, or ran
              where the matrix declares a refusal (the declaration no longer tells the truth)
    missing   not run: no cell recorded, or a command it needs did not complete

The models are the dense one, each option alone, every pair, and all options together
(`combinations`), then the dense model on each other attention path (`paths`, a row named for
the path, which a refusal names as its option): a model the record does not hold is a row of
missing cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.judges import Malformed, Measured, Thresholds, count, items, judges
from contracts.wording import first_few

OUTCOMES = ("ok", "refused", "gate", "crashed", "differs", "skipped", "missing")
DENSE = "dense"
JOIN = "+"
SHOWN = 5  # failed or missing cells named in a problem before "and N more"


def combinations(options: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, options) of every model the matrix runs: dense, each option, every pair, all together."""
    chosen: list[tuple[str, ...]] = [()]
    chosen += [(o,) for o in options]
    chosen += list(itertools.combinations(options, 2))
    chosen.append(tuple(options))
    unique = dict.fromkeys(chosen)  # with one or two options, "all" is already listed
    return [(JOIN.join(c) if c else DENSE, c) for c in unique]


def rows(options: list[str], paths: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, what it holds) of every model of the matrix: the combinations, then each path's row."""
    return [*combinations(options), *((path, (path,)) for path in paths if path not in options)]


def applies(refusal: Mapping[str, Any], held: tuple[str, ...]) -> bool:
    """Whether a declared refusal is for a model holding `held`: one with its `option`, or one that
    `lacks` its option."""
    if isinstance(refusal.get("option"), str):
        return refusal["option"] in held
    return refusal.get("lacks") not in held


@dataclass(frozen=True)
class CellVerdict:
    """What the matrix says of one cell, and why (a refusal's reason, a failure's problem)."""

    verdict: str  # pass | refused | fail | missing
    note: str


@dataclass(frozen=True)
class _Command:
    name: str
    after: str | None
    refuses: list[Mapping[str, Any]]


def _commands(m: Measured) -> list[_Command]:
    commands = []
    for entry in items(m, "commands"):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise Malformed(f"a command is {entry!r}, not {{name, after, refuses}}")
        refuses = entry.get("refuses", [])
        if not isinstance(refuses, list) or not all(
            isinstance(r, Mapping)
            and all(isinstance(r.get(k), str) for k in ("reason", "says"))
            and sum(isinstance(r.get(k), str) for k in ("option", "lacks")) == 1
            for r in refuses
        ):
            raise Malformed(
                f"{entry['name']}: refuses is {refuses!r}, not a list of {{option or lacks, reason, says}}"
            )
        after = entry.get("after")
        commands.append(_Command(entry["name"], after if isinstance(after, str) else None, refuses))
    return commands


def _outcome(cells: Any, model: str, command: str) -> str | None:
    row = cells.get(model) if isinstance(cells, Mapping) else None
    outcome = row.get(command) if isinstance(row, Mapping) else None
    if outcome is not None and outcome not in OUTCOMES:
        raise Malformed(f"cell {model}/{command} is {outcome!r}, not one of {', '.join(OUTCOMES)}")
    return outcome


def _cell(
    command: _Command, held: tuple[str, ...], outcome: str | None, message: str, prior: CellVerdict | None
) -> CellVerdict:
    """One cell's verdict (module docstring); `prior` is the verdict of the command it reads after."""
    declared = [r for r in command.refuses if applies(r, held)]
    if outcome is None:
        return CellVerdict("missing", "no cell recorded")
    if outcome == "missing":
        return CellVerdict("missing", message)
    if outcome == "ok":
        if declared:
            reasons = "; ".join(f"{r.get('option') or 'no ' + r['lacks']}: {r['reason']}" for r in declared)
            return CellVerdict(
                "fail", f"ran, where the matrix declares a refusal ({reasons}); update the matrix"
            )
        return CellVerdict("pass", "")
    if outcome == "refused":
        matched = [r for r in declared if r["says"] in message]
        if matched:
            return CellVerdict("refused", matched[0]["reason"])
        if declared:
            return CellVerdict(
                "fail", f"refused otherwise than declared ({declared[0]['says']!r}): {message}"
            )
        return CellVerdict("fail", f"refused where the matrix declares no refusal: {message}")
    if outcome == "skipped":
        if prior is not None and prior.verdict == "refused":
            return CellVerdict("refused", f"needs {command.after}, which refuses this model: {prior.note}")
        return CellVerdict(
            "fail", f"not run, though {command.after or 'nothing it needs'} refused as declared"
        )
    return CellVerdict("fail", f"{outcome}: {message}")


def cell_verdicts(m: Measured) -> dict[tuple[str, str], CellVerdict]:
    """(model, command) → the verdict of every cell the matrix should hold, in run order."""
    options = [str(o) for o in items(m, "options")]
    commands = _commands(m)
    cells, messages = m.get("cells"), m.get("messages")
    if not isinstance(messages, Mapping):
        raise Malformed(f"'messages' is {messages!r}, not a map of cell to its last line")
    verdicts: dict[tuple[str, str], CellVerdict] = {}
    for model, held in rows(options, paths_of(m)):
        for command in commands:
            outcome = _outcome(cells, model, command.name)
            message = str(messages.get(f"{model}/{command.name}", ""))
            prior = verdicts.get((model, command.after)) if command.after else None
            verdicts[(model, command.name)] = _cell(command, held, outcome, message, prior)
    return verdicts


def paths_of(m: Measured) -> list[str]:
    """The attention paths the matrix trains a row on (none in a record made before spec 1.11.0)."""
    paths = m.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise Malformed(f"'paths' is {paths!r}, not a list of attention paths")
    return list(paths)


@judges("GATE-ARCH-013", needs=("options+", "commands+", "cells", "messages", "layers"))
def _every_option_every_command(m: Measured, t: Thresholds) -> list[str]:
    options, commands = items(m, "options"), _commands(m)
    problems = []
    if len(options) < t["min_options"]:
        problems.append(f"the matrix lists {len(options)} option(s), fewer than {t['min_options']:g}")
    if len(commands) < t["min_commands"]:
        problems.append(f"the matrix lists {len(commands)} command(s), fewer than {t['min_commands']:g}")
    if len(paths_of(m)) < t["min_paths"]:
        problems.append(
            f"the matrix trains {len(paths_of(m))} model(s) on another attention path, fewer than "
            f"{t['min_paths']:g}"
        )
    layers = m.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        problems.append("no trained model's depth is recorded")
    else:
        shallow = [
            f"{model} ({count(layers, model)})" for model in layers if count(layers, model) < t["min_layers"]
        ]
        if shallow:
            problems.append(f"models shallower than {t['min_layers']:g} layers: {', '.join(shallow)}")
    verdicts = cell_verdicts(m)
    failed = [f"{a}/{b}: {v.note}" for (a, b), v in verdicts.items() if v.verdict == "fail"]
    missing = [f"{a}/{b}: {v.note}" for (a, b), v in verdicts.items() if v.verdict == "missing"]
    if len(failed) > t["max_failed_cells"]:
        problems.append(f"{len(failed)} cell(s) failed: {first_few(failed, SHOWN, '; ')}")
    if len(missing) > t["max_missing_cells"]:
        problems.append(f"{len(missing)} cell(s) not run: {first_few(missing, SHOWN, '; ')}")
    return problems
