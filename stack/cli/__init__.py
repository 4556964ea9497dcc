"""The `stack` command: one sub-command per module of this package.

Each module in COMMANDS exposes `register(subparsers)`, which adds its parser and sets
`func`. Modules import heavy libraries (torch) inside their functions, so `stack --help`
stays fast.

Every way a command ends badly is decided here, once, so no command can leak a traceback or
lose an error (docs/reliability.md tables each case):

- exit 2, one line naming the problem and the fix: a usage error, `BadInput`, an `OSError`
  (named by its errno, with the path), a file that does not decode (UTF-8, JSON, TOML, YAML) and
  a malformed safetensors header;
- exit 3, one line naming the gate: a `GateViolation`;
- exit 130 (Ctrl-C's SIGINT) or 143 (SIGTERM), one line saying so and what was kept: a signal
  that stopped the command (`Interrupted`; SIGTERM is raised as one for the whole command, as
  Python raises SIGINT, so every command cleans up and ends the same way; the training loop
  catches both first, checkpoints, and then raises it);
- exit 1, one line naming a crash file that holds the full traceback: anything else, which is a
  bug of gatestack's to report. The file goes under $GATESTACK_CRASH_DIR, else
  $XDG_STATE_HOME/gatestack/crashes (~/.local/state/gatestack/crashes), else, when that cannot
  be written, the system temp dir's gatestack-crashes/.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, BadInput, GateViolation, Interrupted
from stack import __version__
from stack.cli import values

if TYPE_CHECKING:
    from rich.console import Console

COMMANDS = (
    "gates",
    "prepare",
    "train",
    "sft",
    "sample",
    "eval",
    "inspect",
    "export",
    "import-hf",
    "trace",
    "lens",
    "laser",
    "quantize",
    "es",
    "lora",
    "dpo",
    "distill",
    "synth",
    "evalmatrix",
    "memorization",
    "options-matrix",
    "release",
)
EXIT_INTERNAL = 1
CRASH_DIR_ENV = "GATESTACK_CRASH_DIR"
MESSAGE_LIMIT = 500  # characters of an unexpected exception's message shown on the terminal
# The lone surrogates Python hands over for the bytes 0x80-0xFF of a name or argument that is not UTF-8
# (os.fsdecode's surrogateescape): U+DC80-U+DCFF; a JSON escape may make these too, or any other.
ESCAPED_BYTES = range(0xDC80, 0xDD00)

# What an errno means for the user, and the fix; {path} is the file the operating system named.
_ERRNO_LINES: dict[int, str] = {
    errno.ENOSPC: "the disk is full writing {path}; free some space or write elsewhere, then run again",
    errno.EDQUOT: "the disk quota is used up writing {path}; free some space or write elsewhere",
    errno.EACCES: "permission denied: {path}; change its permissions or choose another path",
    errno.EPERM: "permission denied: {path}; change its permissions or choose another path",
    errno.ENOTDIR: "a path component of {path} is a file, not a directory; fix the path",
    errno.ELOOP: "too many symlinks at {path} (a symlink loop?); fix or remove the link",
    errno.EISDIR: "{path} is a directory; give a file",
    errno.ENOENT: "no such file: {path}; check the path",
    errno.EROFS: "{path} is on a read-only file system; choose a writable place",
    errno.ENAMETOOLONG: "the name is too long: {path}; use a shorter path",
    errno.EEXIST: "{path} already exists; remove it or choose another path",
    errno.ENOTEMPTY: "{path} is a directory that is not empty; empty it or choose another path",
    errno.EXDEV: "{path} cannot be moved across file systems; keep both on one file system",
    errno.EMFILE: "too many open files at {path}; raise the limit (ulimit -n) and run again",
    errno.ENFILE: "the system ran out of open files at {path}; close other programs and run again",
    errno.EFBIG: "{path} would grow past what its file system allows; write elsewhere",
    errno.EIO: "an input/output error at {path}; check the disk and run again",
    errno.EBUSY: "{path} is busy; stop what holds it and run again",
    errno.ETXTBSY: "{path} is busy; stop what holds it and run again",
    errno.ENXIO: "{path} is not a usable device; give a regular file",
    errno.ENODEV: "{path} is not a usable device; give a regular file",
    errno.EPIPE: "the output was closed before it was all written (broken pipe); read it to the end",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage error is one line: the problem, then where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """argparse's, but an argument the sub-command does not know is refused in that
        sub-command's name, whose --help lists what it takes (argparse names `stack` alone)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.named(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def named(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The sub-command's parser the parsed arguments chose, or this one before any was."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None), self)
        return self

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        """Refuse `--opt=--` as a missing value: Python 3.11's argparse drops the '--' and hands
        the option an empty list, which no command expects."""
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one argument")
        return super()._get_values(action, arg_strings)


