"""`stack export`: a checkpoint as a Hugging Face directory or an ONNX graph, checked first.

The Hugging Face family follows the model: Llama, or Qwen2 when q, k and v carry biases."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stack.cli import values

if TYPE_CHECKING:
    from stack.export import exporters


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a checkpoint for transformers (hf) or ONNX Runtime (onnx), with a parity check",
        description="Write DIR with the exported model, its tokenizer files and export.json (parity numbers, "
        "sha256 of every file, the source checkpoint). The export is loaded back in its runtime and its "
        "logits compared with the stack's (GATE-EXPORT-001 for hf, GATE-EXPORT-002 for onnx); a file "
        "whose check fails keeps an '.unverified' name and the command exits 3. Either way DIR also gets an "
        "evidence record, metadata.json, of run kind export-hf or export-onnx.",
    )
    parser.add_argument("path", type=values.utf8_path, metavar="RUN_DIR|CKPT")
    parser.add_argument("--format", dest="fmt", required=True, choices=("hf", "onnx"))
    parser.add_argument(
        "--out", type=values.utf8_path, required=True, metavar="DIR", help="the new export directory"
    )
    parser.add_argument("--int8", action="store_true", help="onnx: also a dynamically quantised int8 graph")
    parser.add_argument(
        "--sample-text",
        type=values.utf8_path,
        metavar="FILE",
        help="text to check parity on (default: the checkpoint's held-out data if reachable, "
        "else a fixed built-in text)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="onnx: the ai.onnx opset, 18 or newer (default 18)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace DIR, but only if all it holds is an earlier export, unchanged (per its export.json)",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record (with a copy of export.json) as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, and report; a failed check exits 3 after the evidence is written."""
    import sys

    from contracts.errors import EXIT_GATE, BadInput, GateViolation
    from contracts.evidence import RunStatus
    from stack.cli.inputs import check_inputs
    from stack.eval.evidence import CommandEvidence
    from stack.export import exporters, onnx_export

    if args.opset is not None and args.fmt != "onnx":
        raise BadInput("--opset applies to --format onnx only")
    if args.opset is not None and args.opset < onnx_export.DEFAULT_OPSET:
        raise BadInput(
            f"--opset {args.opset}: torch's exporter writes opset {onnx_export.DEFAULT_OPSET} or newer"
        )
    check_inputs("export", args)
    request = exporters.ExportRequest(
        checkpoint=args.path,
        fmt=args.fmt,
        out=args.out,
        int8=args.int8,
        sample_text=args.sample_text,
        opset=args.opset or onnx_export.DEFAULT_OPSET,
        force=args.force,
        argv=args.argv,
    )
    evidence = CommandEvidence(exporters.run_kind(args.fmt), args.argv, "cpu", args.evidence_dir)
    result = None
    try:
        with evidence.judging():
            result = exporters.export(request)
            _report(result)
            exporters.certify(result)
    except GateViolation:
        exporters.keep_evidence(evidence, request, result)
        raise
    if not result.ok:  # only reached with the contracts switched off: the files still say unverified
        evidence.settle(RunStatus.FAILED, "a parity check failed with the contracts off")
        exporters.keep_evidence(evidence, request, result)
        print(f"stack export: {result.out} holds unverified files (contracts are off)", file=sys.stderr)
        return EXIT_GATE
    evidence.settle(RunStatus.COMPLETED)
    filed = exporters.keep_evidence(evidence, request, result)
    if filed is not None:
        print(f"stack export: evidence filed at {filed}")
    return 0


def _report(result: exporters.ExportResult) -> None:
    """One line per checked artefact, then where the export and its evidence are."""
    from contracts.evidence import EVIDENCE_FILE
    from stack.export import exporters

    for name, check in result.record["parity"].items():
        print(f"{name}: {'ok' if check['ok'] else 'FAILED'}: {check['message']}")
    print(
        f"wrote {result.out} ({result.record['status']}; evidence in {result.out / exporters.RECORD} "
        f"and {result.out / EVIDENCE_FILE})"
    )
