"""`stack import-hf`: a local Hugging Face Llama, Qwen2 or Mistral directory as a stack checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from stack.cli import values


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "import-hf",
        help="import a local Hugging Face Llama, Qwen2 or Mistral directory as a stack checkpoint",
        description="Read DIR (config.json, model.safetensors or its shards, and the model's own "
        "tokenizer.json + tokenizer_config.json, or the stack's tokenizer record that `stack export "
        "--format hf` writes) into OUT/checkpoints/step-0000000 with fp32 weights and a fresh optimizer "
        "state, after checking that the stack computes the logits transformers computes "
        "(GATE-EXPORT-001). A config the stack cannot compute exactly (rope scaling, a head_dim of its "
        "own, an activation other than silu, biases beyond Qwen2's q/k/v, a sliding window shorter than the "
        "context) is refused; a Mistral whose window covers its context is read as the Llama it computes. "
        "Nothing is downloaded: DIR must be local. OUT also gets an evidence record, metadata.json, of run "
        "kind import-hf, whose lineage names DIR's weights.",
    )
    parser.add_argument("path", type=Path, metavar="DIR")
    parser.add_argument(
        "--out", type=values.utf8_path, required=True, help="the new directory for the checkpoint"
    )
    parser.add_argument(
        "--sample-text", type=Path, metavar="FILE", help="text to check parity on (default: built-in)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUT, but only if all it holds is an earlier import, unchanged (per its import.json)",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record (with a copy of import.json) as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import, then say where the checkpoint is and what the parity check measured."""
    from contracts.judges.export import hf_logits_tolerance
    from stack.cli.inputs import check_inputs
    from stack.export.importer import import_hf

    check_inputs("import-hf", args)
    result = import_hf(
        args.path,
        args.out,
        force=args.force,
        sample_text=args.sample_text,
        argv=args.argv,
        evidence_dir=args.evidence_dir,
    )
    record = result.record
    check, tokenizer = record["parity"], record["tokenizer"]
    rounding = {"rounding_error": check["rounding"]} if check.get("rounding") is not None else {}
    tolerance = hf_logits_tolerance(rounding, check["threshold"])
    print(
        f"wrote {result.checkpoint}: logits within {check['max_abs_diff']:.3g} of transformers' over "
        f"{check['positions']} positions (tolerance {tolerance:.3g}: the larger of logits_atol and "
        f"{check['threshold']['logits_rounding_factor']:g} × the stack's fp32 rounding "
        f"{check.get('rounding') or 0:.3g})"
    )
    print(
        f"  {record['family']}, weights {'/'.join(record['weights']['source_dtypes'])} → float32, "
        f"vocab {record['model_vocab']}, {tokenizer['name']} tokenizer of {tokenizer['vocab_size']} ids "
        f"(sha256 {tokenizer['sha256'][:12]})"
    )
    if record["chat_template"] is not None:
        sha = record["chat_template"]["sha256"][:12]
        print(f"  chat template read (sha256 {sha}): kept in the checkpoint, `stack export` writes it back")
    return 0