def build_parser() -> Parser:
    """The full parser, with every sub-command registered."""
    parser = Parser(prog="stack", description="Train small language models under acceptance gates.")
    parser.add_argument("--version", action="version", version=f"gatestack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"stack.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; every failure becomes one line on stderr and its exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    command = _command_name(given)
    try:
        with sigterm_raises():
            return _dispatch(given)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, or a loop that stopped at a signal (Interrupted)
        stopped = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT.name)
        said = f": {stopped.detail}" if stopped.detail else ""
        return _end(f"{command}: interrupted by {stopped.signal_name}{said}", stopped.exit_code)
    except SystemExit:  # a command's own exit carries its own status and message
        raise
    except BaseException as exc:  # every failure ends here, even those outside Exception (a Rust panic)
        return report_failure(command, given, exc)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `Interrupted` for the block, as Python raises SIGINT as KeyboardInterrupt: a
    command a scheduler stops cleans up (finally blocks, staging) and ends with one line and 143,
    instead of dying mid-write. Only the main thread can set a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command_name(argv: list[str]) -> str:
    """'stack NAME' for the sub-command the arguments name, 'stack' before one is known."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return f"stack {first}" if first in COMMANDS else "stack"


def _dispatch(argv: list[str]) -> int:
    """Parse, then run the sub-command; argparse's own exits (--help, usage errors) are returned."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        absent = values.absent_device(getattr(args, "device", None))
        if absent:  # the machine's question, after the line's (stack.cli.values.device)
            parser.named(args).error(f"argument --device: {absent}")
    except SystemExit as exc:  # argparse has printed the help, the version or its one-line error
        return int(exc.code or 0)
    args.argv = ["stack", *argv]  # recorded in evidence
    from stack.outputs.lock import command_scope

    with command_scope(_command_name(argv)), _outliving_a_closed_pipe(args.command in MAKES_WORK):
        return int(args.func(args) or 0)


# The commands whose work is what they make (a run, a DATA_DIR), not what they print: a reader that
# goes away (`| head -1`, quitting `less`) ends only what they print.
MAKES_WORK = frozenset({"train", "sft", "dpo", "distill", "es", "prepare"})


