"""The `stack` command: one sub-command per module of this package.

Each module in COMMANDS exposes `register(subparsers)`, which adds its parser and sets
`func`. Modules import heavy libraries (torch) inside their functions, so `stack --help`
stays fast. Every failure a user can fix ends in one line and exit 2; a gate that fires ends in
one line naming the gate and exit 3; neither shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, BadInput, GateViolation
from stack import __version__

COMMANDS = (
    "gates",
    "prepare",
    "train",
    "sample",
    "eval",
    "inspect",
    "export",
    "import-hf",
    "trace",
    "release",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="stack", description="Train small language models under acceptance gates."
    )
    parser.add_argument("--version", action="version", version=f"gatestack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"stack.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command and map its failures to exit codes."""
    args = build_parser().parse_args(argv)
    args.argv = ["stack", *(argv if argv is not None else sys.argv[1:])]  # recorded in evidence
    try:
        return int(args.func(args) or 0)
    except BadInput as exc:
        print(f"stack {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GateViolation as exc:
        print(f"stack {args.command}: gate fired: {exc}", file=sys.stderr)
        return EXIT_GATE
    except KeyboardInterrupt:
        print(f"stack {args.command}: interrupted", file=sys.stderr)
        return 130
