"""`stack dpo`: a checkpoint tuned on preference pairs against a frozen reference (train.task=dpo).

    stack prepare PREFS.jsonl --format prefs --out DATA_DIR [--template chat] [--pack-len T]
    stack dpo RUN_DIR|CKPT --data DATA_DIR --out OUT --steps 50 --beta 0.1 [--device cuda]
    stack dpo --resume OUT --steps 100

The pairs are a DATA_DIR of `stack prepare --format prefs` ({prompt, chosen, rejected} per line,
or the chat form rendered by --template), tokenized by the policy's tokenizer. The run is the
training loop's (stack.train.dpo_objective): held-out evaluation by the same DPO loss, monitors,
checkpoints, bit-exact resume, any device. The options below become config keys ([dpo], train.*,
ckpt.every). Exit 0: OUT written; 3: a gate fired (GATE-DPO-001: ln 2 at the start; -002: the
reference never trains; -003: padding changes nothing; -004: the margin and accuracy move; -005:
only completion tokens are scored), the halted record in OUT; 2: bad input. See docs/preferences.md.
"""

from __future__ import annotations

import argparse
import json

from contracts.errors import BadInput
from stack.cli import values
from stack.cli.train import add_waiver_options
from stack.cli.tune_options import (
    add_device_option,
    add_loop_options,
    given_settings,
    loop_sets,
    refuse_set_conflicts,
    refuse_with_resume,
    request_args,
    require_task,
    resume_sets,
)
from stack.train.tune_settings import DPO_DEFAULTS, DpoSettings

TASK = "train.task=dpo"
# The DPO settings and the config keys they set (the loop's own are in tune_options).
DPO_KEYS = {"beta": "dpo.beta", "label_noise": "dpo.label_noise"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack dpo` and its options."""
    parser = sub.add_parser(
        "dpo",
        help="direct preference optimisation of a checkpoint on preference pairs, as a new run dir",
        description="Write OUT (a run directory) by DPO from RUN_DIR|CKPT on the pairs of DATA_DIR "
        "(`stack prepare PREFS.jsonl --format prefs`), against a frozen copy of the start (or "
        "--reference), by the training loop (`stack train --set train.task=dpo`). --resume OUT continues.",
    )
    parser.add_argument(
        "path", nargs="?", type=values.utf8_path, metavar="RUN_DIR|CKPT", help="the starting policy"
    )
    parser.add_argument(
        "--data", type=values.utf8_path, metavar="DATA_DIR", help="pairs of `stack prepare --format prefs`"
    )
    group = add_loop_options(parser, DPO_DEFAULTS)
    add_device_option(parser)  # a resume may move the run: not one of the new run's settings
    group.add_argument(
        "--reference",
        type=values.utf8_path,
        metavar="RUN_DIR|CKPT",
        help="the reference (default: the starting policy)",
    )
    group.add_argument("--beta", type=values.step_size, help=f"β (default {DPO_DEFAULTS.beta})")
    group.add_argument(
        "--label-noise",
        type=values.fraction,
        help="ε of conservative DPO, the probability that a pair's preference is flipped, below 0.5 "
        f"(default {DPO_DEFAULTS.label_noise}; TRL's label_smoothing is this only for loss_type='sigmoid')",
    )
    group.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        type=values.utf8_text,
        metavar="KEY=VALUE",
        help="override any other config key, e.g. eval.batches=4 (repeatable)",
    )
    waive_help = "accept less than a gate's minimum (a small held-out set, GATE-EVAL-001); needs --reason"
    add_waiver_options(parser, waive_help)
    parser.set_defaults(func=run_dpo)


def run_dpo(args: argparse.Namespace) -> int:
    """Turn the options into `stack train`'s request and run the training loop."""
    from stack.cli import train
    from stack.cli.inputs import check_inputs

    if args.resume is not None:
        refuse_with_resume(args, DpoSettings, ("RUN_DIR|CKPT", "--out", "--data", "--reference", "--sets"))
        check_inputs("dpo", args)
        require_task(args.resume, "dpo")
        return train.run(request_args(args, resume_sets(args)))
    if args.path is None or args.data is None or args.out is None:
        raise BadInput("a new DPO run needs RUN_DIR|CKPT, --data DATA_DIR and --out OUT (or --resume OUT)")
    if any(s.replace(" ", "").startswith(("train.task=", "dpo.reference=")) for s in args.sets):
        raise BadInput("stack dpo sets train.task and dpo.reference itself; drop those --set keys")
    refuse_set_conflicts(args, DPO_KEYS)
    check_inputs("dpo", args)
    reference = args.reference if args.reference is not None else args.path
    args.init_from = args.path
    return train.run(request_args(args, config_sets(args, str(reference.resolve()))))


def config_sets(args: argparse.Namespace, reference: str) -> list[str]:
    """The `--set` assignments a new run's options make, the reference given by its absolute path
    (tools/integrity/settings/config_rebuild.py resolves a record's command line through this too)."""
    settings = DpoSettings(steps=args.steps, **given_settings(args, DpoSettings))
    settings.check()
    return [
        f"train.steps={settings.steps}",
        *loop_sets(args, settings),
        *(f"{key}={getattr(settings, name)}" for name, key in DPO_KEYS.items()),
        *args.sets,
        TASK,
        f"dpo.reference={json.dumps(reference)}",
    ]
