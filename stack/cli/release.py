"""`stack release`: put a finished run's checkpoint into MODELS_DIR as a model that loads as it is."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "release",
        help="release a finished run's checkpoint as a model directory with a registry entry",
        description="Copy the weights and state.json of the checkpoint that RUN_DIR's filed record hashed "
        "into MODELS_DIR/NAME-VERSION/ with a manifest.json and a MODEL_CARD.md written from the record, "
        "and append the release to the registry. Refused, before anything is written, when the record "
        "could not back a release (the rules of tools/check_integrity.py).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the training run to release")
    parser.add_argument(
        "--ledger-record",
        type=Path,
        required=True,
        metavar="DIR",
        help="RUN_DIR's record as filed in the ledger: evidence/runs/<run-id>",
    )
    parser.add_argument("--name", required=True, help="the model's name: lower-case letters, digits, . _ -")
    parser.add_argument("--version", required=True, help="its semantic version, e.g. 0.2.0")
    parser.add_argument("--license", default="Apache-2.0", help="the weights' license (default Apache-2.0)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("evidence") / "models",
        help="where the release directory goes (default evidence/models)",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        default=Path("evidence") / "registry.yaml",
        help="the registry to append to (default evidence/registry.yaml)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Release, then say where the model went and which entry the registry got."""
    from stack.cli.inputs import check_inputs
    from stack.release import ReleaseRequest, release

    check_inputs("release", args)
    done = release(
        ReleaseRequest(
            run_dir=args.run_dir,
            ledger_record=args.ledger_record,
            name=args.name,
            version=args.version,
            license=args.license,
            models_dir=args.models_dir,
            registry=args.registry,
        )
    )
    print(f"stack release: {done.entry.key} in {done.directory} (card {done.directory / 'MODEL_CARD.md'})")
    print(f"stack release: appended {done.entry.key} to {args.registry}, citing {done.entry.evidence[0].run}")
    return 0
