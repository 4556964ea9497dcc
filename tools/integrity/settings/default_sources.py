"""What a command's record states of a setting its command line left to the command's default, against
the default the command's parser declared at the record's commit.

A `stack` command (other than the training loop, whose config `config_rebuild` resolves whole)
writes into its record's config the value of each option it read: `stack sample` its temperature,
`stack memorization` its seed, `stack lens` its top_k. Where the command line gives the option,
`argv_record.option_problems` holds the config to it; where the line leaves it out, the value is the
parser's default, and `argv_record` reads the line with every default left out (a default the code
changed since is not the record's). The parser the run used is the one at the record's commit, in
git: its `add_argument` calls in stack/cli/<command>.py, read from the source without running it.
Every kind of default counts: a literal, a name the file binds to one or imports from another module
of the repository (read at the same commit), and argparse's None where no default is given. So each
config key the line does not set that names an option of that parser with one default must hold
that default (a sample's temperature 0.8 restated as 0.6 with no --temperature; a memorization's
seed; a tuned lens's weight decay, whose default is DEFAULT_WEIGHT_DECAY; a sample's top_k, None,
restated as 40), unless the command fills the
value in itself (RESOLVED). A default no literal decides is named, never passed. A record of a dirty
tree may have run another parser than its commit's: what it contradicts there is a warning, not a
violation. A record whose commit has no such file, or one that does not parse, is
named, never passed in silence.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import PurePath
from typing import Any

import yaml

from contracts.derive.prepare_options import READ_KEYS
from contracts.derive.training import LOOP_KINDS
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.reading import load_yaml
from stack.data.filters.settings import DEFAULTS_FILE as FILTER_DEFAULTS
from stack.es.settings import EsSettings
from tools.integrity.settings.argv_record import (
    NOT_STACK_KINDS,
    TRACE_PATHS,
    _command_lines,
    given,
)
from tools.integrity.settings.code_constants import NOT_LITERAL, _literal, class_defaults

# Where `stack COMMAND`'s parser is declared: stack/cli/<command>.py (a dash made an underscore).
CLI_DIR = "stack/cli"
# The argparse actions whose default a line always states (a flag's): argv_record compares those.
FLAG_ACTIONS = frozenset({"store_true", "store_false", "store_const", "count", "help"})
# Config keys a command fills from a file of the repository when an option is left out: command →
# {config key: (the option, the file)}. `stack prepare` without --filters records the built-in filter
# settings (stack.data.filters.settings.load_settings(None): defaults.yaml validated, so every value
# the file sets is the config's: an oversize.max_bytes restated is caught).
DEFAULT_FILES = {
    "prepare": {"filter_settings": ("filters", str(FILTER_DEFAULTS.relative_to(REPO_ROOT)))},
}
# A default of an option that two add_argument calls of one file declare differently: not one.
AMBIGUOUS = object()
# A default declared by an expression `resolved` cannot read (a call, an attribute): equal to no
# value a record states, so a config key left to it is named, never passed in silence.
UNRESOLVED = object()
# How many names (bound in a module, or imported by `from MODULE import NAME`) `resolved` follows
# to the literal a default stands for: a name bound to itself is not followed for ever.
MAX_NAMES = 8
# A file of the repository at the record's commit (None where the commit lacks it).
Reader = Callable[[str], bytes | None]
# The options whose value a command resolves before it records it (from a default of None, or from
# settings the parser only names, as `stack es` does), by command: {destination: what resolves it,
# and where the checker holds it}. Every other option a silent
# command line leaves at None is recorded as None: argparse's None is the value the command read
# (a sample's top_k null restated as 40 with no --top-k given is caught).
RESOLVED: dict[str, dict[str, str]] = {
    "es": dict.fromkeys(
        (f.name for f in fields(EsSettings)),
        "EsSettings' default (tools/integrity/settings/code_constants.py)",
    ),
    "eval": {"data": "the run's own DATA_DIR when --data is not given (stack.train.lineage.trained_on)"},
    "export": {"opset": "the ONNX exporter's DEFAULT_OPSET, for --format onnx"},
    "lens": {
        "position": (
            "the prompt's last position (tools/integrity/settings/argv_record.lens_position_problems)"
        ),
        "seq_len": "the model's context (stack.lens.train.sequence_length)",
    },
    "memorization": {"continuation": "the spec's min_verbatim_tokens"},
    "prepare": {
        "inputs": "--default's sources",
        "filters": "the --filter names, at commits whose config named them so",
        "pack_len": "the examples' longest within the model's context, else 128: the manifest's sft.pack_len "
        "(prepare_options)",
        "val_fraction": "a corpus's DEFAULT_VAL_FRACTION, or the share fine-tuning data's examples aim at "
        "(GATE-EVAL-001's wanted_heldout_examples): the manifest's, which reports.SPLIT_DRAW holds",
        "join": "concatenate for prompt-completion, the manifest's sft.join (prepare_options)",
        # none for a fine-tuning set, which never reads them (stack/cli/prepare.py `_read_config`)
        **dict.fromkeys(
            (*READ_KEYS, "text_field"),
            "the manifest's `reading` (contracts/derive/prepare_options.py), none for a fine-tuning set",
        ),
    },
    "synth": {"template": "the built-in chat template, by path and digest"},
}


# The settings dataclass a command builds its run from (file, class), by record kind: a field of it that
# no option declares and the command's call leaves out holds the class's own default (`stack lens
# --train` never sets LensTraining.nesterov, so a record stating it false is held to the default).
SETTINGS_CLASSES = {"lens-train": ("stack/lens/train.py", "LensTraining")}


def command_of(record: EvidenceRecord) -> str | None:
    """The `stack` command the record's first command line runs, for a kind whose config is held
    option by option (not the training loop's, not another program's); None otherwise."""
    if (
        record.run.kind in LOOP_KINDS
        or record.run.kind in NOT_STACK_KINDS
        or not isinstance(record.config, dict)
    ):
        return None
    command = (given(record.run.argv or []) or {}).get("command")
    return command if isinstance(command, str) else None


def parser_source(record: EvidenceRecord) -> str | None:
    """The repository file whose parser decides the record's defaults (None: no such record)."""
    command = command_of(record)
    return None if command is None else f"{CLI_DIR}/{command.replace('-', '_')}.py"


