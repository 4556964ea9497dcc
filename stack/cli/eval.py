"""`stack eval`: held-out loss and bits per byte of a checkpoint, as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="loss and bits per byte of a run or checkpoint on a text")
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, metavar="FILE", help="a UTF-8 text file")
    source.add_argument("--split", choices=["val"], help="the held-out split of the run's DATA_DIR")
    parser.add_argument(
        "--max-bytes",
        type=int,
        help="with --split: whole documents up to about this many bytes (default: all)",
    )
    parser.add_argument("--data", type=Path, help="DATA_DIR for --split (default: the run's own)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print {loss, bits_per_byte, tokens, bytes} for the chosen text."""
    import json

    from contracts.errors import BadInput
    from stack.eval.bpb import evaluate_text
    from stack.train.trained import load_trained

    trained = load_trained(args.path, args.device)
    if args.text is not None:
        try:
            text = args.text.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"--text {args.text} does not exist") from None
        except UnicodeDecodeError:
            raise BadInput(f"--text {args.text} is not UTF-8 text") from None
    else:
        from stack.eval.texts import split_text

        text = split_text(args.data or _run_data_dir(trained.checkpoint.path), "heldout", args.max_bytes)
    result = evaluate_text(
        trained.model, trained.tokenizer, text, trained.config.model.ctx, args.batch_size, args.device
    )
    print(json.dumps(result, indent=2))
    return 0


def _run_data_dir(checkpoint_path: Path) -> Path:
    """The DATA_DIR recorded in the evidence of the run that wrote this checkpoint."""
    from contracts.errors import BadInput
    from contracts.evidence import EVIDENCE_FILE, read_evidence

    run_dir = checkpoint_path.parent.parent
    record = read_evidence(run_dir / EVIDENCE_FILE)
    data_dir = record.metrics.get("data_dir")
    if not isinstance(data_dir, str) or not Path(data_dir).is_dir():
        raise BadInput(f"the run's DATA_DIR {data_dir!r} is gone; pass --data DATA_DIR")
    return Path(data_dir)
