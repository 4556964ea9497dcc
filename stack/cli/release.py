"""`stack release`: put a finished run's checkpoint into MODELS_DIR as a model that loads as it is."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from stack.cli import values


def weights_url(text: str) -> str:
    """--weights-url: a URL with a scheme and a host whose path ends in the weights' file name
    (the registry names a released file by its last segment), or a usage error saying so."""
    from contracts.release_rules import WEIGHTS_FILE

    parts = urlsplit(text)
    if not (parts.scheme and parts.netloc and PurePosixPath(parts.path).name == WEIGHTS_FILE) or any(
        c.isspace() for c in text
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not the URL of a {WEIGHTS_FILE}; give one such as "
            f"https://huggingface.co/ORG/NAME/resolve/main/{WEIGHTS_FILE}"
        )
    return text


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "release",
        help="release a finished run's checkpoint as a model directory with a registry entry",
        description="Copy the weights and state.json of the checkpoint that RUN_DIR's filed record hashed "
        "into MODELS_DIR/NAME-VERSION/ with a manifest.json and a MODEL_CARD.md written from the record, "
        "and append the release to the registry. Refused, before anything is written, when the record "
        "could not back a release (the rules of tools/check_integrity.py); a record that waived a blocking "
        "gate is released only when each such gate is accepted with --accept-waiver GATE --reason TEXT, "
        "which the registry entry and the model card keep.",
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
        help="the registry to append to (default evidence/registry.yaml; a first release starts it)",
    )
    parser.add_argument(
        "--weights-url",
        type=weights_url,
        metavar="URL",
        help="keep model.safetensors out of the repository: the registry cites it at URL (upload it "
        "there) with the record's sha256 and size; for weights too large for git",
    )
    parser.add_argument(
        "--accept-waiver",
        action="append",
        default=[],
        metavar="GATE-ID",
        help="release although the run waived this blocking gate; needs its own --reason (repeatable, "
        "in pairs)",
    )
    parser.add_argument(
        "--reason",
        action="append",
        type=values.utf8_text,
        default=[],
        help="why the matching --accept-waiver is acceptable for this release",
    )
    parser.set_defaults(func=run)


def _accepted(args: argparse.Namespace) -> dict[str, str]:
    """--accept-waiver GATE --reason TEXT pairs; unpaired, empty, unknown or repeated ones are bad input."""
    from contracts.errors import BadInput
    from contracts.spec import load_spec

    if len(args.accept_waiver) != len(args.reason):
        raise BadInput(
            f"{len(args.accept_waiver)} --accept-waiver and {len(args.reason)} --reason: give each "
            '--accept-waiver GATE-ID its own --reason "why this release accepts it"'
        )
    if any(not reason.strip() for reason in args.reason):
        raise BadInput("a --reason is empty: say in words why the release accepts the waived gate")
    for gate_id in args.accept_waiver:
        load_spec().gate(gate_id)
    if len(set(args.accept_waiver)) != len(args.accept_waiver):
        raise BadInput("a gate is accepted twice: give each --accept-waiver GATE-ID once")
    return dict(zip(args.accept_waiver, args.reason, strict=True))


def run(args: argparse.Namespace) -> int:
    """Release, then say where the model went and which entry the registry got."""
    from contracts.release_rules import WEIGHTS_FILE
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
            accepted=_accepted(args),
            weights_url=args.weights_url,
        )
    )
    print(f"stack release: {done.entry.key} in {done.directory} (card {done.directory / 'MODEL_CARD.md'})")
    key, cited = done.entry.key, f"citing {done.entry.evidence[0].run}"
    if done.started_registry:
        print(f"stack release: started the repository's registry, {args.registry}, with {key}, {cited}")
    else:
        print(f"stack release: appended {key} to {args.registry}, {cited}")
    weights = done.entry.artifact(WEIGHTS_FILE)
    if weights is not None and weights.url is not None:
        print(
            f"stack release: its weights stay out of the repository: upload {done.source / weights.name} "
            f"to {weights.url} (sha256 {weights.sha256})"
        )
    return 0
