"""What a record's command lines asked of the configuration, held to the config.toml it cites.

A `--set section.key=value` on `run.argv` is what the user asked for, and config.toml is what the
run used; a resume may change a key again (its own `--set`, or a flag such as `--steps`), and
lists every key it changed under `metrics.resumes[].changed`. So each key a command line set
must hold, in config.toml, the value the last command line that touched it gave, or be a key a
later resume changed by other means. A config edited after the fact (steps, learning rate, a
coefficient) while the command line still says otherwise is caught here, without the code of
the record's commit: the value is parsed as `stack train` parses it (`stack.train.config`), and a
key config.toml leaves out holds its default there, as a resume reads it (an option at its default
is not saved: `stack.train.run.saved_value`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord
from contracts.reading import read_toml
from stack.train.config import parse_sets
from stack.train.run import saved_value

SET_FLAG = "--set"
CONFIG_FILE = "config.toml"
UNKNOWN = object()  # a key a resume changed by a flag other than --set: any value holds


def _sets(argv: list[str]) -> Iterator[str]:
    """The `--set` items of one command line (`--set X` and `--set=X`)."""
    for at, word in enumerate(argv):
        if word == SET_FLAG and at + 1 < len(argv):
            yield argv[at + 1]
        elif word.startswith(SET_FLAG + "="):
            yield word[len(SET_FLAG) + 1 :]


def asked(record: EvidenceRecord) -> dict[str, Any]:
    """Dotted key → the value the last command line that touched it asked for (UNKNOWN where a
    resume changed it without a `--set`). Raises BadInput for a `--set` that is not one."""
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    invocations = [(record.run.argv or [], [])]
    invocations += [
        (r.get("argv") or [], r.get("changed") or []) for r in resumes or [] if isinstance(r, dict)
    ]
    wanted: dict[str, Any] = {}
    for argv, changed in invocations:
        set_here = {
            f"{section}.{key}": value
            for section, values in parse_sets(list(_sets(argv))).items()
            for key, value in values.items()
        }
        wanted.update(dict.fromkeys((key for key in changed if key not in set_here), UNKNOWN))
        wanted.update(set_here)
    return wanted


def _holds(want: Any, used: Any) -> bool:
    """Whether the value used is the one asked for: a table asked for in part holds where every
    key it names holds (the run fills in the defaults of the rest)."""
    if isinstance(want, dict):
        return isinstance(used, dict) and all(k in used and _holds(v, used[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(used, list) and len(want) == len(used) and all(map(_holds, want, used))
    return want == used and isinstance(want, bool) == isinstance(used, bool)


def argv_problems(record: EvidenceRecord, run_dir: Path) -> list[str]:
    """Each key a command line of the record set whose config.toml value is another."""
    if not any(a.path == CONFIG_FILE for a in record.artifacts) or not (run_dir / CONFIG_FILE).is_file():
        return []  # no config cited: nothing to hold the command line to
    try:
        wanted = asked(record)
    except BadInput as exc:
        return [f"run.argv holds a --set no command takes: {exc}"]
    config = read_toml(run_dir / CONFIG_FILE, run_dir)
    problems = []
    for key, want in sorted(wanted.items()):
        if want is UNKNOWN:
            continue
        used = saved_value(config, key)  # a key config.toml leaves out holds its default
        if used is None or not _holds(want, used):
            shown = "nothing" if used is None else repr(used)
            problems.append(
                f"its command line sets {key}={want!r}, but {CONFIG_FILE} holds {shown}: the config is "
                "not the one the run was asked for"
            )
    return problems
