"""What a record's command lines name, held to what the record says the command used.

A record keeps its command lines (`run.argv`, and each resume's) and, from spec 1.22.0 on, the
place each word naming a file or directory resolved to where the run started (`run.places`).
The rest of the record restates those words: a surgery's `bits`, an export's `int8`, a trace's
`prompt` in its config; the parent models in its lineage; a training run's data directory, the
model it started from and its run id. A forger who edits one of those and leaves the command
line as it was is caught here, without running anything:

* every command line is one `stack`'s own parser takes, running a command that writes the record's
  kind: a line it cannot parse is a violation naming it, never a reason to skip the checks below
  (and `config_rebuild`'s) that read it;
* every option a command line gives (or a flag it leaves off) whose name is a key of the
  record's config must hold that value there, a path naming the same place (training configs
  are resolved again whole by `config_rebuild`); and an option STATED_OPTIONS lists for the
  command must be a key of the config at all (a record that leaves out the value it used cannot
  be held to the line), given on the line or not;
* every parent in the record's lineage lies at a place one of its command lines names;
* a record's `metrics.data_dir` and `metrics.init_from.path` are where `--data` (the last line's to
  give one: a resume may name a moved DATA_DIR's new place) and the word that names the model it
  started from point (`--init-from`, a DPO policy, a distillation's `--student`),
  and a training record's run id is the name of the run directory `--out` (or `--resume`) names.

Options are read by the stack's own parser with every default left out, so only what the line
says is compared (a default the code changed since the record was made is not the record's).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from contracts.derive.reports import version_key
from contracts.derive.training import LOOP_KINDS
from contracts.evidence import REPO_ROOT, EvidenceRecord, run_named
from stack.cli import build_parser
from stack.data.sft_template import TEMPLATES_DIR, template_path

# Each `stack` command with the run kinds of the records it writes (spec/run_kinds.yaml): `stack
# train` from a model writes a finetune, and with `train.task` an sft, dpo or distill record; `stack
# trace --patch` a patch; `stack lens --train` a lens-train; `stack lora ACTION` a lora-ACTION.
WRITTEN_BY: dict[str, frozenset[str]] = {
    "prepare": frozenset({"prepare"}),
    "train": frozenset({"train", "finetune", "sft", "dpo", "distill"}),
    "sft": frozenset({"sft"}),
    "dpo": frozenset({"dpo"}),
    "distill": frozenset({"distill"}),
    "es": frozenset({"es"}),
    "sample": frozenset({"sample"}),
    "eval": frozenset({"eval"}),
    "evalmatrix": frozenset({"evalmatrix"}),
    "memorization": frozenset({"memorization"}),
    "export": frozenset({"export-hf", "export-onnx"}),
    "import-hf": frozenset({"import-hf"}),
    "trace": frozenset({"trace", "patch"}),
    "lens": frozenset({"lens", "lens-train"}),
    "laser": frozenset({"laser"}),
    "quantize": frozenset({"quantize"}),
    "lora": frozenset({"lora-merge", "lora-export", "lora-import"}),
    "synth": frozenset({"synth"}),
    "options-matrix": frozenset({"options-matrix"}),
}
# The run kinds other programs write (pytest, the benchmarks, tools/gpu_check.py, and the scratch
# records tools/records/scratch.py declares for the checker's own tests and benchmark,
# tools/records/scratch.SYNTHETIC): their command lines are not `stack`'s, and this module does not read them.
# Any other kind is `stack`'s, and one WRITTEN_BY does not name is a violation (`command_line_problems`).
NOT_STACK_KINDS = frozenset({"conformance", "falsify", "benchmark", "gpu-check", "synthetic"})
# An interpreter that runs the stack as a module (`python -m stack ...`, `python3.12 -m stack`).
PYTHON_RE = re.compile(r"python[0-9.]*")
# The option of each training command that names the model it starts from: `stack dpo` tunes the
# policy RUN_DIR|CKPT it is given, `stack distill` its --student (stack/cli/dpo.py and distill.py
# hand them on as --init-from).
START_OPTION = {"train": "init_from", "sft": "init_from", "dpo": "path", "distill": "student"}
# The inputs a record's metrics restate that `input_problems` holds to the word naming each (a
# memorization's base_checkpoint is its --base resolved).
INPUT_FIELDS = ("data_dir", "init_from.path", "base_checkpoint")
# Options of the training commands that are not config values: what to run and where.
NOT_CONFIG = frozenset({"command", "preset", "nproc"})
# An option whose config key has another name.
CONFIG_NAMES = {"save_every": "every"}
# Config keys of a command that hold another option than the one of their name: a prepare's
# `filters` is its --filter list (the YAML of --filters is resolved into `filter_settings`).
CONFIG_OPTIONS = {"prepare": {"filters": "filter"}}
# The commands whose learning rate is constant after one warmup step (min_lr = lr).
CONSTANT_RATE_KINDS = frozenset({"dpo", "distill"})
# Config keys that name, under the name of what it is, a model the command line gives: the
# `source` of a model a command changes, the `checkpoint` of one it reads (which of its words
# that is depends on the command: `lora merge ADAPTER --base BASE` changes BASE).
NAMED_MODELS = ("source", "checkpoint")
# Options whose value a command's record must state in its config, by the config key of the
# option's name, each from the spec version given on: the value the command used, which the
# derivation of the record's kind holds to the artifact it decides (a prepare's manifest) and this
# module to the command line. A command that records another option adds it here. From 1.33.0 a
# prepare states every option that selects or shapes what enters its DATA_DIR (--glob and --join
# among them); what it does not state changes speed or where things go, never the data
# (--working-set, --workers, --force, --evidence-dir) or belongs to --verify, which files no record.
STATED_OPTIONS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "prepare": (
        ("1.32.0", ("seed", "val_fraction")),
        (
            "1.33.0",
            (
                "format",
                "vocab_size",
                "source",
                "template",
                "join",
                "pack_len",
                "glob",
                "doc_sep",
                "doc_bytes",
                "text_field",
                "source_field",
                "dtype",
                "shard_tokens",
                "bpe_sample",
            ),
        ),
    ),
    "sample": (("1.33.0", ("ignore_eot",)),),
}
# Options a command's record states deeper in its config than a key of the option's name: by
# command, the option's destination and the path of config keys that holds its value (`stack synth`
# keeps its sampling settings under `settings` and the model it read as `model.checkpoint`; `stack
# evalmatrix` its models under `models`). Each is held to the line as a top-level key is.
NESTED_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "synth": {
        "path": ("model", "checkpoint"),
        **{
            name: ("settings", name)
            for name in (
                "samples",
                "seed",
                "temperature",
                "max_instruction_tokens",
                "max_response_tokens",
                "min_chars",
                "min_coherence",
            )
        },
    },
    "evalmatrix": {"path": ("models", "base"), "adapter": ("models", "adapter")},
}


def _template_place(word: str) -> PurePath:
    """The file `stack synth --template WORD` read (stack.data.sft_template.template_path): a shipped
    template's path from the repository root (so a record made in another checkout holds), or WORD."""
    path = template_path(word)
    return path.relative_to(REPO_ROOT) if path.parent == TEMPLATES_DIR else PurePath(word)


