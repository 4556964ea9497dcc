"""`stack lora`: LoRA adapters merged into their base, inspected, or carried to and from peft.

    stack lora merge RUN_DIR --out OUT                      a run trained with [lora]
    stack lora merge ADAPTER_DIR --base RUN|CKPT --out OUT  an adapter directory onto its base
    stack lora inspect RUN_DIR|ADAPTER_DIR                   the adapter's manifest and B norms
    stack lora export RUN_DIR --out DIR [--base HF_DIR]      the adapter in peft's format (+ HF base)
    stack lora import PEFT_DIR --base RUN|CKPT --out ADAPTER_DIR   a peft adapter as the stack's

merge: the adapters are merged (GATE-LORA-006: the input embedding untouched; GATE-LORA-002:
merged logits equal unmerged within the spec's tolerance, each Δ once), unmerged back to the
base (GATE-LORA-003: bit for bit), merged again and folded into plain projections, and OUT is
written as `stack laser` writes its output (stack.surgery.output): config.toml without [lora],
checkpoints/step-0000000, surgery.json with the provenance, metadata.json (run kind lora-merge).
An adapter directory loads strictly onto the base it names (GATE-LORA-005). OUT is read by
sample, eval, trace, export and `train --init-from` like any run.

export and import (stack.export.peft_exchange): peft loads the adapter on the Hugging Face
export of its base and its logits are held to the stack's (GATE-LORA-007). Exit 0: written; 3: a
gate fired; 2: bad input. See docs/finetuning.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.errors import BadInput
from stack.cli import values

ACTIONS = ("merge", "inspect", "export", "import")

if TYPE_CHECKING:
    from stack.surgery.output import Operated
    from stack.train.trained import Trained


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack lora merge|inspect|export|import` and its options (one parser, the action positional)."""
    parser = sub.add_parser(
        "lora",
        help="LoRA adapters: merge into the base, inspect, or export to / import from peft's format",
        description="merge: write OUT (config.toml without [lora], checkpoints/step-0000000, "
        "surgery.json with the provenance, metadata.json) with a [lora] run's or an adapter "
        "directory's adapters merged into the base, under the LoRA gates. inspect: show an adapter. "
        "export: a [lora] run's adapter as adapter_config.json + adapter_model.safetensors, with the "
        "Hugging Face export of its base in DIR/base, checked in peft. import: a peft adapter "
        "directory as the stack's adapter directory for --base.",
    )
    parser.add_argument("action", choices=ACTIONS, help="merge, inspect, export or import")
    parser.add_argument(
        "path",
        type=values.utf8_path,
        metavar="RUN_DIR|ADAPTER_DIR|PEFT_DIR",
        help="a [lora] run, an adapter dir, or (import) a peft adapter dir",
    )
    parser.add_argument(
        "--base",
        type=values.utf8_path,
        metavar="RUN|CKPT|HF_DIR",
        help="merge, import: the base the adapter belongs to; export: the Hugging Face export of the "
        "run's base to check against (default: written into DIR/base)",
    )
    parser.add_argument(
        "--out",
        type=values.utf8_path,
        metavar="OUT",
        help="merge: the new run dir; export, import: the new directory",
    )
    parser.add_argument(
        "--sample-text",
        type=values.utf8_path,
        metavar="FILE",
        help="export, import: text to compare logits on (default: the run's held-out data, else built in)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="merge, export, import: replace OUT, but only if all it holds is an earlier output, unchanged",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="merge, export, import: also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run)


# The options each action takes besides the path.
OPTIONS = {
    "merge": ("--base", "--out", "--force", "--evidence-dir"),
    "inspect": (),
    "export": ("--base", "--out", "--sample-text", "--force", "--evidence-dir"),
    "import": ("--base", "--out", "--sample-text", "--force", "--evidence-dir"),
}


def run(args: argparse.Namespace) -> int:
    """Dispatch on the action; options another action takes are refused, then every input is
    checked for its kind (stack.cli.inputs) before any work."""
    from stack.cli.inputs import check_inputs

    given = {
        "--base": args.base is not None,
        "--out": args.out is not None,
        "--sample-text": args.sample_text is not None,
        "--force": args.force,
        "--evidence-dir": args.evidence_dir is not None,
    }
    foreign = [flag for flag, present in given.items() if present and flag not in OPTIONS[args.action]]
    if foreign:
        raise BadInput(f"{', '.join(foreign)} do(es) not apply to `stack lora {args.action}`")
    if args.action != "inspect" and args.out is None:
        raise BadInput(f"stack lora {args.action} needs --out, the new directory")
    if args.action == "import" and args.base is None:
        raise BadInput("stack lora import needs --base RUN|CKPT, the model the peft adapter was trained on")
    check_inputs("lora", args)
    if args.action == "merge":
        return run_merge(args)
    if args.action == "export":
        return run_export(args)
    if args.action == "import":
        return run_import(args)
    return run_inspect(args)


def _adapter_dir(path: Path) -> Path:
    """The adapter directory of a LoRA run (RUN_DIR/adapter) or an adapter directory itself."""
    from stack.artifacts import identify
    from stack.train.lora_setup import ADAPTER_DIR

    return path if identify(path).kind.name == "adapter" else path / ADAPTER_DIR


