"""Every way `stack` ends badly: one line on stderr, the right exit code, and nothing lost.

Bad values are refused while the command line is parsed (exit 2); the operating system's
refusals, undecodable files and malformed safetensors headers are one line naming the path and a
fix (exit 2); anything unexpected is one line naming a crash file that holds the traceback
(exit 1). docs/reliability.md tables each case against the test here that shows it.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

import stack.cli.gates
from stack.cli import CRASH_DIR_ENV, data_console, describe, main, os_error_line, values
from tests.support.artifact_support import reseal
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import smoke_args, write_corpus

REPO = Path(__file__).resolve().parents[2]
INTERNAL = re.compile(
    r"^stack gates: internal error: RuntimeError: planted; "
    r"full traceback written to (?P<file>.+\.txt), please report it$"
)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """What a failed command printed on stderr, checked to be one line and no traceback."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a tiny random model (no training needed)."""
    return save_run(tmp_path_factory.mktemp("cli-errors") / "run", tiny_model())


@pytest.fixture
def damaged(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the checkpoint, for one test to damage."""
    return Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))


@pytest.fixture(autouse=True)
def crash_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Crash files of these tests go into their tmp_path."""
    where = tmp_path / "crashes"
    monkeypatch.setenv(CRASH_DIR_ENV, str(where))
    return where


# --- values: refused while parsing, one line naming the option, exit 2 -------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sample", "RUN", "--seed", "-1"], "argument --seed: -1 is out of range"),
        (["sample", "RUN", "--seed", str(2**64)], f"argument --seed: {2**64} is out of range"),
        (["sample", "RUN", "--seed", "one"], "argument --seed: 'one' is not a whole number"),
        (["sample", "RUN", "--temperature", "nan"], "argument --temperature: 'nan' is not a finite number"),
        (["sample", "RUN", "--temperature", "inf"], "argument --temperature: 'inf' is not a finite number"),
        (
            ["sample", "RUN", "--temperature", "-0.5"],
            "argument --temperature: -0.5 is out of range; give 0 for greedy or a temperature of at least "
            "0.001",
        ),
        (["sample", "RUN", "--top-k", "0"], "argument --top-k: 0 must be at least 1"),
        (
            ["sample", "RUN", "--top-p", "1.5"],
            "argument --top-p: 1.5 is out of range; give a probability from",
        ),
        (["sample", "RUN", "--top-p", "1e-320"], "argument --top-p: 1e-320 is out of range"),
        (
            ["sample", "RUN", "--repetition-penalty", "0"],
            "argument --repetition-penalty: 0.0 is out of range; give a factor from 0.001 to 1000.0",
        ),
        (["sample", "RUN", "--temperature", "1e-320"], "argument --temperature: 1e-320 is out of range"),
        (
            ["sample", "RUN", "--repetition-penalty", "1e300"],
            "argument --repetition-penalty: 1e+300 is out of",
        ),
        (["sample", "RUN", "--device", "banana"], "argument --device: 'banana' is not a device"),
        (["es", "RUN", "--sigma", "1e-10"], "argument --sigma: 1e-10 is out of range; give a step size from"),
        (["es", "RUN", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
        (["lens", "RUN", "--train", "--lr", "0"], "argument --lr: 0.0 is out of range; give a step size"),
        (["sample", "RUN", "--device", "cuda:x"], "argument --device: 'cuda:x' is not a device"),
        (["sample", "RUN", "--tokens", "-1"], "argument --tokens: -1 must be at least 1"),
        (["sample", "RUN", "--prompt", "caf\udcc3"], "argument --prompt: holds bytes that are not UTF-8"),
        (["eval", "RUN", "--split", "val", "--device", "banana"], "argument --device: 'banana'"),
        (
            ["eval", "RUN", "--split", "val", "--batch-size", "0"],
            "argument --batch-size: 0 must be at least 1",
        ),
        (
            ["eval", "RUN", "--split", "val", "--batch-size", str(2**63)],
            f"argument --batch-size: {2**63} is more than {2**63 - 1}, the most torch can count",
        ),
        (
            ["eval", "RUN", "--split", "val", "--max-bytes", "-5"],
            "argument --max-bytes: -5 must be at least 1",
        ),
        (
            ["eval", "RUN", "--split", "val", "--record", "caf\udcc3"],
            "argument --record: 'caf\\udcc3' holds bytes that are not UTF-8 (at character 3)",
        ),
    ],
)
def test_a_bad_value_is_one_usage_line_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"stack {argv[0]}: error: {needle}")
    assert line.endswith(f"see `stack {argv[0]} --help`")