# Options whose word names their config place through the command's own resolution, by command.
OPTION_PLACES: dict[str, dict[str, tuple[tuple[str, ...], Callable[[str], PurePath]]]] = {
    "synth": {"template": (("template", "path"), _template_place)},
}
# Actions whose value is what the line says even when it says nothing (a flag left off is False).
KEPT_DEFAULTS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._HelpAction,
    argparse._SubParsersAction,
)


def _suppress_defaults(parser: argparse.ArgumentParser) -> None:
    """Leave every default but a flag's out of what `parser` (and its sub-commands) parse."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _suppress_defaults(sub)
        elif not isinstance(action, KEPT_DEFAULTS):
            action.default = argparse.SUPPRESS


@functools.cache
def _parser() -> argparse.ArgumentParser:
    parser = build_parser()
    _suppress_defaults(parser)
    return parser


def stack_words(argv: list[str]) -> list[str] | None:
    """The words a command line hands `stack`'s parser: those after `stack` (or a path to the stack
    script) or after `python -m stack`; None for a line of another program."""
    if argv and Path(argv[0]).name == "stack":
        return argv[1:]
    if len(argv) >= 3 and PYTHON_RE.fullmatch(Path(argv[0]).name) and argv[1:3] == ["-m", "stack"]:
        return argv[3:]
    return None


def parsed(argv: list[str]) -> dict[str, Any] | str:
    """The options a `stack` command line gives, by destination (flags always), or why it is none:
    another program's line, or the parser's own refusal."""
    words = stack_words(argv)
    if words is None:
        return "it does not run `stack` (nor `python -m stack`)"
    options = _parsed_words(tuple(words))
    return dict(options) if isinstance(options, dict) else options


@functools.lru_cache(maxsize=4096)
def _parsed_words(words: tuple[str, ...]) -> dict[str, Any] | str:
    """`parsed` of the words after the program, once per line (every check of a record reads its
    lines again; a copy of the options is handed out, so no caller changes the cached one)."""
    refusal = io.StringIO()
    with contextlib.redirect_stderr(refusal), contextlib.suppress(SystemExit):
        return vars(_parser().parse_args(list(words)))
    said = [line for line in refusal.getvalue().splitlines() if line.strip()]
    return f"`stack`'s parser refuses it: {said[-1] if said else 'no reason given'}"


def _words(argv: list[str]) -> list[str]:
    """The words of a `stack` command line after its program (none of another program's line)."""
    return stack_words(argv) or []


def given(argv: list[str]) -> dict[str, Any] | None:
    """The options a `stack` command line gives, by destination (flags always); None for a line
    the parser refuses or that is not `stack`'s (`command_line_problems` names such a line)."""
    options = parsed(argv)
    return options if isinstance(options, dict) else None


def word_of(argv: list[str], option: str) -> str | None:
    """How a command line spelled the path it gives `option` (`--opt VALUE`, `--opt=VALUE` or a
    positional): the key `run.places` resolves it under. None where the line gives no path there."""
    return _word_of(tuple(argv), option)


@functools.lru_cache(maxsize=65536)
def _word_of(argv: tuple[str, ...], option: str) -> str | None:
    """`word_of`, once per line and option: the lineage checks ask it of every record's every
    path option, for each run a check joins to the ledger."""
    value = (given(list(argv)) or {}).get(option)
    if not isinstance(value, PurePath):
        return None
    words = [w.partition("=")[2] if w.startswith("-") else w for w in _words(list(argv))]
    return next((w for w in words if w and PurePath(w) == value), str(value))


def command_line_problems(record: EvidenceRecord) -> list[str]:
    """Each command line of a record of a kind `stack` writes that `stack`'s parser does not take,
    or that runs a command that does not write the kind. The checks of this module and of
    `config_rebuild` read the record's command lines; a line they could not read would turn them
    all off, so it is a violation here, never a skip."""
    kind = record.run.kind
    if kind in NOT_STACK_KINDS:
        return []
    commands = sorted(command for command, kinds in WRITTEN_BY.items() if kind in kinds)
    if not commands:
        return [
            f"the checker knows no `stack` command that writes a {kind!r} record: its command lines go unread"
        ]
    problems = []
    for at, (argv, _places) in enumerate(_command_lines(record)):
        where = "run.argv" if at == 0 else f"metrics.resumes[{at - 1}].argv"
        options = parsed(argv)
        if isinstance(options, str):
            problems.append(f"{where} {argv!r} is not a command line the checker can read: {options}")
        elif options.get("command") not in commands:
            problems.append(
                f"{where} runs `stack {options.get('command')}`, but a {kind} record is written by "
                f"{' or '.join(f'`stack {c}`' for c in commands)}"
            )
        elif kind in LOOP_KINDS and (options.get("resume") is not None) != (at > 0):
            # stack.train.run keeps the line that started a run as run.argv, each resume's after it
            said = "resumes a run" if at == 0 else "starts a run (no --resume)"
            problems.append(
                f"{where} {said}, but a {kind} record keeps its start first and its resumes after it"
            )
    return problems


def same_place(recorded: str, word: str, places: dict[str, str]) -> bool:
    """Whether `recorded` is the place command-line `word` named, or lies under it (a run
    directory names its newest checkpoint): the place the run resolved the word to (links
    followed), or the word as written, whose parts a relative path must show in order."""
    parts = PurePath(os.path.normpath(recorded)).parts
    if word in places and parts[: len(PurePath(places[word]).parts)] == PurePath(places[word]).parts:
        return True
    named = PurePath(os.path.normpath(word)).parts
    if ".." in named:
        return True  # where a relative path with '..' led cannot be told without the directory
    if PurePath(word).is_absolute():
        return parts[: len(named)] == named
    return any(parts[at : at + len(named)] == named for at in range(len(parts) - len(named) + 1))


def _holds(recorded: Any, value: Any, places: dict[str, str]) -> bool | None:
    """Whether a config value is what the command line gave, or None where the two are not of one
    kind (a command that turned a word into a token id restates nothing). A value the line gives
    that the config holds as None (none) was not used: a `stack lens --lens FILE` that read the
    logit lens, an `import-hf --sample-text FILE` measured on the default text."""
    if recorded is None:
        return value is None or value is False
    if isinstance(value, PurePath):
        return same_place(recorded, str(value), places) if isinstance(recorded, str) else None
    if isinstance(value, list) and isinstance(recorded, list):
        if len(recorded) < len(value):
            return False  # a command may add to a list what other flags asked for, never drop from it
        held = [_holds(r, v, places) for r, v in zip(recorded, value, strict=False)]
        return None if None in held else all(held)
    if isinstance(value, bool) or isinstance(recorded, bool):
        return value is recorded if isinstance(value, bool) and isinstance(recorded, bool) else None
    if isinstance(value, int | float) and isinstance(recorded, int | float):
        return value == recorded
    if isinstance(value, str) and isinstance(recorded, str):
        return value == recorded
    return None


def _nested_problems(
    config: dict[str, Any], command: str, options: dict[str, Any], places: dict[str, str]
) -> list[str]:
    """Each option NESTED_OPTIONS places deeper in the command's config whose value there is not what
    the line gives (synth's settings and evalmatrix's models among them);
    a config that does not hold the place at all is a problem too, never a skip."""
    placed = {dest: (path, lambda value: value) for dest, path in NESTED_OPTIONS.get(command, {}).items()}
    placed |= OPTION_PLACES.get(command, {})
    problems = []
    for dest, (path, place) in placed.items():
        if dest not in options:
            continue
        recorded: Any = config
        for key in path:
            recorded = recorded.get(key, _ABSENT) if isinstance(recorded, dict) else _ABSENT
        where, value = "config." + ".".join(path), place(options[dest])
        if recorded is _ABSENT:
            problems.append(f"{where} is absent, but its command line gives {_shown(options[dest])}")
        elif _holds(recorded, value, places) is False:
            problems.append(f"{where} is {recorded!r}, but its command line gives {_shown(options[dest])}")
    return problems


_ABSENT = object()  # a config place that is not there


def _shown(value: Any) -> str:
    return repr(str(value)) if isinstance(value, PurePath) else repr(value)


def option_problems(record: EvidenceRecord) -> list[str]:
    """Each config key of a non-training record whose value is not what its command lines gave: the
    start's, each resume's (`stack es --resume` keeps them as training does) taking over the
    options it gives."""
    lines = _command_lines(record)
    if record.run.kind in LOOP_KINDS or given(lines[0][0]) is None or not isinstance(record.config, dict):
        return []
    options: dict[str, Any] = {}
    places: dict[str, str] = {}
    for argv, named in lines:
        options.update(given(argv) or {})
        places.update(named)
    words = [word for argv, _named in lines for word in _words(argv)]
    command = str(options.get("command"))
    dests = {key: CONFIG_OPTIONS.get(command, {}).get(key, key) for key in record.config}
    problems = [
        f"config.{key} is {recorded!r}, but its command line gives {_shown(options[dests[key]])}"
        for key, recorded in record.config.items()
        if dests[key] in options and _holds(recorded, options[dests[key]], places) is False
    ]
    problems += _nested_problems(record.config, command, options, places)
    problems += [
        f"config states no {key}: `stack {command}` records the {_flag(command, key)} it used there, "
        "so nothing holds it to its command line"
        for since, stated in STATED_OPTIONS.get(command, ())
        if version_key(record.spec.version) >= version_key(since)
        for key in stated
        if key not in record.config
    ]
    problems += [
        f"config.{key} is {record.config[key]!r}, which none of its command line's words names"
        for key in NAMED_MODELS
        if key not in options
        and _flag(command, key) == key  # an option of the command by that name is no model (prepare --source)
        and isinstance(record.config.get(key), str)
        and not any(same_place(record.config[key], word, places) for word in words)
    ]
    return problems


# The config field describing each path of `stack trace` (`LABEL (backend, dtype)`), with the options
# that choose its backend and dtype, in the order they decide (path B defaults to path A's).
TRACE_PATHS = {
    "path_a": (("backend",), ("dtype",)),
    "path_b": (("backend_b", "backend"), ("dtype_b", "dtype")),
}
# Options of `stack trace` whose config value, a token id, is None where the line gives none.
ABSENT_NONE = ("foil",)
# The values a trace's gate checks take as its command line gives them (GATE-TRACE-003's checks
# ablated and tolerance, GATE-PATCH-002's check asked), each with
# the option(s) whose value it is and the value an option the line leaves out has.
ASKED_VALUES: dict[tuple[str, str], tuple[tuple[str, ...], Any]] = {
    ("GATE-TRACE-003", "ablate_asked"): (("ablate",), []),
    ("GATE-TRACE-003", "sample_asked"): (("sample",), 0),
    ("GATE-TRACE-003", "atol_asked"): (("atol",), []),
    ("GATE-TRACE-003", "rtol_asked"): (("rtol",), []),
    ("GATE-PATCH-002", "asked_patch"): (("patch_site", "patch_position", "patch_sweep"), None),
}


def trace_option_problems(record: EvidenceRecord) -> list[str]:
    """A trace's paths as config describes them against the --backend/--dtype (and -b) its command
    line gives (--dtype bf16 traced but described in fp32), and a token option the line does not
    give that its config states (a patch's foil)."""
    options = given(record.run.argv or [])
    config = record.config if isinstance(record.config, dict) else {}
    if options is None or options.get("command") != "trace":
        return []
    problems = []
    for field, choices in TRACE_PATHS.items():
        described = config.get(field)
        if described is None:
            continue  # a trace has a path B only where its line asks for one (and path_a is derived)
        found = re.search(r"\(([\w-]+), (\w+)\)$", described) if isinstance(described, str) else None
        for part, dests in enumerate(choices, start=1):
            asked = next((options[d] for d in dests if options.get(d) is not None), None)
            if asked is not None and (found is None or found.group(part) != asked):
                problems.append(
                    f"config.{field} is {described!r}, but its command line gives "
                    f"{_flag('trace', dests[0])} {asked}"
                )
    problems += [
        f"config.{key} is {config[key]!r}, but its command line gives no {_flag('trace', key)}"
        for key in ABSENT_NONE
        if key in config and config[key] is not None and options.get(key) is None
    ]
    return problems + _asked_problems(record, options) + _patch_cells_problems(config, options)


def _asked(options: dict[str, Any], dests: tuple[str, ...], absent: Any) -> Any:
    """The value a gate check takes from the command line's option(s) `dests`: one option's value
    (`absent` where the line leaves it out), several as an object of site, position and sweep."""
    if len(dests) == 1:
        return options.get(dests[0], absent)
    return {dest.removeprefix("patch_"): options.get(dest) for dest in dests}


def _asked_problems(record: EvidenceRecord, options: dict[str, Any]) -> list[str]:
    """Each command-line value a trace's gate check measured (ASKED_VALUES) that is not what the
    record's command line gives: the check held the run to another request than the user's."""
    measured = {g.id: g.measured for g in record.gates if isinstance(g.measured, dict)}
    problems = []
    for (gate_id, key), (dests, absent) in ASKED_VALUES.items():
        if key not in measured.get(gate_id, {}):
            continue
        recorded, value = measured[gate_id][key], _asked(options, dests, absent)
        if recorded != value:
            flags = "/".join(_flag("trace", d) for d in dests)
            problems.append(
                f"gates[{gate_id}].measured.{key} is {recorded!r}, but its command line's {flags} "
                f"give {value!r}"
            )
    return problems


def _patch_cells_problems(config: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """A patching's config.patch_sites and patch_positions against --patch-site, --patch-position
    (the last of config.tokens where none is given) and --patch-sweep: the cells it states it
    patched are the ones the line asked for (not position 10 stated under --patch-position 5)."""
    if options.get("patch") is None:
        return []
    site, position, sweep = (options.get(k) for k in ("patch_site", "patch_position", "patch_sweep"))
    sites, positions = config.get("patch_sites"), config.get("patch_positions")
    tokens = config.get("tokens")
    length = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    if sweep is not None:
        kinds = {s.split(".", 2)[2] if isinstance(s, str) and s.count(".") >= 2 else s for s in sites or []}
        want_sites, want_positions = (kinds == {sweep} and bool(sites)), "every"
        # before 1.29.0 a sweep stated its positions as the list of every one
        every = [want_positions, *([list(range(length))] if length is not None else [])]
        shown = f"--patch-sweep {sweep}"
    else:
        last = None if length is None else length - 1
        want_sites, want_positions = sites == [site], [last if position is None else position]
        every = [want_positions]
        shown = f"--patch-site {site}" + ("" if position is None else f" --patch-position {position}")
    if want_sites and positions in every:
        return []
    return [
        f"config.patch_sites is {sites!r} and config.patch_positions {positions!r}, but its command "
        f"line asks for {shown}"
        + (f" (positions {want_positions!r})" if want_positions != "every" else " (every position)")
    ]


def lens_position_problems(record: EvidenceRecord) -> list[str]:
    """A lens reading's config.position (trace.json's, contracts/derive/trace.py) where its command
    line gives no --position: the prompt's last, config.tokens − 1 (stack/cli/lens.py; not a reading
    shown at another position, in trace.json and the config alike)."""
    options = given(record.run.argv or [])
    config = record.config if isinstance(record.config, dict) else {}
    if options is None or options.get("command") != "lens" or options.get("train") or "position" in options:
        return []
    position, tokens = config.get("position"), config.get("tokens")
    if "position" not in config or not isinstance(tokens, int) or position == tokens - 1:
        return []
    return [
        f"config.position is {position!r}, but its command line gives no {_flag('lens', 'position')}: "
        f"the read position is the last of its {tokens} tokens, {tokens - 1}"
    ]


def _command_lines(record: EvidenceRecord) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, places) of the start and of every resume the record lists."""
    lines = [(record.run.argv or [], record.run.places or {})]
    for resume in record.metrics.get("resumes") or [] if isinstance(record.metrics, dict) else []:
        if isinstance(resume, dict) and isinstance(resume.get("argv"), list):
            places = resume.get("places")
            lines.append((resume["argv"], places if isinstance(places, dict) else {}))
    return lines


def lineage_path_problems(record: EvidenceRecord) -> list[str]:
    """Each lineage parent whose path no word of the record's command lines names."""
    if record.lineage is None:
        return []
    lines = _command_lines(record)
    if all((given(argv) or {}).get("resume") is not None for argv, _places in lines):
        return []  # a record that keeps only a resume's line (`stack es --resume`) keeps no start's
    return [
        f"its {ref.role} parent lies at {ref.path}, which none of its command lines names"
        for ref in record.lineage.parents
        if ref.path is not None
        and not any(same_place(ref.path, word, places) for argv, places in lines for word in _words(argv))
    ]


def _flag(command: str, dest: str) -> str:
    """How `stack COMMAND`'s help names the option (or positional) of destination `dest`."""
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for option in action.choices[command]._actions:
                if option.dest == dest:
                    return option.option_strings[0] if option.option_strings else str(option.metavar or dest)
    return dest


def input_problems(record: EvidenceRecord) -> list[str]:
    """The inputs a record restates against its first command line: `metrics.data_dir` is where
    its --data points, `metrics.init_from.path` where the word naming the model it started from
    points (START_OPTION); a path stated where the line names none is as false as another one.
    A line that only resumes names neither (the run's config does)."""
    options = given(record.run.argv or [])
    if options is None or options.get("resume") is not None:
        return []  # an unreadable line is command_line_problems'
    metrics = record.metrics if isinstance(record.metrics, dict) else {}
    command = str(options.get("command"))
    stated = [
        (f"metrics.{field}", _dotted(metrics, field), _input_option(field, command)) for field in INPUT_FIELDS
    ]
    problems = []
    for field, value, dest in stated:
        if not isinstance(value, str):
            continue
        which, named, places = _naming_line(record, options, dest)
        if dest is None or named.get(dest) is None:
            problems.append(
                f"its {field} is {value!r}, but its command line (`stack {command}`) names no such input"
            )
        elif not same_place(value, str(named[dest]), places):
            problems.append(
                f"its {field} is {value!r}, but its {which}command line's {_flag(command, dest)} names "
                f"{str(named[dest])!r}"
            )
    return problems


def _naming_line(
    record: EvidenceRecord, first: dict[str, Any], dest: str | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Which command line names the input of option `dest`, its options and its places: for --data
    the last line that gives one, since a resume given a moved DATA_DIR's new place (the same data:
    the resume checks its manifest) records that place; otherwise the first."""
    lines = [(given(argv) or {}, places) for argv, places in _command_lines(record)]
    if dest == "data":
        at = max((i for i, (named, _places) in enumerate(lines) if named.get("data") is not None), default=0)
        if at > 0:
            return f"resume {at}'s ", lines[at][0], lines[at][1]
    return "", first, record.run.places or {}


def _input_option(field: str, command: str) -> str | None:
    """The option of `stack COMMAND` that names the input a record's metrics restate as `field`."""
    if field == "base_checkpoint":
        return "base" if command == "memorization" else None
    return "data" if field == "data_dir" else START_OPTION.get(command)


def _dotted(table: dict[str, Any], field: str) -> Any:
    """The value at dotted `field` of nested tables (None where a part is missing)."""
    value: Any = table
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run_dir_problems(record: EvidenceRecord) -> list[str]:
    """A training record's run id is the name of the run directory its first command line writes."""
    options = given(record.run.argv or [])
    if record.run.kind not in LOOP_KINDS or options is None:
        return []
    run_dir = options.get("out") or options.get("resume")
    # A resumed leg or a set-up refusal filed in a ledger is the run's id with a suffix (contracts.evidence).
    if run_dir is not None and PurePath(os.path.normpath(str(run_dir))).name != run_named(record.run.id):
        return [
            f"run.id is {record.run.id!r}, but its command line writes the run directory {str(run_dir)!r}"
        ]
    return []


def _asked_options(record: EvidenceRecord) -> dict[str, Any]:
    """Each scalar option the training record's command lines give (the last line to give one
    wins): what `stack dpo` and `stack distill` turn into config keys of the same name."""
    asked: dict[str, Any] = {}
    for argv, _places in _command_lines(record):
        options = given(argv) or {}
        asked.update(
            (name, value)
            for name, value in options.items()
            if name not in NOT_CONFIG and isinstance(value, int | float | str) and not isinstance(value, bool)
        )
    return asked


def tuning_problems(record: EvidenceRecord) -> list[str]:
    """Each option a training command line gives (`--beta`, `--alpha`, `--lr`, `--steps`...) that
    config.toml does not hold, by its name, with the value given; and a tuning run's learning rate
    that is not constant after its warmup, which `stack dpo` and `stack distill` promise (so a
    resume with more --steps continues as a longer run would have). Read by name, not through the
    commands' own tables of keys, so a table that drops an option cannot vouch for itself."""
    config = record.config if isinstance(record.config, dict) else {}
    if record.run.kind not in LOOP_KINDS or not config:
        return []
    tables = [table for table in config.values() if isinstance(table, dict)]
    problems = []
    for name, value in sorted(_asked_options(record).items()):
        key = CONFIG_NAMES.get(name, name)
        if not any(table.get(key) == value for table in tables):
            problems.append(
                f"its command line gives {name}={value!r}, but config.toml holds no {key} of that value"
            )
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    sets = {key for argv, _ in _command_lines(record) for key in _set_keys(argv)}
    constant = record.run.kind in CONSTANT_RATE_KINDS and not sets & {"train.lr", "train.min_lr"}
    if constant and train.get("min_lr") != train.get("lr"):
        problems.append(
            f"a {record.run.kind} run's learning rate is constant after its warmup, but config.toml holds "
            f"train.lr={train.get('lr')!r} and train.min_lr={train.get('min_lr')!r}"
        )
    return problems


def _set_keys(argv: list[str]) -> list[str]:
    """The keys the `--set` items of a command line name."""
    options = given(argv) or {}
    return [item.split("=", 1)[0].strip() for item in options.get("sets") or []]


def argv_record_problems(record: EvidenceRecord) -> list[str]:
    """Everything the record says that its command lines contradict (see the module docstring)."""
    return [
        *command_line_problems(record),
        *option_problems(record),
        *trace_option_problems(record),
        *lens_position_problems(record),
        *lineage_path_problems(record),
        *input_problems(record),
        *run_dir_problems(record),
        *tuning_problems(record),
    ]