class _OutlivedStream:
    """stdout or stderr of a command that outlives its reader: the first write or flush that meets
    a closed pipe points the stream's descriptor at /dev/null, and that line and every later one is
    dropped, so the work goes on and ends as it would have (its record, checkpoints, exit code)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _silence(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _silence(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _outliving_a_closed_pipe(makes_work: bool) -> Iterator[None]:
    """For a command that makes work (MAKES_WORK), stdout and stderr that outlive their reader."""
    if not makes_work:
        yield
        return
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_OutlivedStream(s) for s in streams)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


# The longest measured values a gate's line quotes: a trace's GATE-TRACE-002 measures every site,
# kilobytes that would bury the judge's message, which names what fired.
FIRED_DETAIL_CHARS = 400


def fired_line(exc: GateViolation) -> str:
    """A fired gate as its line says it: the gate, its revision and the judge's message, and what it
    measured and its thresholds where they are short enough to read there."""
    text = str(exc)
    if len(text) - len(f"{exc.gate_id} rev {exc.revision}: {exc.message}") <= FIRED_DETAIL_CHARS:
        return text
    count = len(exc.measured) if isinstance(exc.measured, dict) else 1
    return (
        f"{exc.gate_id} rev {exc.revision}: {exc.message} ({count} measured value(s), too long for this line)"
    )


def report_failure(command: str, argv: list[str], exc: BaseException) -> int:
    """Print the one line for `exc` and return its exit code; unexpected ones leave a crash file."""
    if isinstance(exc, GateViolation):
        return _end(f"{command}: gate fired: {fired_line(exc)}", EXIT_GATE)
    problem = out_of_memory(command, exc) or describe(exc)
    if problem is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            _silence(sys.stdout)
        return _end(f"{command}: error: {problem}", EXIT_BAD_INPUT)
    return _internal_error(command, argv, exc)


def _end(line: str, code: int) -> int:
    """Say the line a command ends on and return its exit code; a worker of `stack train --nproc`
    hands both to its launcher instead, which says each distinct line once (stack.train.launch)."""
    from stack.train.launch import hand_over

    if not hand_over(one_line(line), code):
        _say(line)
    return code


def _internal_error(command: str, argv: list[str], exc: BaseException) -> int:
    """One line naming the exception and the crash file that holds its traceback; exit 1."""
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if len(summary) > MESSAGE_LIMIT:
        summary = summary[:MESSAGE_LIMIT] + "…"
    report = crash_report(argv, exc)
    crash_file = write_crash_file(command, report)
    if crash_file is None:  # nowhere to write: the traceback goes to the terminal rather than nowhere
        _say(f"{command}: internal error: {summary}; no crash directory is writable, traceback follows")
        print(report, file=sys.stderr)
        return EXIT_INTERNAL
    where = f"full traceback written to {crash_file}, please report it"
    return _end(f"{command}: internal error: {summary}; {where}", EXIT_INTERNAL)


def describe(exc: BaseException) -> str | None:
    """The problem and its fix for a failure the user can act on; None for an unexpected one."""
    import json
    import tomllib

    import yaml
    from safetensors import SafetensorError

    from stack.data.damage import Damaged
    from stack.data.ownership import remedy
    from stack.outputs.staging import os_error_of

    if isinstance(exc, Damaged):  # the fix prepare's own --force rule admits (stack.data.damage)
        return f"{exc.problem}; {remedy(exc)}"
    if isinstance(exc, BadInput):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_line(exc)
    loop = exc.__context__
    if isinstance(exc, RuntimeError) and isinstance(loop, OSError) and loop.errno == errno.ELOOP:
        return os_error_line(loop)  # Python 3.11's Path.resolve() reports a symlink loop this way
    parser = _parser_frames(exc) if isinstance(exc, RecursionError) else None
    if parser is not None:
        return (
            f"a file it read nests deeper than the {parser} reader can follow (Python's recursion "
            "limit); flatten the nesting, or fix the file if it was not meant to nest"
        )
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start : exc.end]
        what = f"U+{ord(bad[0]):04X}" if bad else "a character"
        if exc.reason == "surrogates not allowed" and bad and ord(bad[0]) in ESCAPED_BYTES:
            byte = ord(bad[0]) - 0xDC00
            return (
                f"a text it wrote holds a lone surrogate ({what}), which is no character and cannot be "
                f"written as {exc.encoding}: it stands for the byte 0x{byte:02X} of a path or argument "
                "that is not UTF-8, or comes from an unpaired \\uD800-\\uDFFF escape in JSON; give "
                "that path a UTF-8 name, or fix or drop that text"
            )
        if exc.reason == "surrogates not allowed":
            return (
                f"a text it read holds a lone surrogate ({what}), which is no character and cannot be "
                f"written as {exc.encoding}; in JSON, \\uD800-\\uDFFF escapes must come as high/low "
                "pairs: fix or drop that text"
            )
        return (
            f"a text it read holds {what}, which cannot be written as {exc.encoding}; fix or drop that text"
        )
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.object[exc.start : exc.start + 1].hex()
        return (
            f"a file it read is not {exc.encoding} text (byte 0x{byte} at offset {exc.start}: "
            f"{exc.reason}); pass UTF-8 text, or re-create the file if it was edited"
        )
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"a JSON file it read is malformed ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "restore it, or re-create it with the command that wrote it"
        )
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"a TOML file it read is malformed ({exc}); fix the file's syntax"
    if isinstance(exc, yaml.YAMLError):
        return f"a YAML file it read is malformed ({_yaml_problem(exc)}); fix the file's syntax"
    if isinstance(exc, SafetensorError):
        refused = os_error_of(exc)  # a write the operating system refused (a full disk) is no malformed file
        if refused is not None:
            return os_error_line(refused)
        return f"a .safetensors file it read is malformed ({exc}); restore it or re-create it"
    return None


# The settings that size what each command holds in memory, for the line of one that ran out.
MEMORY_SETTINGS = {
    "stack train": "train.batch_size (train.grad_accum keeps the tokens per step) or train.seq_len",
    "stack sft": "train.batch_size (train.grad_accum keeps the tokens per step) or model.ctx",
    "stack dpo": "--batch-size",
    "stack distill": "--batch-size",
    "stack es": "--batch-size or --workers",
    "stack eval": "--batch-size",
    "stack lens": "--batch-size",
    "stack memorization": "--batch-size",
    "stack prepare": "--working-set or --workers",
    "stack sample": "--tokens",
}
_ASKED = re.compile(r"(?:tried to allocate|Tried to allocate) ([0-9.]+ ?[KMGT]?i?B|[0-9]+ bytes)")


def out_of_memory(command: str, exc: BaseException) -> str | None:
    """The one line for a command that ran out of memory (Python's MemoryError, torch's allocators'
    errors, on the GPU or the CPU): what ran out, how much was asked, and the setting to lower;
    None for any other failure. Bad input, not a bug: the sizes were the user's to choose."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = " ".join(str(exc).split())
    cpu = isinstance(exc, RuntimeError) and "can't allocate memory" in text
    if not (isinstance(exc, MemoryError) or "OutOfMemoryError" in names or cpu):
        return None
    where = "the GPU" if "OutOfMemoryError" in names or "CUDA" in text else "the machine"
    asked = _ASKED.search(text)
    said = f" (it asked for {asked[1]} at once)" if asked else ""
    setting = MEMORY_SETTINGS.get(command)
    lower = f"lower {setting}, or" if setting else "close what else holds memory, or"
    return f"{where} ran out of memory{said}; {lower} run it where there is more"


