"""`stack lora`: LoRA adapters merged into their base as a new run-like checkpoint, or inspected.

    stack lora merge RUN_DIR --out OUT                      a run trained with [lora]
    stack lora merge ADAPTER_DIR --base RUN|CKPT --out OUT  an adapter directory onto its base
    stack lora inspect RUN_DIR|ADAPTER_DIR                   the adapter's manifest and B norms

merge: the adapters are merged (GATE-LORA-006: the input embedding untouched; GATE-LORA-002:
merged logits equal unmerged within the spec's tolerance, each Δ once), unmerged back to the
base (GATE-LORA-003: bit for bit), merged again and folded into plain projections, and OUT is
written as `stack laser` writes its output (stack.surgery.output): config.toml without [lora],
checkpoints/step-0000000, surgery.json with the provenance, metadata.json (run kind lora-merge).
An adapter directory loads strictly onto the base it names (GATE-LORA-005). OUT is read by
sample, eval, trace, export and `train --init-from` like any run. Exit 0: written; 3: a gate
fired; 2: bad input. See docs/lora.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.errors import BadInput
from stack.cli import values

ACTIONS = ("merge", "inspect")

if TYPE_CHECKING:
    from stack.surgery.output import Operated
    from stack.train.trained import Trained


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack lora merge|inspect` and its options (one parser: the action is a positional)."""
    parser = sub.add_parser(
        "lora",
        help="LoRA adapters: merge into the base as a new run dir, or inspect",
        description="merge: write OUT (config.toml without [lora], checkpoints/step-0000000, "
        "surgery.json with the provenance, metadata.json) with a [lora] run's or an adapter "
        "directory's adapters merged into the base, under the LoRA gates. inspect: show an adapter.",
    )
    parser.add_argument("action", choices=ACTIONS, help="merge or inspect")
    parser.add_argument(
        "path", type=values.utf8_path, metavar="RUN_DIR|ADAPTER_DIR", help="a [lora] run or an adapter dir"
    )
    parser.add_argument(
        "--base", type=values.utf8_path, metavar="RUN|CKPT", help="merge: the base of an adapter directory"
    )
    parser.add_argument("--out", type=values.utf8_path, metavar="OUT", help="merge: the new run dir")
    parser.add_argument(
        "--force",
        action="store_true",
        help="merge: replace OUT, but only if all it holds is an earlier merge's output, unchanged",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="merge: also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch on the action; merge-only options given to inspect are refused."""
    from stack.cli.inputs import check_inputs

    if args.action == "merge":
        if args.out is None:
            raise BadInput("stack lora merge needs --out OUT, the new run directory")
        check_inputs("lora", args)
        return run_merge(args)
    given = [
        flag
        for flag, value in (("--base", args.base), ("--out", args.out), ("--evidence-dir", args.evidence_dir))
        if value is not None
    ] + (["--force"] if args.force else [])
    if given:
        raise BadInput(f"{', '.join(given)} only apply to `stack lora merge`")
    check_inputs("lora", args)
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