def test_no_cuda_here_is_refused_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["sample", "RUN", "--device", "cuda"]) == 2
    assert "this machine has no CUDA device; use cpu" in error_line(capsys)


def test_a_cuda_line_parses_on_a_machine_without_that_device() -> None:
    """The checker reads a GPU machine's records with stack's parser wherever it runs (the H100
    reference run's eval and trace lines are read on a CPU machine): only running asks for the device."""
    from tools.integrity.settings.argv_record import parsed

    options = parsed(["stack", "eval", "RUN", "--split", "val", "--device", "cuda:7"])
    assert isinstance(options, dict) and options["device"] == "cuda:7"
    assert main(["eval", "RUN", "--split", "val", "--device", "cuda:7"]) == 2


def test_the_edges_of_each_range_are_accepted(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", str(checkpoint), "--tokens", "3", "--temperature", "0", "--seed", str(values.SEED_MAX)]
    assert main([*argv, "--top-k", "1", "--top-p", "1", "--prompt", "gate"]) == 0
    assert capsys.readouterr().out.startswith("gate")
    assert values.seed("0") == 0 and values.probability("1") == 1.0 and values.device("cpu") == "cpu"


def test_text_beside_the_split_options_is_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "some.txt"
    text.write_text("some text to score\n")
    assert main(["eval", str(checkpoint), "--text", str(text), "--max-bytes", "10"]) == 2
    assert "--max-bytes go with --split val" in error_line(capsys)


# --- usage errors: argparse's, one line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        ([], "stack: error: the following arguments are required: COMMAND"),
        (["nope"], "stack: error: argument COMMAND: invalid choice: 'nope'"),
        (["sample"], "stack sample: error: the following arguments are required: RUN_DIR|CKPT"),
        # An argument the command does not take is refused in the command's name, whose --help
        # lists what it takes (argparse's own line named `stack` and pointed at `stack --help`).
        (["gates", "--bogus\nsecond"], "stack gates: error: unrecognized arguments: --bogus\\nsecond"),
        (
            ["es", "RUN", "--set", "a=1"],
            "stack es: error: unrecognized arguments: --set a=1; see `stack es --help`",
        ),
        (["sample", "RUN", "--tokens"], "stack sample: error: argument --tokens: expected one argument"),
        (["gates", "--area=--"], "stack gates: error: argument --area: expected one argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert error_line(capsys).startswith(start)


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--help"]) == 0 and "--temperature" in capsys.readouterr().out
    assert main(["--version"]) == 0 and "gatestack" in capsys.readouterr().out


# --- the operating system's refusals and undecodable files: one line, exit 2 ------------------
#
# Each case makes the real call fail on a real file; a stand-in `stack gates` makes it, so the
# lines checked are the central handler's, whatever the commands' own checks catch first.


def _write(path: Path) -> None:
    with open(path, "w") as handle:
        handle.write("x")


def _read(path: Path) -> None:
    path.read_bytes()


def _safetensors(path: Path) -> None:
    from safetensors import safe_open

    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with safe_open(str(path), framework="pt"):
        pass


FAILURES = {
    "enotdir": (
        lambda tmp: _write(tmp / "afile" / "sub"),
        "a path component of {tmp}/afile/sub is a file, not a directory; fix the path",
    ),
    "eisdir": (lambda tmp: _write(tmp), "{tmp} is a directory; give a file"),
    "eloop": (
        lambda tmp: _write(tmp / "loop"),
        "too many symlinks at {tmp}/loop (a symlink loop?); fix or remove the link",
    ),
    "eloop-resolved": (
        lambda tmp: (tmp / "loop").resolve(),
        "too many symlinks at {tmp}/loop (a symlink loop?); fix or remove the link",
    ),
    "enametoolong": (
        lambda tmp: _write(tmp / ("n" * 300)),
        "the name is too long: {tmp}/" + "n" * 300 + "; use a shorter path",
    ),
    "enoent": (lambda tmp: _read(tmp / "missing"), "no such file: {tmp}/missing; check the path"),
    "enospc": (
        lambda tmp: _write(Path("/dev/full")),
        "the disk is full writing a file whose name was not reported; free some space or write elsewhere, "
        "then run again",
    ),
    "utf8": (
        lambda tmp: b"caf\xc3(".decode("utf-8"),
        "a file it read is not utf-8 text (byte 0xc3 at offset 3: invalid continuation byte); "
        "pass UTF-8 text, or re-create the file if it was edited",
    ),
    "json": (
        lambda tmp: json.loads('{"step": }'),
        "a JSON file it read is malformed (Expecting value at line 1 column 10); "
        "restore it, or re-create it with the command that wrote it",
    ),
    "toml": (
        lambda tmp: tomllib.loads("steps = "),
        "a TOML file it read is malformed (Invalid value (at end of document)); fix the file's syntax",
    ),
    "yaml": (
        lambda tmp: yaml.safe_load("a: [1,\nb"),
        "a YAML file it read is malformed (expected ',' or ']', but got '<stream end>' at line 2 column 2); "
        "fix the file's syntax",
    ),
    "safetensors": (
        lambda tmp: _safetensors(tmp / "model.safetensors"),
        "a .safetensors file it read is malformed (Error while deserializing header: ",
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_an_expected_failure_is_one_line_exit_2(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fail, expected = FAILURES[case]
    if case == "enospc" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    (tmp_path / "afile").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.setattr(stack.cli.gates, "run", lambda _args: fail(tmp_path))
    assert main(["gates"]) == 2
    assert error_line(capsys).startswith("stack gates: error: " + expected.format(tmp=tmp_path))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "the disk is full writing /w; free some space or write elsewhere, then run again"),
        (errno.EACCES, "permission denied: /w; change its permissions or choose another path"),
        (errno.EPERM, "permission denied: /w; change its permissions or choose another path"),
        (errno.ENOTDIR, "a path component of /w is a file, not a directory; fix the path"),
        (errno.ELOOP, "too many symlinks at /w (a symlink loop?); fix or remove the link"),
        (errno.EISDIR, "/w is a directory; give a file"),
        (errno.ENOENT, "no such file: /w; check the path"),
        (errno.EROFS, "/w is on a read-only file system; choose a writable place"),
        (errno.ENAMETOOLONG, "the name is too long: /w; use a shorter path"),
        (errno.EDQUOT, "the disk quota is used up writing /w; free some space or write elsewhere"),
        (errno.EIO, "an input/output error at /w; check the disk and run again"),
        (errno.ECONNREFUSED, "Connection refused (ECONNREFUSED) at /w; check the path and the system"),
    ],
)
def test_each_errno_reads_as_its_problem_and_fix(code: int, expected: str) -> None:
    """Also the errnos a test cannot provoke here (EACCES as root, EROFS, EIO ...)."""
    assert os_error_line(OSError(code, os.strerror(code), "/w")).startswith(expected)


def test_an_os_error_names_both_paths_or_says_none_was_given() -> None:
    assert os_error_line(OSError(errno.EXDEV, "x", b"/a", None, "/b")).startswith("/a -> /b cannot be moved")
    assert "a file whose name was not reported" in os_error_line(OSError(errno.ENOSPC, "x"))
    assert (
        os_error_line(OSError("a library's own words"))
        == "a library's own words; check the files and paths given"
    )
    assert describe(ValueError("not one of ours")) is None


def test_a_closed_pipe_is_one_line_and_no_second_complaint(checkpoint: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", "inspect", str(checkpoint)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before the command writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.decode().splitlines() == [
        "stack inspect: error: the output was closed before it was all written (broken pipe); "
        "read it to the end"
    ]


def _with_its_reader_gone(argv: list[str]) -> int:
    """Run `stack ARGV` with stdout and stderr on one pipe whose reader has gone (`2>&1 | head -0`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    return proc.wait(timeout=300)


def test_a_closed_pipe_does_not_end_the_work_of_train_or_prepare(tmp_path: Path, crash_dir: Path) -> None:
    """`stack train ... 2>&1 | head -1` died at step 2 (exit 1, no line, no crash file,
    the run failed without a checkpoint), and prepare exited 2 over a complete DATA_DIR. A command
    that makes work drops what it prints once the reader has gone, and finishes: exit 0."""
    data = tmp_path / "data"
    prepare = ["prepare", str(write_corpus(tmp_path)), "--out", str(data), "--val-fraction", "0.25"]
    assert _with_its_reader_gone(prepare) == 0
    assert (data / "manifest.json").is_file()
    run = tmp_path / "run"
    assert _with_its_reader_gone(smoke_args(data, run, "train.steps=6", "ckpt.every=3")) == 0
    record = json.loads((run / "metadata.json").read_text())["run"]
    assert record["status"] == "completed", record
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert not crash_dir.exists() or not any(crash_dir.iterdir())


def test_markup_in_names_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    data_console().print("[/] :smile:")
    assert capsys.readouterr().out == "[/] :smile:\n"


def test_inspect_lists_what_a_resealed_state_lacks(damaged: Path, capsys: pytest.CaptureFixture) -> None:
    state = json.loads((damaged / "state.json").read_text())
    del state["epoch"], state["spec_version"]
    (damaged / "state.json").write_text(json.dumps(state))
    reseal(damaged, "state.json")
    assert main(["inspect", str(damaged), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state_keys_missing"] == ["epoch", "spec_version"] and summary["epoch"] is None
    assert main(["inspect", str(damaged)]) == 0
    assert "state.json lacks: epoch, spec_version" in capsys.readouterr().out


# --- the unexpected: one line naming the crash file, exit 1 -------------------------------------


def planted(_args: object) -> int:
    raise RuntimeError("planted")


def test_an_unexpected_error_leaves_its_traceback_in_a_crash_file(
    monkeypatch: pytest.MonkeyPatch, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack.cli.gates, "run", planted)  # a bug in a command: the handler is under test
    assert main(["gates", "--json"]) == 1
    found = INTERNAL.match(error_line(capsys))
    assert found is not None
    crash = Path(found["file"])
    assert crash.parent == crash_dir and crash.name.startswith("stack-gates-")
    report = crash.read_text()
    assert "command: 'stack gates --json'" in report
    assert "Traceback (most recent call last)" in report and 'raise RuntimeError("planted")' in report


def test_the_crash_file_falls_back_to_xdg_state_then_home_then_temp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack.cli.gates, "run", planted)
    monkeypatch.delenv(CRASH_DIR_ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert main(["gates"]) == 1
    assert (tmp_path / "state" / "gatestack" / "crashes") in Path(
        INTERNAL.match(error_line(capsys))["file"]
    ).parents

    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["gates"]) == 1
    home_state = tmp_path / "home" / ".local" / "state" / "gatestack" / "crashes"
    assert home_state in Path(INTERNAL.match(error_line(capsys))["file"]).parents

    (tmp_path / "blocked").write_text("a file where the crash directory would go")
    monkeypatch.setenv(CRASH_DIR_ENV, str(tmp_path / "blocked"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["gates"]) == 1
    fallback = tmp_path / "tmp" / "gatestack-crashes"
    assert fallback in Path(INTERNAL.match(error_line(capsys))["file"]).parents


def test_with_nowhere_to_write_the_traceback_goes_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack.cli.gates, "run", planted)
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv(CRASH_DIR_ENV, str(tmp_path / "blocked"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "blocked"))
    assert main(["gates"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "stack gates: internal error: RuntimeError: planted; "
        "no crash directory is writable, traceback follows\n"
    )
    assert 'raise RuntimeError("planted")' in err  # not lost


def test_an_interrupt_is_one_line_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(stack.cli.gates, "run", interrupted)
    assert main(["gates"]) == 130
    assert error_line(capsys) == "stack gates: interrupted by SIGINT"


# A command that is sent SIGTERM in the middle of its work, in a process of its own (before the
# fix SIGTERM killed the process outright).
SIGTERMED = """
import os, signal, sys, time
import stack.cli.gates
from stack.cli import main

def run(_args):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends
    finally:
        print("cleaned up", file=sys.stderr)
    return 0

stack.cli.gates.run = run
before = signal.getsignal(signal.SIGTERM)
code = main(["gates"])
assert signal.getsignal(signal.SIGTERM) == before
sys.exit(code)
"""


def test_sigterm_is_one_line_exit_143_after_the_command_cleans_up() -> None:
    """SIGTERM, which killed a command outright, is raised through it as SIGINT is (its
    finally blocks run) and ends it with one line and status 143; the handler is put back after."""
    done = subprocess.run(
        [sys.executable, "-c", SIGTERMED],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == ["cleaned up", "stack gates: interrupted by SIGTERM"], done.stderr


@pytest.mark.parametrize(
    ("command", "raised", "said"),
    [
        ("train", MemoryError(), "the machine ran out of memory; lower train.batch_size"),
        (
            "sample",
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)"
            ),
            "the machine ran out of memory (it asked for 25600000000 bytes at once); lower --tokens",
        ),
        ("gates", MemoryError(), "the machine ran out of memory; close what else holds memory"),
    ],
)
def test_running_out_of_memory_is_one_line_naming_what_to_lower(
    command: str,
    raised: BaseException,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A MemoryError, or torch's allocator refusing, anywhere in a command is bad input:
    one line saying what ran out and the setting of that command to lower, exit 2, no crash file."""
    module = importlib.import_module(f"stack.cli.{command}")

    def runs_out(_args: object) -> int:
        raise raised

    monkeypatch.setattr(module, "run", runs_out)
    parser_args = {"train": ["--data", "d", "--out", "o"], "sample": ["RUN"], "gates": []}[command]
    assert main([command, *parser_args]) == 2
    line = error_line(capsys)
    assert line.startswith(f"stack {command}: error: {said}"), line


def test_a_message_with_line_breaks_stays_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from contracts.errors import BadInput

    def multi_line(_args: object) -> int:
        raise BadInput("first\nsecond\u2028third \udcff")

    monkeypatch.setattr(stack.cli.gates, "run", multi_line)
    assert main(["gates"]) == 2
    assert error_line(capsys) == "stack gates: error: first\\nsecond\\u2028third \\udcff"


def test_the_installed_command_prints_one_line_too(tmp_path: Path) -> None:
    """Through the interpreter's real stderr, with its own encoding, not pytest's capture."""
    argv = [sys.executable, "-m", "stack", "sample", str(tmp_path), "--prompt", "caf\udcc3"]
    proc = subprocess.run(argv, capture_output=True, cwd=REPO, check=False)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "stack sample: error: argument --prompt: holds bytes that are not UTF-8 (at character 3); "
        "pass UTF-8 text; see `stack sample --help`"
    ]


# -- input too deep for a parser, or text that cannot be written: the input's fault, exit 2 ---------


def _nested_json(depth: int) -> str:
    return '{"messages": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    ("name", "text", "args", "expected"),
    [
        ("deep.jsonl", _nested_json(50_000), ["--format", "chat"], "nests deeper than the JSON reader"),
        (
            "lone.jsonl",
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "hi \ud800"},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            ),
            ["--format", "chat"],
            "lone surrogate (U+D800)",
        ),
    ],
)
def test_input_a_reader_cannot_follow_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, args: list[str], expected: str
) -> None:
    (tmp_path / name).write_text(text + "\n", encoding="utf-8")
    code = main(["prepare", str(tmp_path / name), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and "internal error" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_lone_surrogate_that_may_be_a_name_byte_is_not_blamed_on_json_alone() -> None:
    """A path's byte that is not UTF-8 (U+DC80-U+DCFF, Python's stand-in for it)
    that reaches a file is not reported as a JSON escape of "a text it read": the line names the byte
    and both causes it can be. Any other lone surrogate comes from JSON alone and is said as a JSON escape."""
    with pytest.raises(UnicodeEncodeError) as name:
        os.fsdecode(b"loop\xe9.txt").encode("utf-8")
    line = describe(name.value)
    assert line is not None and "lone surrogate (U+DCE9)" in line and "the byte 0xE9 of a path" in line
    assert "give that path a UTF-8 name" in line
    with pytest.raises(UnicodeEncodeError) as escape:
        "hi \ud800".encode("utf-8")
    assert "escapes must come as high/low pairs" in str(describe(escape.value))


def test_filters_nested_deeper_than_yaml_reads_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "filters.yaml").write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    (tmp_path / "doc.txt").write_text("some text\n")
    code = main(
        [
            "prepare",
            str(tmp_path / "doc.txt"),
            "--filters",
            str(tmp_path / "filters.yaml"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    # libyaml refuses the depth itself; PyYAML's pure-Python reader runs out of recursion instead
    reasons = ("exceeded maximum nesting depth", "nests deeper than the YAML reader")
    assert code == 2 and len(err.splitlines()) == 1 and any(reason in err for reason in reasons)


def test_a_recursion_error_outside_a_reader_stays_an_internal_error() -> None:
    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    with pytest.raises(RecursionError) as caught:
        recurse(0)
    assert describe(caught.value) is None


@pytest.mark.parametrize("sites", [2, 200])
def test_a_fired_gate_is_one_readable_line_whatever_it_measured(sites: int) -> None:
    """A fired gate's line names the gate, its revision and the judge's message; its measured values
    follow while they are short, and are counted where they would run to kilobytes (a trace's
    GATE-TRACE-002 measures every site) and bury the message."""
    from contracts.errors import GateViolation
    from stack.cli import FIRED_DETAIL_CHARS, fired_line

    measured = {f"layers.{i}.q": {"max_abs_diff": 0.5, "ref_absmax": 1.0} for i in range(sites)}
    line = fired_line(GateViolation("GATE-TRACE-002", 13, "layers.1.q is not q", measured, {"rtol": 1e-3}))
    assert line.startswith("GATE-TRACE-002 rev 13: layers.1.q is not q (")
    assert ("layers.0.q" in line) is (sites == 2) and len(line) < 200 + FIRED_DETAIL_CHARS
    assert line.endswith(
        "threshold {'rtol': 0.001})" if sites == 2 else "(200 measured value(s), too long for this line)"
    )
