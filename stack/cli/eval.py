"""`stack eval`: held-out loss and bits per byte of a checkpoint, as JSON, judged and recorded.

The scoring runs under the gates of an `eval` record: GATE-CKPT-002 when the checkpoint loads
(for a RUN_DIR, that it is the run's newest valid checkpoint), GATE-EVAL-003 when the text of
--split is held to the split's shards in the manifest, and when the text is tokenised and scored.
`--record DIR` writes that record as DIR/metadata.json beside the result (DIR/eval.json);
`--evidence-dir LEDGER` files it as LEDGER/<run-id>/. Without either the gates still fire, and
only the JSON is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.cli import values

if TYPE_CHECKING:
    from stack.eval.evidence import CommandEvidence

KIND = "eval"
RESULT_FILE = "eval.json"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="loss and bits per byte of a run or checkpoint on a text")
    parser.add_argument("path", type=values.utf8_path, metavar="RUN_DIR|CKPT")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text", type=values.utf8_path, metavar="FILE", help="a UTF-8 text file, scored byte for byte"
    )
    source.add_argument(
        "--split",
        choices=["val"],
        help="the held-out documents of the run's DATA_DIR of pretraining text (a fine-tune's examples: "
        "stack evalmatrix)",
    )
    parser.add_argument(
        "--max-bytes",
        type=values.positive_int,
        help="with --split: whole documents up to about this many bytes (default: all)",
    )
    parser.add_argument("--data", type=values.utf8_path, help="DATA_DIR for --split (default: the run's own)")
    parser.add_argument("--batch-size", type=values.positive_int, default=8, help="windows per forward")
    add_result_options(parser, RESULT_FILE)
    parser.set_defaults(func=run)


def add_result_options(parser: argparse.ArgumentParser, result_file: str) -> None:
    """--device, --record DIR and --evidence-dir: shared by the commands that score a model
    (eval, evalmatrix, memorization) and keep what they found beside its evidence record."""
    parser.add_argument("--device", type=values.device, default="cpu", help="cpu | cuda | cuda:N")
    add_record_options(parser, result_file)


def add_record_options(parser: argparse.ArgumentParser, result_file: str) -> None:
    """--record DIR and --evidence-dir: where a command that keeps an evidence record (those of
    `add_result_options`, and `stack sample`) writes it, beside its result, and files it."""
    parser.add_argument(
        "--record",
        type=values.utf8_path,
        metavar="DIR",
        help=f"write the evidence record DIR/metadata.json and the result DIR/{result_file} "
        "(refused if DIR already holds a record)",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record into this ledger as LEDGER/<run-id>/ (append-only)",
    )


def run(args: argparse.Namespace) -> int:
    """Print {loss, bits_per_byte, tokens, bytes} for the chosen text, and keep its evidence."""
    import json

    from stack.cli.inputs import check_inputs
    from stack.eval.evidence import CommandEvidence, check_record_dir, judged_and_kept

    _check_split_options(args)
    check_inputs(KIND, args)
    check_record_dir(args.record, RESULT_FILE)
    evidence = CommandEvidence(KIND, args.argv, args.device, args.evidence_dir)
    result, kept = judged_and_kept(evidence, args.record, RESULT_FILE, lambda: _score(args, evidence))
    for where in kept:
        print(f"stack eval: evidence in {where}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def _check_split_options(args: argparse.Namespace) -> None:
    """Refuse --max-bytes and --data beside --text: they shape the held-out split, and would be ignored."""
    from contracts.errors import BadInput

    options = {"--max-bytes": args.max_bytes, "--data": args.data}
    given = [name for name, value in options.items() if value is not None]
    if args.text is not None and given:
        raise BadInput(f"{' and '.join(given)} go with --split val; drop them when scoring --text FILE")


def _read_text(path: Path) -> str:
    """The file's text exactly as stored: CRLF line ends stay CRLF, so every byte is scored. A
    compressed file, or one in UTF-16 or UTF-32 with a byte-order mark, is its text in UTF-8, as
    `stack prepare` reads it (stack.data.unpack)."""
    import tempfile

    from contracts.errors import BadInput
    from stack.data.corpus import InputFile
    from stack.data.unpack import readable

    try:
        with tempfile.TemporaryDirectory(prefix="gatestack-text-") as scratch:
            return (
                readable(InputFile("main", path, path.name), Path(scratch), 0)
                .path.read_bytes()
                .decode("utf-8")
            )
    except FileNotFoundError:
        raise BadInput(f"--text {path} does not exist") from None
    except OSError as exc:
        raise BadInput(f"--text {path} cannot be read ({exc.strerror}); pass a UTF-8 text file") from None
    except UnicodeDecodeError:
        raise BadInput(
            f"--text {path} is not UTF-8 text; give a UTF-8 file (gzip, bzip2, xz and zstd files, and UTF-16 "
            "or UTF-32 with a byte-order mark, are read too)"
        ) from None


def _score(args: argparse.Namespace, evidence: CommandEvidence) -> dict[str, Any]:
    """Load the checkpoint, score the text, and describe both in the record."""
    import hashlib

    from contracts.evidence import DataRef, canonical_sha256
    from stack.cli.progress import amount_progress
    from stack.eval.bpb import evaluate_text
    from stack.eval.overlap import cut_apart, overlap_of
    from stack.train.trained import load_measured

    trained = load_measured(args.path, args.device)
    evidence.note_checkpoint(trained.checkpoint.path)
    record = evidence.record
    record.data = DataRef(tokenizer_sha256=trained.tokenizer.sha256)
    config: dict[str, Any] = {
        "checkpoint": str(trained.checkpoint.path.resolve()),
        "batch_size": args.batch_size,
        "seq_len": trained.config.model.ctx,
    }
    training, lost = _training_data(trained.checkpoint.path)
    if args.text is not None:
        from stack.eval.file_check import check_file_text

        text = _read_text(args.text)
        check_file_text(args.text, text)
        config["text"] = str(args.text.resolve())
        overlap = overlap_of(text.encode("utf-8"), None, training, lost)
    else:
        from stack.eval.split_check import check_split_text
        from stack.eval.texts import split_text

        data_dir = args.data or _run_data_dir(args.path, trained.checkpoint.path)
        text = split_text(data_dir, "heldout", args.max_bytes)
        check_split_text(data_dir, args.split, args.max_bytes, text)
        config.update(split=args.split, data=str(Path(data_dir).resolve()), max_bytes=args.max_bytes)
        overlap = overlap_of(None, Path(data_dir), training, lost)
        if training and (apart := cut_apart(Path(data_dir), training[0])) is not None:
            print(f"stack eval: note: {apart}", file=sys.stderr)
    record.config, record.config_sha256 = config, canonical_sha256(config)
    record.metrics["text_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    with amount_progress("stack eval: scoring", "windows") as reached:
        result = evaluate_text(
            trained.model,
            trained.tokenizer,
            text,
            trained.config.model.ctx,
            args.batch_size,
            args.device,
            context=config["seq_len"],  # GATE-EVAL-003's check window holds the windows scored to it
            progress=reached,
        )
    record.metrics.update(result)
    record.metrics["overlap"] = result["overlap"] = overlap
    _warn_overlap(overlap)
    return result


def _training_data(checkpoint: Path) -> tuple[list[Path], str | None]:
    """The DATA_DIRs the model at `checkpoint` learned from, the last first, and the model the chain
    goes on to that is not there any more (stack.train.lineage.training_chain); no DATA_DIR when
    the last is gone (the overlap then states none). Each one gone is noted (an earlier one is
    stated `gone`), and so is a lost model."""
    from stack.train.lineage import training_chain

    chain = training_chain(checkpoint)
    gone = [data_dir for data_dir in chain.data_dirs if not data_dir.is_dir()]
    for data_dir in gone:
        which = (
            "was trained on"
            if data_dir == chain.data_dirs[0]
            else "learned before (from the model it was tuned from)"
        )
        print(
            f"stack eval: note: the model {which} DATA_DIR {data_dir}, which is not there any more: what "
            "it scores is not checked against that data; put the DATA_DIR back there to check it",
            file=sys.stderr,
        )
    if chain.lost is not None:
        print(
            f"stack eval: note: the model was tuned from {chain.lost}, which is not there any more: what "
            "that model learned from is not checked; put it back there to check it",
            file=sys.stderr,
        )
    if not chain.data_dirs or chain.data_dirs[0] in gone:
        return [], None
    return chain.data_dirs, chain.lost


def _warn_overlap(overlap: dict[str, Any]) -> None:
    """Say on the terminal when what was scored is not held out from the model's training data: the
    data it last learned from, and each it learned from before."""
    rows = overlap.get("earlier_training_data", [])
    earlier = [{"training_data": row["data"], **row} for row in rows if not row.get("gone")]
    for counted, whose in [(overlap, "the run"), *((row, "a model it was tuned from") for row in earlier)]:
        _warn_counts(counted, whose)


def _warn_counts(counted: dict[str, Any], whose: str) -> None:
    """The warnings of one DATA_DIR's counts (`whose` training data it is)."""
    trained, documents = counted.get("text_documents_in_training"), counted.get("text_documents")
    where = f"{whose} ({counted['training_data']})"
    if trained and documents == 1:
        print(
            f"stack eval: warning: the text is a training document of {where}: its score is not a held-out "
            "score",
            file=sys.stderr,
        )
    elif trained:
        print(
            f"stack eval: warning: {trained} of the text's {documents} documents, as `stack prepare` cut "
            f"that data, are training documents of {where}: its score is not a held-out score",
            file=sys.stderr,
        )
    if counted.get("heldout_documents_in_training"):
        print(
            f"stack eval: warning: {counted['heldout_documents_in_training']} of the "
            f"{counted['heldout_documents']} held-out documents are training documents of {where}: the "
            "score is not held out",
            file=sys.stderr,
        )


