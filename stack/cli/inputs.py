"""Every input of every command, and the kind of artifact each takes (stack.artifacts).

A command checks its inputs with `check_inputs` once its options are consistent and before it
reads or writes anything, so a valid artifact of another kind is refused in one line that names
both kinds and the command that fits. `INPUTS` is the table docs/reliability.md shows ("What
each command accepts", rendered by tools/site/accepts.py) and tests/cli/test_artifacts.py walks,
command by command and kind by kind; a test also holds it to the parsers, so a new path
argument cannot be left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.artifacts import Identity, Need, require


def _paths(value: Any) -> list[Path]:
    """The paths of an argument's value: one, several (nargs), or none."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [Path(v) for v in value]
    return [Path(value)]


@dataclass(frozen=True)
class Input:
    """One input of one command: the option (or positional) and the need it takes."""

    command: str  # as typed after `stack`, e.g. "sample" or "lora"
    option: str  # "--data", or the positional's metavar
    dest: str  # the argparse destination that holds it
    need: str
    when: str = ""  # words for the docs when the input applies only with another option
    applies: Callable[[Any], bool] = field(default=lambda args: True, repr=False)
    # The paths it names, from the parsed arguments (default: the value of `dest`, one or several).
    paths: Callable[[Any], list[Path]] | None = field(default=None, repr=False)

    def require(self, path: Path, refused: Callable[[Identity, Need], str] | None = None) -> Identity:
        """The identity of `path` when this input takes it, else BadInput (stack.artifacts.require):
        the one rule for the input, whether the user named `path` with the option or the command
        found it itself (`refused` then words the line: `stack eval`'s run's own DATA_DIR)."""
        return require(path, self.need, self.who, refused)

    @property
    def who(self) -> str:
        """How a refusal names this input: `stack sample`, `stack eval --data`, `stack lora export`:
        the command with the option's lower-case words and flags, its METAVARs left out."""
        shown = [word for word in self.option.split() if word.startswith("-") or word.islower()]
        return f"`stack {' '.join([self.command, *shown])}`"


def _prepare_inputs(args: Any) -> list[Path]:
    """The paths of `stack prepare`'s INPUTs, NAME=PATH read as PATH."""
    from stack.data.corpus import parse_input

    return [parse_input(str(arg), "main")[1] for arg in args.inputs]


def _hf_dir(args: Any) -> list[Path]:
    """DIR of `--tokenizer hf:DIR`."""
    from stack.data.pretrained import directory_of

    directory = directory_of(str(args.tokenizer))
    return [] if directory is None else [directory]


def _is_hf_dir(args: Any) -> bool:
    return bool(_hf_dir(args))


def _is_model_dir(args: Any) -> bool:
    """`--tokenizer` names a directory to take the tokenizer from: neither a name nor hf:DIR."""
    from stack.data.tokenizer import TOKENIZER_NAMES

    return args.tokenizer not in TOKENIZER_NAMES and not _is_hf_dir(args)


def _model_dir(args: Any) -> list[Path]:
    return [Path(args.tokenizer)]


def _action(*actions: str) -> Callable[[Any], bool]:
    """An input of `stack lora` that applies to these actions only."""
    return lambda args: args.action in actions


