"""`stack train`: train (or resume) a model under every training gate, leaving evidence."""

from __future__ import annotations

import argparse
from pathlib import Path

from stack.cli import values
from stack.train.presets import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train or resume a model under the training gates",
        description="Train a model on a prepared DATA_DIR into RUN_DIR, or --resume RUN_DIR. "
        "Configuration: --preset, then --config FILE.toml, then each --set section.key=value.",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def add_waiver_options(parser: argparse._ActionsContainer, waive_help: str) -> None:
    """--waive GATE-ID with its --reason, in pairs (checked by `run`, recorded in the evidence)."""
    parser.add_argument("--waive", action="append", default=[], metavar="GATE-ID", help=waive_help)
    parser.add_argument(
        "--reason",
        action="append",
        type=values.utf8_text,
        default=[],
        help="why the matching --waive is acceptable",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a training run, shared by `stack train` and `stack sft` (one loop, one surface)."""
    parser.add_argument("--data", type=values.utf8_path, help="a directory written by `stack prepare`")
    parser.add_argument("--out", type=values.utf8_path, help="the new run directory")
    parser.add_argument(
        "--resume",
        type=values.utf8_path,
        metavar="RUN_DIR",
        help="continue this run from its latest valid checkpoint",
    )
    parser.add_argument(
        "--config",
        type=values.utf8_path,
        help="a TOML file with [model] [train] [eval] [ckpt] [monitor] [data]",
    )
    parser.add_argument("--preset", help=" | ".join(PRESETS))
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable)",
    )
    add_waiver_options(parser, "accept a config below a gate's minimum; needs --reason")
    parser.add_argument(
        "--init-from",
        type=values.utf8_path,
        metavar="RUN_DIR|CKPT",
        help="start a new run from these weights (fine-tuning)",
    )
    parser.add_argument(
        "--evidence-dir", type=values.utf8_path, help="also file the evidence record in this ledger directory"
    )
    parser.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes on this node (launches torchrun)"
    )


def run(args: argparse.Namespace) -> int:
    """Validate the request and hand it to the run orchestrator."""
    from contracts.errors import BadInput
    from contracts.evidence import Waiver
    from contracts.spec import load_spec
    from stack.cli.inputs import check_inputs
    from stack.cli.progress import step_progress
    from stack.train.run import TrainRequest, train

    if args.nproc < 1:
        raise BadInput("--nproc must be at least 1")
    if args.nproc > 1:
        from stack.train.launch import launch

        return launch(args.nproc, args.argv)  # rank 0's own `stack train` says the warnings
    if len(args.waive) != len(args.reason):
        raise BadInput('every --waive GATE-ID needs its own --reason "..."')
    if any(not reason.strip() for reason in args.reason):
        raise BadInput("a --reason is empty: say in words why the waived gate is acceptable for this run")
    for gate_id in args.waive:
        load_spec().gate(gate_id)
    if args.resume is not None and args.init_from is not None:
        raise BadInput(
            "--resume continues a run with its own weights; --init-from starts a new run: pick one"
        )
    given = [
        option for option, value in (("--out", args.out), ("--preset", args.preset)) if value is not None
    ]
    if (
        args.resume is not None and given
    ):  # name only what was given: `drop --out` to one who gave none misleads
        raise BadInput(
            f"--resume continues an existing run: drop {' and '.join(given)} (use --set to change keys)"
        )
    check_inputs(getattr(args, "command", "train"), args)
    request = TrainRequest(
        data_dir=args.data,
        out=args.out,
        resume=args.resume,
        preset=args.preset,
        config_file=args.config,
        sets=args.sets,
        waivers=[Waiver(gate=g, reason=r) for g, r in zip(args.waive, args.reason, strict=True)],
        evidence_dir=args.evidence_dir,
        argv=args.argv,
        init_from=args.init_from,
    )
    code = train(request, step_progress)
    return say_warnings(args.resume or args.out) if code == 0 else code


def say_warnings(run_dir: Path) -> int:
    """One line per warning gate the finished run's record holds at WARN (GATE-DATA-004's few tokens
    per parameter, GATE-ES-007's risen loss of `stack es`), as `stack prepare` says its own; rank 0
    speaks for a data-parallel run.
    The record is read back, so what is said is what the run's evidence states."""
    import os

    from contracts.evidence import EVIDENCE_FILE, Verdict, read_evidence
    from contracts.gates import warning_line

    if os.environ.get("RANK", "0") == "0":
        for gate in read_evidence(run_dir / EVIDENCE_FILE).gates:
            if gate.verdict is Verdict.WARN:
                print(warning_line(gate.id, gate.message or ""))
    return 0
