"""`stack distill`: a student trained on a DATA_DIR against a frozen teacher, into a new run dir.

    stack distill TEACHER_RUN|CKPT --data DATA_DIR --out OUT --preset tiny --steps 200
    stack distill TEACHER_RUN|CKPT --data DATA_DIR --out OUT --student RUN|CKPT --truncate-vocab 151936
    stack distill --resume OUT --steps 400

The loss is α·T²·KL(teacher/T ‖ student/T) + (1 − α)·NLL, per token. A teacher from Hugging Face
is imported first (`stack import-hf DIR --out RUN_DIR`). Exit 0: OUT written; 3: a gate fired
(GATE-KD-001: one tokenizer and vocabulary; -002: the teacher never trains; -003: α = 0 is the NLL
and self-KL is 0; -004: the T² is applied), the halted record in OUT; 2: bad input.
See docs/preferences.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contracts.errors import BadInput
from stack.cli import values
from stack.cli.tune_options import add_loop_options, given_settings, print_step, refuse_with_resume
from stack.tune.settings import DISTILL_DEFAULTS, DistillSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack distill` and its options."""
    parser = sub.add_parser(
        "distill",
        help="knowledge distillation: a student trained against a frozen teacher, as a new run dir",
        description="Write OUT (config.toml, checkpoints/step-…, metadata.json) with a student (--student "
        "RUN|CKPT, or a fresh --preset) trained on DATA_DIR's train split against the teacher's soft "
        "targets. --resume OUT continues.",
    )
    parser.add_argument(
        "path", nargs="?", type=values.utf8_path, metavar="TEACHER", help="the teacher's run or checkpoint"
    )
    parser.add_argument("--data", type=values.utf8_path, metavar="DATA_DIR", help="a prepared DATA_DIR")
    group = add_loop_options(parser, DISTILL_DEFAULTS)
    group.add_argument("--student", type=values.utf8_path, metavar="RUN|CKPT", help="a student to start from")
    group.add_argument("--preset", type=values.utf8_text, help="a fresh student of this preset (e.g. tiny)")
    group.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        type=values.utf8_text,
        metavar="KEY=VALUE",
        help="override a fresh student's config, e.g. model.moe_experts=4 (repeatable)",
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
    """Start or resume the run, print one line per step and where the checkpoint went."""
    from stack.tune import distill_run

    show = print_step(args.steps)
    if args.resume is not None:
        refuse_with_resume(
            args, DistillSettings, ("TEACHER", "--out", "--data", "--student", "--preset", "--sets")
        )
        written = distill_run.resume(args.resume, args.steps, args.argv, args.evidence_dir, show)
    else:
        if args.path is None or args.data is None or args.out is None:
            raise BadInput(
                "a new distillation needs TEACHER, --data DATA_DIR and --out OUT (or --resume OUT)"
            )
        if (args.student is None) == (args.preset is None):
            raise BadInput("give the student as --student RUN|CKPT or as --preset NAME, one of the two")
        if args.sets and args.student is not None:
            raise BadInput(
                "--set configures a fresh --preset student; a --student checkpoint keeps its config"
            )
        student: Path | tuple[str, list[str]] = (
            args.student if args.student is not None else (args.preset, args.sets)
        )
        settings = DistillSettings(steps=args.steps, **given_settings(args, DistillSettings))
        written = distill_run.start(
            args.path, args.data, args.out, student, settings, args.argv, args.evidence_dir, show
        )
    print(f"wrote {written} (evidence in {written.parent.parent})")
    return 0