# The readers of the formats users hand in; a RecursionError raised inside one is the input's
# nesting, not a bug (a RecursionError anywhere else stays an internal error).
PARSERS = {"json": "JSON", "yaml": "YAML", "tomllib": "TOML"}  # package → the format it reads


def _parser_frames(exc: BaseException) -> str | None:
    """The format whose reader the traceback of `exc` passes through, or None."""
    import traceback

    for frame in traceback.extract_tb(exc.__traceback__):
        found = next((fmt for package, fmt in PARSERS.items() if package in Path(frame.filename).parts), None)
        if found is not None:
            return found
    return None


def _yaml_problem(exc: BaseException) -> str:
    """PyYAML's problem and where it is, without the quoted snippet its message spreads over lines."""
    import yaml

    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return " ".join(str(exc).split())
    where = f"line {mark.line + 1} column {mark.column + 1}"
    if not mark.name.startswith("<"):  # a file's name; "<unicode string>" when parsed from text
        where += f" of {mark.name}"
    return f"{exc.problem} at {where}"


def os_error_line(exc: OSError) -> str:
    """What the operating system refused, on which path, and the fix (by errno)."""
    if exc.filename is None:
        path = "a file whose name was not reported"
    else:
        path = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
        if exc.filename2 is not None:
            path += f" -> {os.fsdecode(exc.filename2) if isinstance(exc.filename2, bytes) else exc.filename2}"
    template = _ERRNO_LINES.get(exc.errno) if exc.errno is not None else None
    if template is not None:
        return template.format(path=path)
    if exc.errno is None:
        return f"{exc}; check the files and paths given"
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{exc.strerror} ({name}) at {path}; check the path and the system, then run again"


def crash_report(argv: list[str], exc: BaseException) -> str:
    """Everything a bug report needs: version, command line, interpreter, and the whole traceback."""
    import datetime
    import platform
    import traceback

    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        f"gatestack {__version__} internal error at {when}",
        f"command: {' '.join(['stack', *argv])!r}",
        f"python: {sys.version.split()[0]} on {platform.platform()}",
        f"cwd: {_cwd()}",
        "",
        *traceback.format_exception(exc),
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def _cwd() -> str:
    """The working directory, or a note that it was removed while the command ran."""
    try:
        return os.getcwd()
    except OSError:
        return "(removed)"


def crash_dirs() -> list[Path]:
    """Where a crash file may go, first choice first (see the module docstring)."""
    import tempfile

    override = os.environ.get(CRASH_DIR_ENV)
    first = Path(override) if override else _state_dir()
    fallback = Path(tempfile.gettempdir()) / "gatestack-crashes"
    return [fallback] if first is None else [first, fallback]


def _state_dir() -> Path | None:
    """$XDG_STATE_HOME/gatestack/crashes, or its default under the home directory; None without a home."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):  # the XDG spec: a relative value is invalid and ignored
        return Path(state) / "gatestack" / "crashes"
    try:
        return Path.home() / ".local" / "state" / "gatestack" / "crashes"
    except RuntimeError:  # no HOME and no password entry to find one
        return None


def write_crash_file(command: str, report: str) -> Path | None:
    """Write `report` to a new file in the first crash directory that takes it; None if none does."""
    import tempfile
    import time

    prefix = f"{command.replace(' ', '-')}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-"
    for directory in crash_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=directory)
            with open(handle, "w", encoding="utf-8", errors="backslashreplace") as out:
                out.write(report)
        except OSError:
            continue
        return Path(name)
    return None


def data_console() -> Console:
    """A rich console for names and values read from files: markup and emoji codes in them are
    printed as they are, and a closed pipe is raised to `main` (one line, exit 2), where rich
    would exit 1 without a word."""
    from rich.console import Console

    class DataConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return DataConsole(markup=False, emoji=False, highlight=False)


def one_line(text: str) -> str:
    """`text` as one printable line: line breaks, control characters and undecodable bytes escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _say(line: str) -> None:
    """Print one line on stderr, whatever the message held; a stderr whose reader has gone takes
    none, and the command still ends with its own exit code (not 1, with no crash file)."""
    try:
        print(one_line(line), file=sys.stderr, flush=True)
    except BrokenPipeError:
        _silence(sys.stderr)


def _silence(stream: TextIO) -> None:
    """Point `stream` at /dev/null, so no later write, nor the interpreter's last flush, can fail on
    its closed pipe again."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (captured output): nothing will be flushed to a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