def _run_data_dir(path: Path, checkpoint_path: Path) -> Path:
    """The DATA_DIR the checkpoint's model learned from (stack.train.lineage.recorded_data_dir): its run's,
    or for a surgery's, merge's or import's output the source's; refused in words that tell none
    recorded from recorded but gone; held to what `--data` takes (the same
    entry of stack.cli.inputs), so an SFT or DPO run's examples are refused as they are by --data,
    not counted as documents by GATE-EVAL-003."""
    from contracts.errors import BadInput
    from stack.artifacts import Identity, Need
    from stack.cli.inputs import input_of
    from stack.train.lineage import recorded_data_dir

    data_dir = recorded_data_dir(checkpoint_path)
    if data_dir is None:
        raise BadInput(
            f"no DATA_DIR is recorded for {checkpoint_path} or the model it was made from; "
            "pass --data DATA_DIR (or --text FILE)"
        )
    if not data_dir.is_dir():
        raise BadInput(
            f"{checkpoint_path}'s model was trained on DATA_DIR {data_dir}, which is not there any more; "
            "if it moved, pass its new place with --data DATA_DIR (or score a text with --text FILE)"
        )

    def refused(identity: Identity, need: Need) -> str:
        matrix = f"stack evalmatrix BASE --items HELDOUT.jsonl --train TRAIN.jsonl --adapter {path}"
        return (
            f"{path} learned from {data_dir}, {identity.kind.noun}; `stack eval --split val` scores the "
            f"held-out documents of {need.noun}: score {path} on held-out examples with `{matrix}`, on a "
            "text with `--text FILE`, or on pretraining text with `--data DATA_DIR` (the held-out loss on "
            "those examples of the run that trained on them is the heldout_loss of its metrics.jsonl "
            "eval lines)"
        )

    input_of(KIND, "--data").require(data_dir, refused)
    return data_dir
