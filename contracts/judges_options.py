"""The judge of GATE-ARCH-013 (spec/gates/arch.yaml): every advertised option runs every path.

The measured matrix is what `stack options-matrix` saw: per option and path the cell's outcome
(ok, refused, gate, crashed or missing) and, for every cell that is not ok, the one line the
command ended with. The judge decides from the matrix alone which cells failed: a refusal passes
only on a path the matrix says may refuse, and a cell the matrix should hold but does not is
missing.
"""

from __future__ import annotations

from typing import Any

from contracts.judges import Malformed, Measured, Thresholds, items, judges

OUTCOMES = ("ok", "refused", "gate", "crashed", "missing")
SHOWN = 5  # failed or missing cells named in a problem before "and N more"


def _paths(m: Measured) -> dict[str, bool]:
    """path name → whether it may refuse an option."""
    paths = {}
    for entry in items(m, "paths"):
        if not isinstance(entry, dict) or not isinstance(entry.get("may_refuse"), bool):
            raise Malformed(f"a path is {entry!r}, not {{name, may_refuse}}")
        paths[str(entry.get("name"))] = entry["may_refuse"]
    return paths


def _outcome(cells: Any, option: str, path: str) -> str | None:
    row = cells.get(option) if isinstance(cells, dict) else None
    outcome = row.get(path) if isinstance(row, dict) else None
    if outcome is not None and outcome not in OUTCOMES:
        raise Malformed(f"cell {option}/{path} is {outcome!r}, not one of {', '.join(OUTCOMES)}")
    return outcome


def _named(cells: list[str]) -> str:
    more = f" and {len(cells) - SHOWN} more" if len(cells) > SHOWN else ""
    return "; ".join(cells[:SHOWN]) + more


@judges("GATE-ARCH-013", needs=("options+", "paths+", "messages"))
def _every_option_every_path(m: Measured, t: Thresholds) -> list[str]:
    options, paths = [str(o) for o in items(m, "options")], _paths(m)
    cells, messages = m.get("cells"), m.get("messages")
    if not isinstance(messages, dict):
        raise Malformed(f"'messages' is {messages!r}, not a map of cell to its last line")
    problems = []
    if len(options) < t["min_options"]:
        problems.append(f"the matrix lists {len(options)} option(s), fewer than {t['min_options']:g}")
    if len(paths) < t["min_paths"]:
        problems.append(f"the matrix lists {len(paths)} path(s), fewer than {t['min_paths']:g}")
    failed, missing = [], []
    for option in options:
        for path, may_refuse in paths.items():
            name = f"{option}/{path}"
            outcome, message = _outcome(cells, option, path), str(messages.get(name, ""))
            if outcome is None or outcome == "missing":
                missing.append(f"{name}: {message if outcome else 'no cell recorded'}")
            elif outcome in ("gate", "crashed"):
                failed.append(f"{name} {outcome}: {message}")
            elif outcome == "refused" and not may_refuse:
                failed.append(f"{name} refused where it may not: {message}")
    if len(failed) > t["max_failed_cells"]:
        problems.append(f"{len(failed)} cell(s) failed: {_named(failed)}")
    if len(missing) > t["max_missing_cells"]:
        problems.append(f"{len(missing)} cell(s) not run: {_named(missing)}")
    return problems
