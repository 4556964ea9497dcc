"""A training record's config.toml, resolved again from the command lines it keeps.

`argv_config` holds each `--set` of a record's command lines to its config.toml. The rest of that
file, the preset's values, the defaults and what a command's own options set (`stack dpo --beta`,
`stack distill --temperature`), was held by nothing: an `init_std`, a `beta2`, an
`eval.early_stop` or a DPO β edited in config.toml, the record made to agree, passed. Here the
command lines of a training record (`stack train`, `sft`, `dpo`, `distill`) are parsed by the
stack's own parser, turned into `stack train`'s request by each command's own function, and
resolved by the stack's own `resolve` (the preset, then each `--set`; each resume's on the config
before it): config.toml must be what that gives, key for key, as must each resume's list of
changed keys (`metrics.resumes[].changed`). A run started from a model (`--init-from`, a DPO
policy, a distillation's `--student`) takes that model's section from the checkpoint, which the
record does not hold: its other sections are rebuilt, its model keys are left to `argv_config`.

The rebuild runs this checkout's code, so it holds a record only where the code that resolves its
command lines (CONFIG_CODE, and COMMAND_CODE of each command it ran) is, byte for byte, the code
of the record's commit; a record made
under other resolution code is not rebuilt (its `--set` keys are still held by `argv_config`).
Nor is a run started with `--config FILE` (the file is not in the record). Either is named in a
warning (`not_rebuilt`), never skipped in silence; a command line `stack` does not parse is a
violation (argv_record.command_line_problems), never a record with nothing to rebuild.
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
from contracts.reading import read_toml
from stack.cli import build_parser, distill, dpo, sft
from stack.cli.tune_options import resume_sets
from stack.train.config import changed_keys, resolve
from tools.integrity.settings.argv_record import stack_words

CONFIG_FILE = "config.toml"
# The files whose text decides what any training command line resolves to: `stack train`'s
# parser, the presets, the sections with their defaults and checks, and what those import to fill
# a value in (tests/integrity/test_config_rebuild.py holds this list to the modules the config
# classes live in).
CONFIG_CODE = (
    "stack/cli/train.py",
    "stack/cli/values.py",
    "stack/config.py",
    "stack/data/curriculum.py",
    "stack/model/config.py",
    "stack/train/config.py",
    "stack/train/presets.py",
    "stack/train/tune_settings.py",
)
# The commands of the training loop, each with the files that turn its own options into `stack
# train`'s request. A record is held to the files of the commands on its command lines only, so a
# change to `stack dpo` leaves a `stack train` record rebuildable.
COMMAND_CODE: dict[str, tuple[str, ...]] = {
    "train": (),
    "sft": ("stack/cli/sft.py",),
    "dpo": ("stack/cli/dpo.py", "stack/cli/tune_options.py"),
    "distill": ("stack/cli/distill.py", "stack/cli/tune_options.py"),
}
REPO = Path(stack.__file__).resolve().parent.parent


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


def config_code(commands: set[str]) -> tuple[str, ...]:
    """The files that decide what command lines of `commands` resolve to."""
    return tuple(sorted({*CONFIG_CODE, *(f for c in commands for f in COMMAND_CODE[c])}))


@functools.cache
def same_config_code(sha: str, files: tuple[str, ...]) -> bool:
    """Whether every one of `files` is, at commit `sha`, what this checkout holds (False when git
    cannot tell: no repository, an unknown commit)."""
    try:
        diff = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", sha, "--", *files],
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return diff.returncode == 0


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """`stack`'s parser, built once: parsing leaves it as it was, and building it for every record
    was a tenth of a whole check of the ledger."""
    return build_parser()


def _parsed(argv: list[str]) -> argparse.Namespace | None:
    """One command line as `stack` parses it (`stack ...` or `python -m stack ...`,
    argv_record.stack_words); None for one it refuses or that is not `stack`'s, which
    argv_record.command_line_problems names."""
    words = stack_words(argv)
    if words is None:
        return None
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
        return _parser().parse_args(words)
    return None


def _toml(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved configuration as config.toml holds it once written and read back."""
    return tomllib.loads(tomli_w.dumps(config))


@functools.cache
def _resolved(preset: str | None, sets: tuple[str, ...], vocab: int | None, base: str | None) -> str:
    """`resolve`'s configuration as TOML text (cached: a ledger has many records of one command)."""
    start = tomllib.loads(base) if base is not None else None
    return tomli_w.dumps(resolve(preset, None, list(sets), vocab=vocab, base=start).as_dict())


def _table(config: dict[str, Any], name: str) -> dict[str, Any]:
    table = config.get(name)
    return table if isinstance(table, dict) else {}


def _new_run(args: argparse.Namespace, config: dict[str, Any]) -> tuple[str | None, list[str], bool]:
    """(the preset, the `--set` items, whether it starts from a model) a new run's command line
    hands `stack train`, through each command's own function. What the filesystem decided where
    the run was started (the absolute path of a DPO reference or a teacher, a fresh student's
    vocabulary, read from its teacher) is taken from config.toml."""
    if args.command == "dpo":
        return None, dpo.config_sets(args, str(_table(config, "dpo").get("reference"))), True
    if args.command == "distill":
        teacher = str(_table(config, "distill").get("teacher"))
        vocab = _table(config, "model").get("vocab") if args.preset is not None else None
        return args.preset, distill.config_sets(args, teacher, vocab), args.student is not None
    extra = [sft.TASK] if args.command == "sft" else []
    return args.preset, [*args.sets, *extra], args.init_from is not None


