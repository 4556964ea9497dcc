"""`stack es`: train a checkpoint without gradients, by evolution strategies, into a new run dir.

    stack es RUN_DIR|CKPT --data DATA_DIR --out OUT --steps 100 --population 16 --sigma 0.001 --lr 0.0005
    stack es --resume OUT --steps 200

Each step draws ± pairs of Gaussian perturbations of all the weights, scores every member by its
language-model loss on one batch, ranks them, and takes an Adam step along the estimated
gradient. Exit 0: OUT written, or a completed run resumed as it was (nothing to do, nothing
written); 3: a gate fired (GATE-ES-001: no autograd graph; -002: ± pairs, each evaluated at its
own side; -003: shaped weights sum to zero; -004: the estimator's self-test on a planted
quadratic; -005: the fitness scored the batch's next tokens; -006: the step written is Adam's
ascent of ĝ), the halted record in OUT; 2: bad input; 130 / 143: stopped by SIGINT / SIGTERM once
the step under way was saved, the record `interrupted`, the line naming the resume.
See docs/surgery.md, "Evolution strategies".
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from contracts.errors import BadInput
from stack.cli import values
from stack.es.settings import DEFAULTS, EsSettings

if TYPE_CHECKING:
    from stack.es.loop import StepReport

# What a fresh run may set and a resumed one takes from its checkpoint.
RUN_SETTINGS = ("population", "sigma", "lr", "seed", "batch_size", "seq_len", "workers", "save_every")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack es` and its options."""
    parser = sub.add_parser(
        "es",
        help="evolution strategies: train a checkpoint without gradients on the LM loss, as a new run dir",
        description="Write OUT (config.toml, checkpoints/step-…, metadata.json) by evolution strategies from "
        "RUN_DIR|CKPT on DATA_DIR's train split: mirrored Gaussian noise, centered-rank shaping, Adam. "
        "--resume OUT continues such a run bit for bit.",
    )
    parser.add_argument(
        "path", nargs="?", type=values.utf8_path, metavar="RUN_DIR|CKPT", help="the starting model"
    )
    parser.add_argument("--data", type=values.utf8_path, metavar="DATA_DIR", help="a prepared DATA_DIR")
    parser.add_argument("--out", type=values.utf8_path, metavar="OUT", help="the new run dir")
    parser.add_argument(
        "--resume",
        type=values.utf8_path,
        metavar="OUT",
        help="continue this ES run from its latest checkpoint",
    )
    parser.add_argument(
        "--steps",
        type=values.positive_int,
        help=f"steps in all (default {DEFAULTS.steps}; a resume keeps the run's own)",
    )
    run = parser.add_argument_group("settings of a new run (a resumed run keeps its own)")
    run.add_argument(
        "--population",
        type=values.positive_int,
        help=f"members per step, an even number (default {DEFAULTS.population})",
    )
    run.add_argument("--sigma", type=values.step_size, help=f"noise scale σ (default {DEFAULTS.sigma})")
    run.add_argument("--lr", type=values.step_size, help=f"Adam's learning rate (default {DEFAULTS.lr})")
    run.add_argument(
        "--seed", type=values.seed, help=f"seeds the noise and the batch order (default {DEFAULTS.seed})"
    )
    run.add_argument(
        "--batch-size", type=values.positive_int, help=f"sequences per step (default {DEFAULTS.batch_size})"
    )
    run.add_argument("--seq-len", type=values.positive_int, help="tokens per sequence (default: the context)")
    run.add_argument(
        "--workers",
        type=values.positive_int,
        help=f"processes evaluating the population (default {DEFAULTS.workers})",
    )
    run.add_argument(
        "--save-every",
        type=values.positive_int,
        help=f"steps between checkpoints (default {DEFAULTS.save_every})",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run_es)


def _print_step(report: StepReport) -> None:
    print(
        f"step {report.step}: population loss mean {-report.fitness_mean:.4f}, "
        f"best {-report.fitness_best:.4f}, |ĝ| {report.grad_norm:.3g}",
        flush=True,
    )


def run_es(args: argparse.Namespace) -> int:
    """Start or resume the run, print one line per step and where the checkpoint went."""
    from stack.cli.inputs import check_inputs
    from stack.cli.train import say_warnings
    from stack.es.rundir import Invocation, resume, start
    from stack.outputs.rundir import NothingLeft

    invocation = Invocation(args.argv, args.evidence_dir, on_step=_print_step)
    if args.resume is not None:
        extra = ["RUN_DIR|CKPT"] if args.path is not None else []
        extra += ["--out"] if args.out is not None else []
        extra += [f"--{name.replace('_', '-')}" for name in RUN_SETTINGS if getattr(args, name) is not None]
        if extra:
            raise BadInput(
                f"--resume continues with the run's own settings; drop {', '.join(extra)} "
                "(only --steps and --data may be given)"
            )
        check_inputs("es", args)
        try:
            written = resume(args.resume, args.steps, args.data, invocation)
        except NothingLeft as done:
            print(f"stack es: {done}", file=sys.stderr)
            return 0
    else:
        if args.path is None or args.data is None or args.out is None:
            raise BadInput("a new ES run needs RUN_DIR|CKPT, --data DATA_DIR and --out OUT (or --resume OUT)")
        check_inputs("es", args)
        written = start(args.path, args.data, args.out, _settings(args), invocation)
    print(f"wrote {written} (evidence in {written.parent.parent})")
    return say_warnings(written.parent.parent)


def _settings(args: argparse.Namespace) -> EsSettings:
    """The settings of a new run: each option given, else its default."""
    given = {name: getattr(args, name) for name in RUN_SETTINGS if getattr(args, name) is not None}
    return EsSettings(steps=DEFAULTS.steps if args.steps is None else args.steps, **given)