def default_sources(record: EvidenceRecord) -> list[str]:
    """The repository files that decide what the record's config holds where its command line is
    silent: its command's parser first, then each DEFAULT_FILES file of its command."""
    parser = parser_source(record)
    if parser is None:
        return []
    return [parser, *(path for _option, path in DEFAULT_FILES.get(str(command_of(record)), {}).values())]


def _dest(call: ast.Call) -> str | None:
    """The destination of an add_argument call: its `dest=`, else its first long option's (or its
    positional's) name with dashes made underscores."""
    named = next((k.value for k in call.keywords if k.arg == "dest"), None)
    if isinstance(named, ast.Constant) and isinstance(named.value, str):
        return named.value
    words = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    long = next((w for w in words if w.startswith("--")), None)
    word = long or next((w for w in words if not w.startswith("-")), None)
    return None if word is None else word.lstrip("-").replace("-", "_")


def module_file(module: str) -> list[str]:
    """The repository files that may hold dotted `module` (a module's file, a package's __init__)."""
    path = module.replace(".", "/")
    return [f"{path}.py", f"{path}/__init__.py"]


def _imported(tree: ast.Module, name: str) -> tuple[str, str] | None:
    """(module, name there) of a top-level `from MODULE import NAME [as name]` that binds `name`."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return node.module, alias.name
    return None


# The arithmetic a default's constant may be written in (`1 << 26`, `64 * MiB`). No power, and no
# shift wider than a 64-bit count: the source read is whatever a record's commit holds, and `9 ** 9 **
# 9` or `1 << 10 ** 12` there would hang the check or exhaust its memory instead of naming the default.
ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.LShift: lambda value, bits: value << bits if bits <= 64 else UNRESOLVED,
}


def _binding(tree: ast.Module, name: str) -> ast.expr | None:
    """The expression a module's top level binds `name` to once (`NAME = ...`, `NAME: T = ...`)."""
    found = [
        node.value
        for node in tree.body
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name])
        or (isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name and node.value)
    ]
    return found[0] if len(found) == 1 else None


