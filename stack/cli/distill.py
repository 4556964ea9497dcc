"""`stack distill`: a student trained against a frozen teacher: `stack train` with train.task=distill.

    stack distill TEACHER_RUN|CKPT --data DATA_DIR --out OUT --preset tiny --steps 200 [--device cuda]
    stack distill TEACHER_RUN|CKPT --data DATA_DIR --out OUT --student RUN|CKPT --truncate-vocab 151936
    stack distill --resume OUT --steps 400

The loss is α·T²·KL(teacher/T ‖ student/T) + (1 − α)·NLL, per token, and the run is the training
loop's (stack.train.distill_objective): held-out evaluation, monitors, checkpoints, bit-exact
resume, any device. The options below become config keys (`[distill]`, train.*, ckpt.every);
--set sets any other. A teacher from Hugging Face is imported first (`stack import-hf DIR --out
RUN_DIR`). Exit 0: OUT written; 3: a gate fired (GATE-KD-001: one tokenizer and vocabulary;
-002: the teacher never trains; -003: α = 0 is the NLL and self-KL is 0; -004: the T² is
applied), the halted record in OUT; 2: bad input. See docs/preferences.md.
"""

from __future__ import annotations

import argparse
import json

from contracts.errors import BadInput
from stack.cli import values
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
from stack.train.tune_settings import DISTILL_DEFAULTS, DistillSettings

TASK = "train.task=distill"
# The distillation settings and the config keys they set (the loop's own are in tune_options).
DISTILL_KEYS = {
    "temperature": "distill.temperature",
    "alpha": "distill.alpha",
    "seq_len": "distill.seq_len",
    "truncate_vocab": "distill.truncate_vocab",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack distill` and its options."""
    parser = sub.add_parser(
        "distill",
        help="knowledge distillation: a student trained against a frozen teacher, as a new run dir",
        description="Write OUT (a run directory) with a student (--student RUN|CKPT, or a fresh --preset) "
        "trained on DATA_DIR's train split against the teacher's soft targets, by the training loop "
        "(`stack train --set train.task=distill`). --resume OUT continues.",
    )
    parser.add_argument(
        "path", nargs="?", type=values.utf8_path, metavar="TEACHER", help="the teacher's run or checkpoint"
    )
    parser.add_argument("--data", type=values.utf8_path, metavar="DATA_DIR", help="a prepared DATA_DIR")
    group = add_loop_options(parser, DISTILL_DEFAULTS)
    add_device_option(parser)  # a resume may move the run: not one of the new run's settings
    group.add_argument("--student", type=values.utf8_path, metavar="RUN|CKPT", help="a student to start from")
    group.add_argument("--preset", type=values.utf8_text, help="a fresh student of this preset (e.g. tiny)")
    group.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        type=values.utf8_text,
        metavar="KEY=VALUE",
        help="override any config key, e.g. model.moe_experts=4 for a fresh student (repeatable)",
    )
    group.add_argument(
        "--temperature", type=values.factor, help=f"T (default {DISTILL_DEFAULTS.temperature})"
    )
    group.add_argument(
        "--alpha", type=values.fraction, help=f"α, the soft term's weight (default {DISTILL_DEFAULTS.alpha})"
    )
    group.add_argument(
        "--seq-len", type=values.positive_int, help="tokens per sequence (default: the student's context)"
    )
    group.add_argument(
        "--truncate-vocab",
        type=values.positive_int,
        metavar="N",
        help="distil over ids below N only: declares the common part of padded vocabularies (recorded)",
    )
    parser.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    """Turn the options into `stack train`'s request and run the training loop."""
    from stack.cli import train
    from stack.cli.inputs import check_inputs

    if args.resume is not None:
        refuse_with_resume(
            args, DistillSettings, ("TEACHER", "--out", "--data", "--student", "--preset", "--sets")
        )
        check_inputs("distill", args)
        require_task(args.resume, "distill")
        return train.run(request_args(args, resume_sets(args)))
    if args.path is None or args.data is None or args.out is None:
        raise BadInput("a new distillation needs TEACHER, --data DATA_DIR and --out OUT (or --resume OUT)")
    if (args.student is None) == (args.preset is None):
        raise BadInput("give the student as --student RUN|CKPT or as --preset NAME, one of the two")
    if any(s.replace(" ", "").startswith(("train.task=", "distill.teacher=")) for s in args.sets):
        raise BadInput("stack distill sets train.task and distill.teacher itself; drop those --set keys")
    refuse_set_conflicts(args, DISTILL_KEYS)
    check_inputs("distill", args)
    args.init_from = args.student
    sets = config_sets(args, str(args.path.resolve()), _student_vocab(args))
    return train.run(request_args(args, sets))


def config_sets(args: argparse.Namespace, teacher: str, vocab: int | None) -> list[str]:
    """The `--set` assignments a new run's options make, the teacher given by its absolute path and
    a fresh student's vocabulary (the teacher's; None for a --student, which keeps its own) by
    `vocab` (tools/integrity/settings/config_rebuild.py resolves a record's command line through this too)."""
    settings = DistillSettings(steps=args.steps, **given_settings(args, DistillSettings))
    settings.check()
    return [
        *([] if vocab is None else [f"model.vocab={vocab}"]),
        f"train.steps={settings.steps}",
        *loop_sets(args, settings),
        # `is not None`: α = 0 (the NLL alone) is a setting, not an absent one
        *(
            f"{key}={value}"
            for name, key in DISTILL_KEYS.items()
            if (value := getattr(settings, name)) is not None
        ),
        *args.sets,
        TASK,
        f"distill.teacher={json.dumps(teacher)}",
    ]


def _student_vocab(args: argparse.Namespace) -> int | None:
    """A fresh student gets the teacher's vocabulary (padded rows included), as GATE-KD-001 asks."""
    if args.preset is None:
        return None  # a --student checkpoint keeps its own
    from stack.train import checkpoint as ckpt
    from stack.train.trained import resolve_checkpoint

    state = ckpt.read_state(resolve_checkpoint(args.path))
    return int(state["config"]["model"]["vocab"])
