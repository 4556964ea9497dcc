"""`stack quantize`: chosen matrices quantised by HQQ, stored dequantised, as a new run-like OUT.

    stack quantize RUN_DIR|CKPT --method hqq --bits 4 --targets '*' --out OUT [--group-size 64]

Exit 0: OUT written; 3: a gate fired (GATE-HQQ-001: no matrix worse than round-to-nearest;
-002: the held-out KL to the original stays under the spec's bound; -003: tied embeddings stay
tied; GATE-LASER-003: only the targets changed), with the halted record in OUT; 2: bad input.
The weights are stored dequantised: the memory win needs a packed kernel (docs/surgery.md).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stack.cli import values
from stack.cli.laser import add_common

if TYPE_CHECKING:
    from stack.surgery.output import Operated
    from stack.train.trained import Trained

BITS = (2, 3, 4, 8)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack quantize` and its options."""
    parser = sub.add_parser(
        "quantize",
        help="half-quadratic quantisation (HQQ) of chosen matrices, stored dequantised, as a new run dir",
        description="Write OUT (config.toml, checkpoints/step-0000000, surgery.json with the provenance, "
        "metadata.json) with the chosen matrices quantised group-wise and stored dequantised.",
    )
    add_common(parser)
    parser.add_argument("--method", choices=("hqq",), default="hqq", help="the quantiser (default hqq)")
    parser.add_argument(
        "--bits", type=values.positive_int, choices=BITS, default=4, help="bits per weight (default 4)"
    )
    parser.add_argument(
        "--group-size",
        type=values.positive_int,
        help="weights per (scale, zero) group, dividing every chosen matrix's rows (default: per matrix, "
        "the largest power of two up to 64 that divides its rows)",
    )
    parser.add_argument(
        "--sample-text",
        type=values.utf8_path,
        metavar="FILE",
        help="held-out text for the KL check (default: the checkpoint's held-out data if reachable, "
        "else a fixed built-in text)",
    )
    parser.set_defaults(func=run)


def operate(args: argparse.Namespace, trained: Trained) -> Operated:
    """Quantise the targets, write them in, then judge ties, changes and the held-out agreement
    (`args`: targets, layers, bits, group_size, sample_text and the argv that gave them). The
    integrity check makes a committed model's quantisation again with it
    (tools/integrity/models/forward_replays.py)."""
    import copy

    from contracts.evidence import canonical_sha256
    from stack.cli.progress import amount_progress
    from stack.export.sample import check_sample_agreement, resolve_sample
    from stack.model.lora import tensor_hashes
    from stack.model.targets import select
    from stack.surgery.agreement import check_compared, check_reference, heldout_agreement
    from stack.surgery.changes import check_changes, check_ties, write_weights
    from stack.surgery.hqq import HalfQuadratic, check_grid, quantise
    from stack.surgery.output import Operated

    model = trained.model
    original = copy.deepcopy(model)
    sample = resolve_sample(trained.tokenizer, model.config.ctx, args.sample_text, trained.checkpoint.path)
    requested = None if args.sample_text is None else str(args.sample_text)  # as the settings state it
    check_sample_agreement(sample, trained.tokenizer, model.config.ctx, requested)  # compared on below
    source = tensor_hashes(model)
    selection = select(model, [args.targets], args.layers)
    targets = list(selection.targets)
    settings = HalfQuadratic()
    with amount_progress("stack quantize: quantised", "matrices") as reached:
        quantised = quantise(targets, args.bits, args.group_size, settings, reached)
    write_weights(model, targets, [q.weight for q in quantised])
    check_grid(model, targets, quantised, args.bits, args.group_size)  # measured on what was written
    check_ties(model)
    check_changes(model, targets, source, args.argv)
    agreement = heldout_agreement(original, model, sample.windows)
    check_compared(agreement["model_sha256"], model)  # the model `perform` writes
    check_reference(agreement, canonical_sha256(source))  # the source's weights as read, before quantising
    measured = {
        "storage": "dequantised (fp32); the memory win needs a packed kernel",
        "optimiser": vars(settings),
        "matrices": [
            {"matrix": t.site, "keys": list(t.keys), "group": q.group}
            for t, q in zip(targets, quantised, strict=True)
        ],
        "selection": selection.as_record(),
        "sample": sample.describe(),
        "agreement": agreement,
    }
    return Operated(model, measured)


def run(args: argparse.Namespace) -> int:
    """Operate, write OUT, and print the held-out agreement."""
    from stack.cli.inputs import check_inputs
    from stack.model.targets import summary_lines
    from stack.surgery.output import Request, perform

    check_inputs("quantize", args)
    settings = {
        "method": args.method,
        "bits": args.bits,
        "group_size": args.group_size,
        "targets": args.targets,
        "layers": args.layers,
        "sample_text": None if args.sample_text is None else str(args.sample_text),
    }
    request = Request("quantize", args.path, args.out, args.force, args.argv, args.evidence_dir, settings)
    record = perform(request, lambda trained: operate(args, trained))
    measured = record["measured"]
    agreement = measured["agreement"]
    groups = sorted({row["group"] for row in measured["matrices"]})
    print(
        f"quantised {len(measured['matrices'])} matrices to {args.bits} bits in groups of "
        f"{' or '.join(map(str, groups))} weights (HQQ, stored dequantised)"
    )
    print("\n".join(summary_lines(measured["selection"])))
    print(
        f"held-out mean KL to the original {agreement['mean_kl_nats']:.4g} nats over "
        f"{agreement['positions']} positions ({measured['sample']['source']})"
    )
    print(f"wrote {args.out / record['checkpoint']} (evidence in {args.out})")
    return 0
