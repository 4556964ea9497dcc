"""A training record's config.toml, resolved again from the command lines it keeps.

`argv_config` holds each `--set` of a record's command lines to its config.toml. The rest of that
file, the preset's values and the defaults, was held by nothing: an `init_std`, a `beta2`, an
`eval.early_stop` or a `data.wrap` edited in config.toml, the record made to agree, passed. Here
the command lines of a `stack train` or `stack sft` record are parsed by the stack's own parser
and resolved by the stack's own `resolve` (the preset, then each `--set`; each resume's `--set`
on the config before it), and config.toml must be what that gives, key for key, as must each
resume's list of changed keys (`metrics.resumes[].changed`). A run started `--init-from` a model
takes that model's section from the checkpoint, which the record does not hold: its other
sections are rebuilt, its model keys are left to `argv_config`.

The rebuild runs this checkout's code, so it holds a record only where the code that resolves a
configuration (CONFIG_CODE) is, byte for byte, the code of the record's commit; a record made
under other resolution code is not rebuilt (its `--set` keys are still held by `argv_config`).
Not rebuilt either: a run started with `--config FILE` (the file is not in the record), and the
`dpo` and `distill` commands (their options become settings through paths resolved where they ran).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

import stack
from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord
from stack.cli import build_parser
from stack.cli.sft import TASK as SFT_TASK
from stack.train.config import changed_keys, resolve

CONFIG_FILE = "config.toml"
# The files whose text decides what a `stack train` command line resolves to: the parser of its
# options, the presets, the sections with their defaults and checks, and what those import to
# fill a value in (tests/test_config_rebuild.py holds this list to the modules the config classes
# live in).
CONFIG_CODE = (
    "stack/cli/sft.py",
    "stack/cli/train.py",
    "stack/cli/values.py",
    "stack/config.py",
    "stack/data/curriculum.py",
    "stack/model/config.py",
    "stack/train/config.py",
    "stack/train/presets.py",
    "stack/train/tune_settings.py",
)
REPO = Path(stack.__file__).resolve().parent.parent
# The commands rebuilt, with the `--set` items each adds to the user's (`stack sft` is `stack train`
# with its task).
COMMANDS: dict[str, tuple[str, ...]] = {"train": (), "sft": (SFT_TASK,)}


@dataclass(frozen=True)
class Rebuilt:
    """A record's configuration resolved again: the config, the keys each resume changed, and
    whether the command lines decide its model section (not so for a run started from a model)."""

    config: dict[str, Any]
    changes: list[list[str]]
    model_decided: bool

    def decides(self, key: str) -> bool:
        """Whether the command lines decide dotted `key`."""
        return self.model_decided or not key.startswith("model.")


@functools.cache
def same_config_code(sha: str) -> bool:
    """Whether every file of CONFIG_CODE is, at commit `sha`, what this checkout holds (False when
    git cannot tell: no repository, an unknown commit)."""
    try:
        diff = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", sha, "--", *CONFIG_CODE],
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return diff.returncode == 0


def _parsed(argv: list[str]) -> argparse.Namespace | None:
    """One command line as `stack` parses it; None for one it refuses (or that is not `stack`'s)."""
    if len(argv) < 2 or Path(argv[0]).name != "stack":
        return None
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
        return build_parser().parse_args(argv[1:])
    return None


def _toml(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved configuration as config.toml holds it once written and read back."""
    return tomllib.loads(tomli_w.dumps(config))


@functools.cache
def _resolved(preset: str | None, sets: tuple[str, ...], vocab: int | None, base: str | None) -> str:
    """`resolve`'s configuration as TOML text (cached: a ledger has many records of one command)."""
    start = tomllib.loads(base) if base is not None else None
    return tomli_w.dumps(resolve(preset, None, list(sets), vocab=vocab, base=start).as_dict())


def rebuilt(record: EvidenceRecord, config: dict[str, Any]) -> Rebuilt | None:
    """What the record's command lines resolve to, or None where this module does not rebuild the
    record (see the module docstring). `config` (the record's config.toml) lends the tokenizer's
    vocabulary, which the data decides, and, for a run started `--init-from` a model, that
    model's section, which the checkpoint decides.

    Raises BadInput for command lines `resolve` refuses."""
    first = _parsed(record.run.argv or [])
    if first is None or first.command not in COMMANDS or first.resume is not None or first.config is not None:
        return None
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    later = [_parsed(r.get("argv") or []) if isinstance(r, dict) else None for r in resumes or []]
    if any(a is None or a.command not in COMMANDS or a.resume is None or a.config is not None for a in later):
        return None
    if record.code.git_sha is None or not same_config_code(record.code.git_sha):
        return None
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    vocab = model.get("vocab")
    vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None
    started_from = first.init_from is not None
    # The checkpoint's model is the run's base, as `stack train` makes it (its vocab left to the data).
    base = (
        tomli_w.dumps({"model": {k: v for k, v in model.items() if k != "vocab"}}) if started_from else None
    )
    text = _resolved(first.preset, (*first.sets, *COMMANDS[first.command]), vocab, base)
    changes = []
    for resumed in later:
        assert resumed is not None
        after = _resolved(None, (*resumed.sets, *COMMANDS[resumed.command]), vocab, text)
        changes.append(changed_keys(tomllib.loads(text), tomllib.loads(after)))
        text = after
    return Rebuilt(_toml(tomllib.loads(text)), changes, model_decided=not started_from)


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """dotted.key → value, through every nested table (a list is one value)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(flat: dict[str, Any], key: str) -> str:
    """A key's value as JSON with sorted keys (so 1, 1.0 and true differ, and an inline table's
    order does not matter), or "nothing"."""
    return json.dumps(flat[key], sort_keys=True) if key in flat else "nothing"


def rebuild_problems(record: EvidenceRecord, run_dir: Path) -> list[str]:
    """Each key of config.toml, and each resume's changed keys, other than the command lines give."""
    path = run_dir / CONFIG_FILE
    if not any(a.path == CONFIG_FILE for a in record.artifacts) or not path.is_file():
        return []  # no config cited: nothing to rebuild
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError:
        return []  # the derivation reports a config.toml that is not TOML
    try:
        built = rebuilt(record, config)
    except BadInput as exc:
        return [f"its command lines do not resolve to a configuration: {exc}"]
    if built is None:
        return []
    wanted, used = _flat(built.config), _flat(config)
    problems = [
        f"{CONFIG_FILE} holds {key} = {_shown(used, key)}, but its command lines resolve to "
        f"{_shown(wanted, key)} (the preset, then each --set, as `stack {record.run.argv[1]}` resolves them)"
        for key in sorted(wanted.keys() | used.keys())
        if built.decides(key) and _shown(wanted, key) != _shown(used, key)
    ]
    stated = [r.get("changed") for r in record.metrics.get("resumes") or [] if isinstance(r, dict)]
    for at, (said, derived) in enumerate(zip(stated, built.changes, strict=True)):
        said = [k for k in said if built.decides(k)] if isinstance(said, list) else said
        derived = [k for k in derived if built.decides(k)]
        if said != derived:
            problems.append(
                f"metrics.resumes[{at}].changed is {said!r}, but its command line changes {derived!r}"
            )
    return problems
