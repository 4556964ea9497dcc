"""The `stack` command: sub-commands exist, and bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stack.cli import main


def test_gates_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gates", "--json", "--area", "integ"]) == 0
    gates = json.loads(capsys.readouterr().out)
    assert {g["id"] for g in gates} == {"GATE-INTEG-001", "GATE-INTEG-002"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["gates", "GATE-NOPE-001"], "unknown gate id 'GATE-NOPE-001'"),  # integrity: planted
        (["gates", "--area", "nowhere"], "unknown area 'nowhere'"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "stack", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "gatestack" in proc.stdout


def test_the_parser_and_prepare_do_not_import_torch(tmp_path) -> None:
    """Commands import torch inside their functions (stack.cli's docstring): building the parser of
    every command, a byte-level prepare and a prepare given another DATA_DIR's tokenizer leave it
    unloaded, which saves each a second or two of start-up."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(f"Line {i}: the fox number {i * 7919} jumps over the dog.\n" for i in range(200))
    )
    first, second = str(tmp_path / "data"), str(tmp_path / "again")
    code = (
        "import sys; from stack.cli import main; "
        f"codes = [main(['prepare', '--out', {first!r}, {str(corpus)!r}]), "
        f"main(['prepare', '--out', {second!r}, '--tokenizer', {first!r}, {str(corpus)!r}])]; "
        "print(codes, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split("\n")[-2] == "[0, 0] []", proc.stdout + proc.stderr
