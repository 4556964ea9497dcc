"""`stack sft`: supervised fine-tuning, which is `stack train --set train.task=sft` from a trained model.

    stack sft --data SFT_DATA --init-from RUN_DIR|IMPORTED_DIR --out RUN_DIR [--set ...]
    stack sft --resume RUN_DIR

The same loop, checkpoints, resume, monitors and evidence as pretraining (stack.train); only
the objective differs (stack.train.sft_objective). SFT_DATA comes from `stack prepare FILE.jsonl
--format chat|prompt-completion`; the record is of run kind `sft` (docs/finetuning.md).
"""

from __future__ import annotations

import argparse

from stack.cli import train

TASK = "train.task=sft"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack sft`: the options of `stack train`."""
    parser = sub.add_parser(
        "sft",
        help="supervised fine-tuning of a trained model on chat or prompt-completion data",
        description="Fine-tune --init-from's model on a DATA_DIR prepared with --format "
        "chat|prompt-completion, into RUN_DIR, or --resume RUN_DIR: `stack train` with train.task=sft.",
    )
    train.add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Refuse a start without a model to tune, then run the training loop with the SFT task."""
    from contracts.errors import BadInput
    from stack.cli.inputs import check_inputs
    from stack.cli.tune_options import require_task

    if args.init_from is None and args.resume is None:
        raise BadInput(
            "stack sft fine-tunes a trained model: pass --init-from RUN_DIR (a run, or a directory written "
            "by `stack import-hf`), or --resume RUN_DIR"
        )
    if args.resume is not None:  # as dpo and distill: what the path is, then whose run it is
        check_inputs("sft", args)
        require_task(args.resume, "sft")
    if any(s.replace(" ", "").startswith("train.task=") for s in args.sets):
        raise BadInput("stack sft sets train.task=sft itself; drop --set train.task")
    args.sets = [*args.sets, TASK]
    return train.run(args)