def _source(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(the checkpoint to load, the adapter directory to put on it or None for a [lora] run)."""
    from stack.artifacts import identify

    if identify(args.path).kind.name == "adapter":
        if args.base is None:
            raise BadInput(f"{args.path} is an adapter directory: name its base with --base RUN|CKPT")
        return args.base, args.path
    if args.base is not None:
        raise BadInput(f"--base is for an adapter directory; {args.path} is a LoRA run: it holds its base")
    return args.path, None


def _operate(trained: Trained, adapter: Path | None) -> Operated:
    """Load the adapter (strictly) or take the run's, merge, unmerge, merge again and fold."""
    from stack.model import lora
    from stack.model.adapters import load_adapter
    from stack.model.lora_checks import check_unmerged, checked_merge, unmerge_measured
    from stack.surgery.output import Operated

    model = trained.model
    if adapter is not None:
        load_adapter(model, adapter, lora.base_sha256(model))  # GATE-LORA-005
    elif not lora.has_lora(model):
        raise BadInput(f"{trained.checkpoint.path} has no LoRA adapters: its run has no [lora] section")
    merged = checked_merge(model)  # GATE-LORA-006, GATE-LORA-002
    unmerged = unmerge_measured(model)
    check_unmerged(unmerged)  # GATE-LORA-003
    lora.merge(model)
    modules = lora.fold(model)
    # The merged model is a plain model of the base's shape: its config carries no [lora].
    trained.config = trained.config.model_copy(update={"lora": None})
    return Operated(model, {"modules": modules, **merged, "unmerge": unmerged})


def run_merge(args: argparse.Namespace) -> int:
    """Merge, write OUT, and say how close the merged logits came."""
    from stack.surgery.output import Request, perform

    checkpoint, adapter = _source(args)
    settings = {"lora": {"adapter": str(adapter) if adapter is not None else None}}
    request = Request("lora-merge", checkpoint, args.out, args.force, args.argv, args.evidence_dir, settings)
    record = perform(request, lambda trained: _operate(trained, adapter))
    parity = record["measured"]["parity"]
    print(
        f"merged {parity['adapters']} adapter(s): logits within {parity['max_abs_diff']:.3g} of the "
        f"unmerged model's; unmerge restored the base bit for bit"
    )
    print(f"wrote {args.out / record['checkpoint']} (evidence in {args.out})")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Print the adapter's manifest summary and, per adapted module, ‖B‖_F."""
    from safetensors.torch import load_file

    from stack.model.adapters import WEIGHTS, read_manifest

    directory = _adapter_dir(args.path)
    manifest = read_manifest(directory)
    tensors = load_file(str(directory / WEIGHTS))
    print(
        f"{directory}: r={manifest['r']} alpha={manifest['alpha']:g} dropout={manifest['dropout']:g} "
        f"rslora={manifest['rslora']} targets={manifest['targets']!r} base sha256 {manifest['base_sha256']}"
    )
    for module in manifest["modules"]:
        norm = float(tensors[f"{module}.lora_B"].double().norm()) if f"{module}.lora_B" in tensors else 0.0
        print(f"  {module}: ‖B‖_F {norm:.4g}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export, say how close peft came, then let GATE-LORA-007 speak (exit 3 after the evidence)."""
    from contracts.errors import EXIT_GATE, GateViolation
    from contracts.evidence import RunStatus
    from stack.eval.evidence import CommandEvidence
    from stack.export import parity
    from stack.export.peft_exchange import EXPORT_KIND, RECORD, export_adapter, keep_export

    evidence = CommandEvidence(EXPORT_KIND, args.argv, "cpu", args.evidence_dir)
    result = None
    try:
        with evidence.judging():
            result = export_adapter(args.path, args.out, args.base, args.force, args.sample_text, evidence)
            check = result.record["parity"]
            print(f"{check['artefact']}: {'ok' if check['ok'] else 'FAILED'}: {check['message']}")
            base = result.record["base"]
            print(f"wrote {args.out} (peft adapter; base {base}; evidence in {args.out / RECORD})")
            parity.certify_peft(result.check, result.adapters, result.not_loaded, result.config)
    except GateViolation:
        keep_export(evidence, args.path, result)
        raise
    if not result.ok:  # only with the contracts off: the weights are named unverified
        evidence.settle(RunStatus.FAILED, "the peft parity check failed with the contracts off")
        keep_export(evidence, args.path, result)
        return EXIT_GATE
    evidence.settle(RunStatus.COMPLETED)
    filed = keep_export(evidence, args.path, result)
    if filed is not None:
        print(f"stack lora export: evidence filed at {filed}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import, then say where the stack's adapter went and how close peft's logits were."""
    from contracts.errors import GateViolation
    from contracts.evidence import RunStatus
    from stack.eval.evidence import CommandEvidence
    from stack.export.peft_exchange import IMPORT_KIND, import_adapter

    evidence = CommandEvidence(IMPORT_KIND, args.argv, "cpu", args.evidence_dir)
    try:
        with evidence.judging():
            result = import_adapter(args.path, args.base, args.out, args.sample_text, evidence, args.force)
    except GateViolation:
        evidence.file()
        raise
    evidence.settle(RunStatus.COMPLETED)
    filed = evidence.file()
    check = result.record["parity"]
    print(
        f"imported {result.adapters} adapter(s) onto {args.base}: peft's logits within "
        f"{check['max_abs_diff']:.3g} of the stack's; wrote {args.out}"
    )
    if filed is not None:
        print(f"stack lora import: evidence filed at {filed}")
    return 0