INPUTS: tuple[Input, ...] = (
    Input("sample", "RUN_DIR|CKPT", "path", "model"),
    Input("eval", "RUN_DIR|CKPT", "path", "model"),
    Input("eval", "--text", "text", "text"),
    Input("eval", "--data", "data", "data-pretrain"),
    Input("inspect", "RUN_DIR|CKPT", "path", "model"),
    Input("export", "RUN_DIR|CKPT", "path", "model"),
    Input("export", "--sample-text", "sample_text", "text"),
    Input("import-hf", "DIR", "path", "hf"),
    Input("import-hf", "--sample-text", "sample_text", "text"),
    Input("trace", "CKPT", "path", "model"),
    Input("trace", "--against", "against", "model"),
    Input("trace", "--compare", "compare", "trace-dump"),
    Input("lens", "CKPT", "path", "model"),
    Input("lens", "--lens", "lens", "lens"),
    Input("lens", "--data", "data", "data-pretrain", "with --train"),
    Input("laser", "RUN_DIR|CKPT", "path", "model"),
    Input("quantize", "RUN_DIR|CKPT", "path", "model"),
    Input("quantize", "--sample-text", "sample_text", "text"),
    Input("es", "RUN_DIR|CKPT", "path", "model"),
    Input("es", "--data", "data", "data-pretrain"),
    Input("es", "--resume", "resume", "es-run"),
    Input("lora", "RUN_DIR|ADAPTER_DIR", "path", "lora", "merge, inspect", _action("merge", "inspect")),
    Input("lora", "merge --base", "base", "model-merged", "merge of an adapter directory", _action("merge")),
    Input("lora", "export RUN_DIR", "path", "model", "export", _action("export")),
    Input("lora", "export --base", "base", "hf", "export", _action("export")),
    Input("lora", "import PEFT_DIR", "path", "peft-adapter", "import", _action("import")),
    Input("lora", "import --base", "base", "model-merged", "import", _action("import")),
    Input("lora", "--sample-text", "sample_text", "text", "export, import"),
    Input("train", "--data", "data", "data", "the kind its train.task reads"),
    Input("train", "--init-from", "init_from", "model"),
    Input("train", "--resume", "resume", "training-run"),
    Input("sft", "--data", "data", "data-sft"),
    Input("sft", "--init-from", "init_from", "model"),
    Input("sft", "--resume", "resume", "training-run"),
    Input("dpo", "RUN_DIR|CKPT", "path", "model"),
    Input("dpo", "--data", "data", "data-prefs"),
    Input("dpo", "--reference", "reference", "model-merged"),
    Input("dpo", "--resume", "resume", "training-run"),
    Input("distill", "TEACHER", "path", "model"),
    Input("distill", "--data", "data", "data-pretrain"),
    Input("distill", "--student", "student", "model"),
    Input("distill", "--resume", "resume", "training-run"),
    Input("synth", "RUN_DIR|CKPT", "path", "model"),
    Input("evalmatrix", "BASE", "path", "model"),
    Input("evalmatrix", "--items", "items", "jsonl"),
    Input("evalmatrix", "--train", "train", "jsonl"),
    Input("evalmatrix", "--adapter", "adapter", "model-or-adapter"),
    Input("evalmatrix", "--docs", "docs", "documents"),
    Input("memorization", "TUNED", "path", "model-or-adapter"),
    Input("memorization", "--base", "base", "model-merged"),
    Input("memorization", "--data", "data", "data-text"),
    Input("memorization", "--examples", "examples", "jsonl"),
    Input("options-matrix", "--data", "data", "data-pretrain"),
    Input("release", "RUN_DIR", "run_dir", "run"),
    Input("release", "--ledger-record", "ledger_record", "evidence"),
    Input("prepare", "INPUT", "inputs", "corpus", "", lambda args: not args.verify, _prepare_inputs),
    Input("prepare", "--verify --out", "out", "data", "", lambda args: args.verify),
    Input("prepare", "--tokenizer", "tokenizer", "hf-tokenizer", "as hf:DIR", _is_hf_dir, _hf_dir),
    Input("prepare", "--tokenizer", "tokenizer", "tokenizer-source", "as RUN_DIR", _is_model_dir, _model_dir),
)


def inputs_of(command: str) -> list[Input]:
    """The inputs of `command`, in the order they are checked."""
    return [i for i in INPUTS if i.command == command]


def input_of(command: str, option: str) -> Input:
    """The one entry of `command`'s `option`, for a path the command finds where the option is not
    given, held to what the option takes."""
    (entry,) = [i for i in inputs_of(command) if i.option == option]
    return entry


def check_inputs(command: str, args: Any) -> None:
    """Refuse, before any work, an input of `command` that is not a kind it takes."""
    for entry in inputs_of(command):
        value = getattr(args, entry.dest, None)
        if value is None or value == [] or not entry.applies(args):
            continue
        for path in entry.paths(args) if entry.paths is not None else _paths(value):
            entry.require(path)