@functools.lru_cache(maxsize=256)
def _parsed(source: bytes) -> ast.Module | None:
    """A module's syntax tree, parsed once per content (the records of one commit, and most commits,
    share their parsers' sources; the trees are only read); None where it does not parse."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def resolved(node: ast.expr, tree: ast.Module, read: Reader, depth: int = MAX_NAMES) -> Any:
    """The value a default expression of a parser's module stands for: a literal's; integer or float
    arithmetic of such values (`1 << 26`, `64 * MiB`); a name bound at its module's top level to one,
    or imported (`from MODULE import NAME`) from a module of the repository that binds it so (read at
    the same commit); UNRESOLVED otherwise."""
    value = _literal(node)
    if value is not NOT_LITERAL:
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        left, right = resolved(node.left, tree, read, depth), resolved(node.right, tree, read, depth)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        try:
            return ARITHMETIC[type(node.op)](left, right) if numbers else UNRESOLVED
        except (ArithmeticError, TypeError, ValueError):  # a zero divisor, a negative or float shift
            return UNRESOLVED
    if not isinstance(node, ast.Name) or depth == 0:
        return UNRESOLVED
    bound = _binding(tree, node.id)
    if bound is not None:
        return resolved(bound, tree, read, depth - 1)
    origin = _imported(tree, node.id)
    if origin is None:
        return UNRESOLVED
    source = next((blob for path in module_file(origin[0]) if (blob := read(path)) is not None), None)
    module = _parsed(source) if source is not None else None
    return UNRESOLVED if module is None else resolved(ast.Name(origin[1]), module, read, depth - 1)


@functools.lru_cache(maxsize=256)
def _declared(source: bytes) -> tuple[tuple[str, ast.expr | None], ...] | None:
    """(destination, default expression or None) of each option, not a flag, that an argparse
    parser in `source` declares, in order; None where it does not parse. Walked once per content:
    every record of a command at one commit, and most commits, read the same parser."""
    tree = _parsed(source)
    if tree is None:
        return None
    declared = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "add_argument":
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        action = keywords.get("action")
        if isinstance(action, ast.Constant) and action.value in FLAG_ACTIONS:
            continue
        dest = _dest(node)
        if dest is not None:
            declared.append((dest, keywords.get("default")))
    return tuple(declared)


def parser_defaults(source: bytes, read: Reader = lambda _path: None) -> dict[str, Any] | None:
    """Each option an argparse parser in `source` declares, by destination, with the default it
    declares (None where it declares none, as argparse gives it; a name resolved by `resolved`,
    UNRESOLVED where it stands for no literal; a flag's left out); an option declared twice with
    two defaults is left out. None where the source does not parse."""
    tree, declared = _parsed(source), _declared(source)
    if tree is None or declared is None:
        return None
    found: dict[str, Any] = {}
    for dest, expression in declared:
        default = None if expression is None else resolved(expression, tree, read)
        if dest in found and found[dest] != default:
            found[dest] = AMBIGUOUS
        else:
            found.setdefault(dest, default)
    return {dest: value for dest, value in found.items() if value is not AMBIGUOUS}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _same(recorded: Any, default: Any) -> bool:
    if isinstance(recorded, list) and isinstance(default, list | tuple):
        return len(recorded) == len(default) and all(map(_same, recorded, default))
    if isinstance(recorded, bool) or isinstance(default, bool):
        return recorded is default
    if isinstance(recorded, str) and isinstance(default, str):
        return recorded == default or PurePath(recorded) == PurePath(default)
    return bool(recorded == default)


def _held(command: str, key: str, recorded: Any, default: Any) -> bool:
    """Whether config value `recorded` is what a silent command line leaves option `key` to: its
    parser's default, or, where the command resolves the value itself (RESOLVED), anything the
    check of what resolves it holds."""
    if key in RESOLVED.get(command, {}):
        return True
    return (_scalar(recorded) or isinstance(recorded, list)) and _same(recorded, default)


def _default_problem(key: str, recorded: Any, default: Any, path: str) -> str:
    option = f"--{key.replace('_', '-')}"
    if default is UNRESOLVED:
        return (
            f"config.{key} is {recorded!r}, but its command line leaves {option} to a default {path} "
            "declares by an expression the checker does not read: the value is not held"
        )
    return (
        f"config.{key} is {recorded!r}, but its command line leaves {option} to the default {default!r} "
        f"that {path} declares"
    )


def default_problems(record: EvidenceRecord, read: Reader) -> list[str]:
    """Each config key the record's command lines leave out whose value is not what its command's
    sources at its commit decide (`read`: a file of the repository at the record's commit, None
    where it lacks it): the default its parser declares (a literal, a constant it names, or None,
    as RESOLVED allows), or every value the default file of DEFAULT_FILES sets (module docstring)."""
    sources = default_sources(record)
    if not sources:
        return []
    path, command = sources[0], str(command_of(record))
    blob = read(path)
    defaults = None if blob is None else parser_defaults(blob, read)
    if defaults is None:
        return [f"its command's parser {path} cannot be read at its commit: its defaults are not held"]
    given_keys: set[str] = set()
    for argv, _places in _command_lines(record):
        given_keys |= set(given(argv) or {})
    assert isinstance(record.config, dict)
    problems = [
        _default_problem(key, recorded, defaults[key], path)
        for key, recorded in sorted(record.config.items())
        if key not in given_keys and key in defaults
        if not _held(command, key, recorded, defaults[key])
    ]
    if record.run.kind in SETTINGS_CLASSES:
        problems += _settings_problems(record.config, blob, defaults, SETTINGS_CLASSES[record.run.kind], read)
    if command == "trace":
        problems += _trace_path_problems(record.config, defaults, given_keys, path)
    for key, (option, file) in DEFAULT_FILES.get(command, {}).items():
        if option in given_keys or key not in record.config:
            continue
        try:
            declared = load_yaml(read(file) or b"")
        except yaml.YAMLError:
            declared = None
        if not isinstance(declared, dict):
            problems.append(f"config.{key} is left to {file}, which its commit does not hold readable")
            continue
        problems += [
            f"config.{where} is {stated!r}, but its command line gives no --{option} and {file} sets "
            f"{value!r}"
            for where, value, stated in _set_values(declared, record.config[key], key)
            if not _same(stated, value)
        ]
    return problems


def _passed_keywords(source: bytes, name: str) -> set[str] | None:
    """The keywords every call of `name` in a command's source passes; None where one passes `**`
    (what it sets cannot be read) or none calls it."""
    tree = _parsed(source)
    calls = [
        node
        for node in ast.walk(tree)
        if tree is not None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]
    if not calls or any(k.arg is None for call in calls for k in call.keywords):
        return None
    return {k.arg for call in calls for k in call.keywords if k.arg is not None}


def _settings_problems(
    config: dict[str, Any], parser: bytes, defaults: dict[str, Any], settings: tuple[str, str], read: Reader
) -> list[str]:
    """Each config key naming a field of the command's settings class (SETTINGS_CLASSES) that no
    option declares and no call in the command's source passes: the class's default at the commit."""
    path, name = settings
    blob = read(path)
    declared = None if blob is None else class_defaults(blob, name)
    passed = _passed_keywords(parser, name)
    if declared is None or passed is None:
        keys = [key for key in config if key not in defaults]
        return [f"{path}'s {name} cannot be read at its commit: config keys {keys} are not held"]
    return [
        f"config.{key} is {config[key]!r}, but no option sets {name}.{key} ({path}): it is the default "
        + ("the checker does not read" if declared[key] is NOT_LITERAL else f"{declared[key]!r}")
        for key in config
        if key in declared and key not in defaults and key not in passed
        if declared[key] is NOT_LITERAL or not _same(config[key], declared[key])
    ]


def _trace_path_problems(
    config: dict[str, Any], defaults: dict[str, Any], given_keys: set[str], path: str
) -> list[str]:
    """A trace's described paths (config.path_a, path_b: `LABEL (backend, dtype)`) where its command
    line gives none of the options that choose a part: that part is the parser's default, the first
    of the options (argv_record.TRACE_PATHS, in the order they decide) that declares one (a sweep
    run in fp32 described as bf16 is caught). A default of None (--backend: the
    checkpoint's own attention) is no parser's to decide and is not held here."""
    problems = []
    for field, choices in TRACE_PATHS.items():
        found = re.search(r"\(([\w-]+), (\w+)\)$", str(config.get(field) or ""))
        if config.get(field) is None:
            continue  # a trace has a path B only where its line asks for one
        for part, dests in enumerate(choices, start=1):
            default = next((defaults.get(d) for d in dests if defaults.get(d) is not None), None)
            if any(d in given_keys for d in dests) or default is None:
                continue
            if found is None or default is UNRESOLVED or default is AMBIGUOUS or found.group(part) != default:
                problems.append(
                    f"config.{field} is {config[field]!r}, but its command line leaves "
                    f"--{dests[0].replace('_', '-')} to the default {default!r} that {path} declares"
                )
    return problems


def _set_values(declared: Any, stated: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted place, value the file sets, value the config states) of every leaf `declared` sets: a
    table's keys and a list's items (of as many items) recursively; a key the file leaves to the
    settings' own defaults is not one."""
    if isinstance(declared, dict):
        for key, value in declared.items():
            held = stated.get(key) if isinstance(stated, dict) else None
            yield from _set_values(value, held, f"{where}.{key}")
    elif isinstance(declared, list) and isinstance(stated, list) and len(declared) == len(stated):
        for index, (value, held) in enumerate(zip(declared, stated, strict=True)):
            yield from _set_values(value, held, f"{where}[{index}]")
    else:
        yield where, declared, stated
