"""`stack laser`: chosen matrices replaced by their rank-ρ truncation, written as a new run-like OUT.

    stack laser RUN_DIR|CKPT --targets 'ffn_*' --layers 1-2 --rho 0.25 --out OUT

ρ is the fraction of each matrix's singular values kept (⌈ρ·min(rows, cols)⌉, at least one),
by an exact SVD in float64. Exit 0: OUT written; 3: a gate fired (GATE-LASER-001: ρ = 1 is the
identity; -002: the error is the discarded values' norm; -003: only the targets changed), with
the halted record in OUT; 2: bad input. See docs/surgery.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stack.cli import values

if TYPE_CHECKING:
    from stack.surgery.output import Operated
    from stack.train.trained import Trained


def add_common(parser: argparse.ArgumentParser) -> None:
    """The source, the targets and the output, shared with `stack quantize`."""
    parser.add_argument("path", type=values.utf8_path, metavar="RUN_DIR|CKPT", help="the source model")
    parser.add_argument(
        "--targets",
        type=values.utf8_text,
        required=True,
        metavar="GLOB",
        help="matrices by name: embed, logits, q, k, v, attn_out, ffn_gate, ffn_up, ffn_out, and with the "
        "options q2, k2, router, moe.router, moe.expert<e>.gate|up|down (globs on the full or short name, "
        "e.g. 'ffn_*', 'layers.1.q', 'moe.expert*'; '*' is every matrix)",
    )
    parser.add_argument(
        "--layers", type=values.utf8_text, metavar="A-B", help="only the matrices of these blocks, e.g. 1-2"
    )
    parser.add_argument("--out", type=values.utf8_path, required=True, metavar="OUT", help="the new run dir")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUT, but only if all it holds is an earlier surgery's output, unchanged",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack laser` and its options."""
    parser = sub.add_parser(
        "laser",
        help="LASER: replace chosen matrices by their rank-ρ truncation (exact SVD), as a new run dir",
        description="Write OUT (config.toml, checkpoints/step-0000000, surgery.json with the provenance, "
        "metadata.json) with the chosen matrices truncated to the fraction ρ of their singular values.",
    )
    add_common(parser)
    parser.add_argument(
        "--rho",
        type=values.probability,
        required=True,
        help="the fraction of singular values kept, in (0, 1]; 1 keeps the matrix bit for bit",
    )
    parser.set_defaults(func=run)


def _operate(args: argparse.Namespace, trained: Trained) -> Operated:
    """Truncate the targets, write them into the model, and check that nothing else moved."""
    from stack.cli.progress import amount_progress
    from stack.model.lora import tensor_hashes
    from stack.model.targets import select
    from stack.surgery.changes import check_changes, write_weights
    from stack.surgery.laser import laser
    from stack.surgery.output import Operated

    model = trained.model
    source = tensor_hashes(model)
    selection = select(model, [args.targets], args.layers)
    targets = list(selection.targets)
    with amount_progress("stack laser: truncated", "matrices") as reached:
        cuts = laser(targets, args.rho, reached)
    write_weights(model, targets, [cut.weight for cut in cuts])
    check_changes(model, targets, source, args.argv)
    rows = [
        {"matrix": cut.site, "keys": list(t.keys), "rank": cut.rank, "kept": cut.kept}
        | {"discarded_norm": cut.discarded_norm}
        for t, cut in zip(targets, cuts, strict=True)
    ]
    measured = {"svd": "exact, torch.linalg.svd in float64", "matrices": rows}
    return Operated(model, {**measured, "selection": selection.as_record()})


def run(args: argparse.Namespace) -> int:
    """Operate, write OUT, and print one line per matrix."""
    from stack.cli.inputs import check_inputs
    from stack.model.targets import summary_lines
    from stack.surgery.output import Request, perform

    check_inputs("laser", args)
    settings = {"targets": args.targets, "layers": args.layers, "rho": args.rho}
    request = Request("laser", args.path, args.out, args.force, args.argv, args.evidence_dir, settings)
    record = perform(request, lambda trained: _operate(args, trained))
    for row in record["measured"]["matrices"]:
        print(
            f"{row['matrix']}: kept {row['kept']} of {row['rank']} singular values "
            f"(discarded norm {row['discarded_norm']:.4g})"
        )
    print("\n".join(summary_lines(record["measured"]["selection"])))
    print(f"wrote {args.out / record['checkpoint']} (evidence in {args.out})")
    return 0
