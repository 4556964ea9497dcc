"""`stack dpo`: tune a checkpoint on preference pairs by DPO, against a frozen reference, into a new run dir.

    stack dpo RUN_DIR|CKPT --pairs PREFS.jsonl --out OUT --steps 50 --beta 0.1
    stack dpo --resume OUT --steps 100

PREFS.jsonl holds {prompt, chosen, rejected} per line (or the chat form, rendered by --template).
Exit 0: OUT written; 3: a gate fired (GATE-DPO-001: ln 2 at the start; -002: the reference never
trains; -003: padding changes nothing; -004: the margin and accuracy move; -005: only completion
tokens are scored), the halted record in OUT; 2: bad input. See docs/preferences.md.
"""

from __future__ import annotations

import argparse

from contracts.errors import BadInput
from stack.cli import values
from stack.cli.tune_options import add_loop_options, given_settings, print_step, refuse_with_resume
from stack.tune.settings import DPO_DEFAULTS, DpoSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack dpo` and its options."""
    parser = sub.add_parser(
        "dpo",
        help="direct preference optimisation of a checkpoint on preference pairs, as a new run dir",
        description="Write OUT (config.toml, checkpoints/step-…, metadata.json) by DPO from RUN_DIR|CKPT on "
        "the pairs of --pairs, against a frozen copy of the start (or --reference). --resume OUT continues.",
    )
    parser.add_argument(
        "path", nargs="?", type=values.utf8_path, metavar="RUN_DIR|CKPT", help="the starting policy"
    )
    parser.add_argument("--pairs", type=values.utf8_path, metavar="PREFS.jsonl", help="the preference pairs")
    group = add_loop_options(parser, DPO_DEFAULTS)
    group.add_argument(
        "--reference",
        type=values.utf8_path,
        metavar="CKPT",
        help="the reference (default: the starting policy)",
    )
    group.add_argument(
        "--template", type=values.utf8_text, help="chat template for chat-form pairs (default chat)"
    )
    group.add_argument("--beta", type=values.step_size, help=f"β (default {DPO_DEFAULTS.beta})")
    group.add_argument(
        "--label-smoothing",
        type=values.fraction,
        help=f"ε, the weight of the reversed preference, below 0.5 (default {DPO_DEFAULTS.label_smoothing})",
    )
    parser.set_defaults(func=run_dpo)


def run_dpo(args: argparse.Namespace) -> int:
    """Start or resume the run, print one line per step and where the checkpoint went."""
    from stack.tune import dpo_run

    show = print_step(args.steps)
    if args.resume is not None:
        refuse_with_resume(
            args, DpoSettings, ("RUN_DIR|CKPT", "--out", "--pairs", "--reference", "--template")
        )
        written = dpo_run.resume(args.resume, args.steps, args.argv, args.evidence_dir, show)
    else:
        if args.path is None or args.pairs is None or args.out is None:
            raise BadInput(
                "a new DPO run needs RUN_DIR|CKPT, --pairs PREFS.jsonl and --out OUT (or --resume OUT)"
            )
        settings = DpoSettings(steps=args.steps, **given_settings(args, DpoSettings))
        written = dpo_run.start(
            args.path,
            args.pairs,
            args.out,
            settings,
            args.reference,
            args.template,
            args.argv,
            args.evidence_dir,
            show,
        )
    print(f"wrote {written} (evidence in {written.parent.parent})")
    return 0
