"""Options shared by `stack dpo` and `stack distill`: the loop's settings, resume, evidence, progress."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from contracts.errors import BadInput
from stack.cli import values

# The options every tuning run has, as (flag, settings field, validator, help).
LOOP_OPTIONS = (
    ("--lr", "lr", values.step_size, "AdamW's learning rate, constant"),
    ("--batch-size", "batch_size", values.positive_int, "pairs (dpo) or sequences (distill) per step"),
    ("--seed", "seed", values.seed, "seeds the batch order (and a fresh student's weights)"),
    ("--save-every", "save_every", values.positive_int, "steps between checkpoints"),
    ("--clip-norm", "clip_norm", values.step_size, "the global gradient norm is clipped to this"),
)


def add_loop_options(parser: argparse.ArgumentParser, defaults: Any) -> argparse._ArgumentGroup:
    """--steps, --resume, --evidence-dir and the settings group (a resumed run keeps its own)."""
    parser.add_argument("--out", type=values.utf8_path, metavar="OUT", help="the new run dir")
    parser.add_argument(
        "--resume", type=values.utf8_path, metavar="OUT", help="continue this run from its latest checkpoint"
    )
    parser.add_argument(
        "--steps",
        type=values.positive_int,
        default=defaults.steps,
        help=f"steps in all (default {defaults.steps})",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    group = parser.add_argument_group("settings of a new run (a resumed run keeps its own)")
    for flag, name, kind, text in LOOP_OPTIONS:
        group.add_argument(flag, dest=name, type=kind, help=f"{text} (default {getattr(defaults, name)})")
    return group


def given_settings(args: argparse.Namespace, settings_type: type) -> dict[str, Any]:
    """The settings fields given on the command line (None means: take the default)."""
    names = {f.name for f in fields(settings_type)} - {"steps"}
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def refuse_with_resume(args: argparse.Namespace, settings_type: type, others: tuple[str, ...]) -> None:
    """A resume takes the run's own settings and inputs: refuse any given beside --steps."""
    extra = [f"--{name.replace('_', '-')}" for name in given_settings(args, settings_type)]
    extra += [
        name for name in others if getattr(args, name.lstrip("-").replace("-", "_"), None) not in (None, [])
    ]
    if extra:
        raise BadInput(
            f"--resume continues with the run's own settings and inputs; drop {', '.join(extra)} "
            "(only --steps may be given)"
        )


def print_step(total: int) -> Callable[[int, dict[str, float]], None]:
    """One line per step on stdout, every metric of the step's line: a run's progress, like `stack es`."""

    def show(step: int, line: dict[str, float]) -> None:
        metrics = " ".join(f"{name} {value:.4g}" for name, value in line.items())
        print(f"step {step}/{total}: {metrics}", flush=True)

    return show
