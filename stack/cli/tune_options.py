"""Options shared by `stack dpo` and `stack distill`: the loop's settings, resume, evidence, device."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
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
        action=values.NoteGiven,
        default=defaults.steps,
        help=f"steps in all (default {defaults.steps}; a resume keeps the run's own)",
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


def refuse_set_conflicts(args: argparse.Namespace, task_keys: dict[str, str]) -> None:
    """An option given beside a `--set` of a config key it sets (`--steps 2 --set train.steps=3`):
    refuse the pair in one line rather than let the later assignment win without a word."""
    keys = {"steps": ("train.steps",), "device": ("train.device",), **LOOP_KEYS}
    keys |= {name: (key,) for name, key in task_keys.items()}
    given = {name for name in keys if name != "steps" and getattr(args, name, None) is not None}
    given |= values.given(args) & {"steps"}  # --steps has a default: given only if typed
    set_keys = {item.split("=", 1)[0].strip() for item in args.sets}
    for name in sorted(given):
        for key in keys[name]:
            if key in set_keys:
                flag = f"--{name.replace('_', '-')}"
                raise BadInput(f"{flag} and --set {key} both set {key}; give one of the two")


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


# What `stack distill` sets in the run's config for each loop setting. The learning rate is
# constant after one warmup step (min_lr = lr): the schedule then does not depend on train.steps,
# so a resume that raises --steps continues exactly where a longer run would be.
LOOP_KEYS = {
    "lr": ("train.lr", "train.min_lr"),
    "batch_size": ("train.batch_size",),
    "seed": ("train.seed",),
    "save_every": ("ckpt.every",),
    "clip_norm": ("train.clip_norm",),
}
WARMUP = "train.warmup_steps=1"


def add_device_option(parser: argparse._ActionsContainer) -> None:
    """--device: where the training loop runs (train.device; a resume may move a run)."""
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where the run trains: auto (CUDA when present), cpu or cuda (default auto)",
    )


def loop_sets(args: argparse.Namespace, settings: Any) -> list[str]:
    """The `--set` assignments of the loop settings (every one, for a new run) and of --device."""
    sets = [WARMUP] if settings else []
    for name, keys in LOOP_KEYS.items():
        if settings:
            sets += [f"{key}={getattr(settings, name)}" for key in keys]
    if getattr(args, "device", None) is not None:
        sets.append(f"train.device={args.device}")
    return sets


def resume_sets(args: argparse.Namespace) -> list[str]:
    """The `--set` assignments of a resume: --steps and --device, each when typed. Without --steps
    the run keeps its own train.steps, as `stack train --resume` does: the option's default (50) in
    its place would train a resumed 4-step run on to step 50 without a word."""
    steps = [f"train.steps={args.steps}"] if "steps" in values.given(args) else []
    return [*steps, *loop_sets(args, None)]


def request_args(args: argparse.Namespace, sets: list[str]) -> argparse.Namespace:
    """The namespace `stack train` reads, for a run (or resume) that these options describe."""
    return argparse.Namespace(
        data=getattr(args, "data", None),
        out=args.out,
        resume=args.resume,
        config=None,
        preset=getattr(args, "preset", None),
        sets=sets,
        waive=getattr(args, "waive", []),
        reason=getattr(args, "reason", []),
        init_from=getattr(args, "init_from", None),
        evidence_dir=args.evidence_dir,
        nproc=1,
        argv=args.argv,
    )


def require_task(run_dir: Path, task: str) -> None:
    """`--resume` continues a run of this command's task only: another is resumed by the command that
    wrote it (its train.task is in the run's config.toml), which the refusal names."""
    from stack.train.run import command_of, task_of

    found = task_of(run_dir)
    if found != task:
        command = command_of(found)
        raise BadInput(
            f"{run_dir} is not a {task} run (train.task is {found!r}: a `{command}` run); resume it with "
            f"`{command} --resume {run_dir}`"
        )