def _resumed(args: argparse.Namespace) -> list[str]:
    """The `--set` items a resume's command line hands `stack train`."""
    if args.command in ("dpo", "distill"):
        return resume_sets(args)
    return [*args.sets, *([sft.TASK] if args.command == "sft" else [])]


def _rebuilt_here(args: argparse.Namespace | None, resume: bool) -> bool:
    """Whether a parsed command line is one this module rebuilds, as a start or as a resume."""
    return (
        args is not None
        and args.command in COMMAND_CODE
        and (args.resume is not None) == resume
        and getattr(args, "config", None) is None
    )


def _lines(record: EvidenceRecord) -> tuple[argparse.Namespace | None, list[argparse.Namespace | None]]:
    """The record's first command line and each resume's, parsed (None: one `stack` refuses)."""
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    later = [_parsed(r.get("argv") or []) if isinstance(r, dict) else None for r in resumes or []]
    return _parsed(record.run.argv or []), later


def not_rebuilt(record: EvidenceRecord) -> str | None:
    """Why a training record's config.toml is not rebuilt here, as a warning names it: a start or
    resume from `--config FILE`, or resolution code that is not, at the record's commit, this
    checkout's. None where it is rebuilt, where the record is no training command's, or where its
    command lines are ones argv_record.command_line_problems names as a violation (unreadable, a
    start that resumes, a resume that starts)."""
    first, later = _lines(record)
    if first is None or first.command not in COMMAND_CODE or any(a is None for a in later):
        return None
    if any(getattr(a, "config", None) is not None for a in [first, *later]):
        return (
            "config.toml is not rebuilt from its command lines: a --config FILE it read is not in the record"
        )
    if first.resume is not None or any(a is not None and a.resume is None for a in later):
        return None
    files = config_code({first.command, *(a.command for a in later if a is not None)})
    sha = record.code.git_sha
    if sha is not None and same_config_code(sha, files):
        return None
    return (
        "config.toml is not rebuilt from its command lines: the code that resolves them "
        f"({', '.join(files)}) is not, at its commit {str(sha)[:12]}, this checkout's"
    )


def rebuilt(record: EvidenceRecord, config: dict[str, Any]) -> Rebuilt | None:
    """What the record's command lines resolve to, or None where this module does not rebuild the
    record (see the module docstring; `not_rebuilt` says why). `config` (the record's config.toml)
    lends the tokenizer's vocabulary, which the data decides; for a run started from a model, that
    model's section, which the checkpoint decides; and the paths a DPO or distillation run resolved.

    Raises BadInput for command lines `resolve` or a command refuses."""
    first, later = _lines(record)
    if not _rebuilt_here(first, resume=False) or not all(_rebuilt_here(a, resume=True) for a in later):
        return None
    assert first is not None
    files = config_code({first.command, *(a.command for a in later if a is not None)})
    if record.code.git_sha is None or not same_config_code(record.code.git_sha, files):
        return None
    model = _table(config, "model")
    vocab = model.get("vocab")
    vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None
    preset, sets, started_from = _new_run(first, config)
    # The checkpoint's model is the run's base, as `stack train` makes it (its vocab left to the data).
    source = {"model": {k: v for k, v in model.items() if k != "vocab"}}
    text = _resolved(preset, tuple(sets), vocab, tomli_w.dumps(source) if started_from else None)
    changes = []
    for resumed in later:
        assert resumed is not None
        after = _resolved(None, tuple(_resumed(resumed)), vocab, text)
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


def rebuild_warnings(record: EvidenceRecord, run_dir: Path) -> list[str]:
    """Why a training record's cited config.toml is not held to its command lines (`not_rebuilt`)."""
    if not any(a.path == CONFIG_FILE for a in record.artifacts) or not (run_dir / CONFIG_FILE).is_file():
        return []
    reason = not_rebuilt(record)
    return [] if reason is None else [reason]


def rebuild_problems(record: EvidenceRecord, run_dir: Path) -> list[str]:
    """Each key of config.toml, and each resume's changed keys, other than the command lines give."""
    path = run_dir / CONFIG_FILE
    if not any(a.path == CONFIG_FILE for a in record.artifacts) or not path.is_file():
        return []  # no config cited: nothing to rebuild
    config = read_toml(path, run_dir)
    try:
        built = rebuilt(record, config)
    except BadInput as exc:
        return [f"its command lines do not resolve to a configuration: {exc}"]
    if built is None:
        return []
    wanted, used = _flat(built.config), _flat(config)
    command = (stack_words(record.run.argv) or ["?"])[0]
    problems = [
        f"{CONFIG_FILE} holds {key} = {_shown(used, key)}, but its command lines resolve to "
        f"{_shown(wanted, key)} (as `stack {command}` resolves its options)"
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
