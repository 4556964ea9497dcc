"""`stack lens`: what each layer of a model would predict, through the logit lens or a tuned lens.

    stack lens CKPT --prompt TEXT                         the logit lens, per layer, at the last position
    stack lens CKPT --prompt TEXT --lens FILE             the tuned lens of FILE
    stack lens CKPT --train --data DATA_DIR --save FILE   fit a tuned lens, the model frozen

Exit 0: read / trained (a layer where the tuned lens loses to the logit lens on held-out text
is a warning, GATE-LENS-003); 3: a gate fired; 2: bad input. Every run writes an evidence record
of run kind `lens` or `lens-train` (stack.trace.record). See docs/trace.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from stack.cli import values
from stack.cli.trace import add_record_options
from stack.lens.defaults import (
    DEFAULT_CLIP_NORM,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_STEPS,
    DEFAULT_WEIGHT_DECAY,
)

if TYPE_CHECKING:
    from contracts.evidence import DataRef
    from contracts.ledger import Ledger
    from stack.trace.modes import Result
    from stack.train.trained import Trained


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack lens` and its options (reading, training, evidence)."""
    parser = sub.add_parser(
        "lens",
        help="logit lens and tuned lens: each layer's prediction, its entropy and KL to the final one",
        description="Read each layer's residual stream through the model's final norm and unembedding.",
    )
    parser.add_argument("path", type=values.utf8_path, metavar="CKPT", help="run directory or checkpoint")
    parser.add_argument("--device", type=values.device, default="cpu", help="cpu | cuda | cuda:N")
    read = parser.add_argument_group("reading a prompt")
    read.add_argument("--prompt", type=values.utf8_text, help="text to read (the checkpoint's tokenizer)")
    read.add_argument(
        "--lens", type=values.utf8_path, metavar="FILE", help="a tuned lens (default: logit lens)"
    )
    read.add_argument(
        "--top-k", type=values.positive_int, default=5, metavar="K", help="tokens shown per layer"
    )
    read.add_argument(
        "--position", type=values.natural, metavar="N", help="position shown (default: the last)"
    )
    read.add_argument("--json", type=values.utf8_path, metavar="OUT", help="write the full reading as JSON")
    read.add_argument("--csv", type=values.utf8_path, metavar="OUT", help="one row per layer × position")
    train = parser.add_argument_group(
        "training a tuned lens (the tuned-lens package's optimiser: SGD with Nesterov momentum and "
        "weight decay, gradient clipped, learning rate decayed linearly to 0; model frozen)"
    )
    train.add_argument("--train", action="store_true", help="fit the probes instead of reading a prompt")
    train.add_argument("--data", type=values.utf8_path, metavar="DATA_DIR", help="a prepared DATA_DIR")
    train.add_argument(
        "--save", type=values.utf8_path, metavar="FILE", help="where the lens goes (safetensors)"
    )
    train.add_argument(
        "--steps",
        type=values.positive_int,
        default=DEFAULT_STEPS,
        help=f"optimizer steps (default {DEFAULT_STEPS})",
    )
    train.add_argument("--batch-size", type=values.positive_int, default=8, help="sequences per step")
    train.add_argument(
        "--seq-len",
        type=values.positive_int,
        help="tokens per sequence, at most the model's context (default: the context, at most 128)",
    )
    train.add_argument(
        "--lr",
        type=values.step_size,
        default=DEFAULT_LR,
        help=f"SGD's learning rate at the first step, decayed linearly to 0 (default {DEFAULT_LR:g}, "
        "the tuned-lens package's: its scale 1.0 × (1 − momentum))",
    )
    train.add_argument(
        "--momentum",
        type=values.probability,
        default=DEFAULT_MOMENTUM,
        help=f"Nesterov momentum (default {DEFAULT_MOMENTUM:g})",
    )
    train.add_argument(
        "--weight-decay",
        type=values.fraction,
        default=DEFAULT_WEIGHT_DECAY,
        help=f"SGD weight decay (default {DEFAULT_WEIGHT_DECAY:g})",
    )
    train.add_argument(
        "--clip-norm",
        type=values.step_size,
        default=DEFAULT_CLIP_NORM,
        help=f"largest gradient norm of a step (default {DEFAULT_CLIP_NORM:g})",
    )
    train.add_argument("--seed", type=values.seed, default=0, help="order of the training windows")
    train.add_argument(
        "--heldout-batches", type=values.positive_int, default=8, help="held-out batches of the comparison"
    )
    add_record_options(parser, "replace an output, --save FILE or --out DIR an earlier run wrote")
    parser.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    """Reading needs a prompt; training needs data and a place for the lens; neither takes the other's."""
    from contracts.errors import BadInput
    from stack.trace.record import check_one_place

    check_one_place(args.out, args.evidence_dir)
    if args.train:
        if args.prompt is not None or args.lens is not None or args.position is not None:
            raise BadInput(
                "--train fits a lens on --data; read a prompt with it in a second run (--lens FILE)"
            )
        if args.data is None or args.save is None:
            raise BadInput("--train needs --data DATA_DIR to fit on and --save FILE for the lens")
        return
    if args.data is not None or args.save is not None:
        raise BadInput("--data and --save go with --train")
    if not args.prompt:
        raise BadInput("give a non-empty --prompt TEXT to read, or --train to fit a tuned lens")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that cannot be written or that --force may not replace
    (stack.outputs): a tuned-lens file is recognised by its own metadata."""
    from stack.lens.probes import is_lens
    from stack.outputs import ledger, ownership
    from stack.outputs.destination import check_file
    from stack.trace.record import check_out_dir, check_output_file

    for option, path in (("--json", args.json), ("--csv", args.csv)):
        check_output_file(path, option, args.force)
    if args.out is not None:
        check_out_dir(args.out, args.force, "lens-train" if args.train else "lens")
    ledger.check(args.evidence_dir)
    if args.save is not None:
        check_file(args.save, "--save")
        ownership.claim_file(args.save, "--save", args.force, is_lens, "a tuned-lens file")


def _read(args: argparse.Namespace, trained: Trained, config: dict[str, Any]) -> Result:
    """Read the prompt through the logit lens, or the tuned lens of --lens."""
    import torch

    from contracts.errors import BadInput
    from contracts.evidence import sha256_file
    from stack.lens.probes import load_lens
    from stack.lens.readout import read
    from stack.lens.report import lens_result
    from stack.lens.residual import capture
    from stack.trace.sites import TRACE_SCHEMA_VERSION

    model = trained.model
    ids = trained.tokenizer.encode_prompt(args.prompt)
    if len(ids) > model.config.ctx:
        raise BadInput(
            f"the prompt is {len(ids)} tokens; the model takes {model.config.ctx}: shorten --prompt"
        )
    position = len(ids) - 1 if args.position is None else args.position
    if position >= len(ids):
        raise BadInput(f"--position {position} is past the prompt's {len(ids)} tokens (0-{len(ids) - 1})")
    device = model.lm_head.weight.device
    lens = None if args.lens is None else load_lens(args.lens, device)
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    readings = read(model, capture(model, idx), lens, args.top_k)
    which = "logit lens" if lens is None else f"tuned lens {args.lens}"
    config.update(prompt=args.prompt, tokens=len(ids), position=position)
    config.update(lens=None if lens is None else str(args.lens))
    config.update(lens_sha256=None if lens is None else sha256_file(args.lens), top_k=args.top_k)
    header = (
        f"stack lens: {args.path} on {len(ids)} tokens, {len(model.layers)} layers, {which}, "
        f"trace schema {TRACE_SCHEMA_VERSION}"
    )
    mode = "logit-lens" if lens is None else "tuned-lens"
    return lens_result(readings, ids, trained.tokenizer.text_of, position, header, mode)


def _lens_warning(ledger: Ledger) -> str | None:
    """GATE-LENS-003's message when it warned, else None."""
    from contracts.evidence import Verdict

    for result in ledger.gate_results():
        if result.id == "GATE-LENS-003" and result.verdict is Verdict.WARN:
            return result.message
    return None


def _train(args: argparse.Namespace, trained: Trained, config: dict[str, Any], ledger: Ledger) -> Result:
    """Fit the probes on --data, compare on its held-out split, save the lens to --save."""
    import time

    from contracts.errors import BadInput
    from contracts.evidence import sha256_file
    from stack.cli.progress import step_progress
    from stack.data.tokenizer import load_tokenizer
    from stack.lens.probes import save_lens
    from stack.lens.report import training_result
    from stack.lens.train import LensTraining, heldout_comparison, sequence_length, train_lens

    if load_tokenizer(args.data).identity != trained.tokenizer.identity:
        raise BadInput(f"--data {args.data} was prepared with another tokenizer than the checkpoint's")
    settings = LensTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=sequence_length(args.seq_len, trained.model.config.ctx),
        lr=args.lr,
        momentum=args.momentum,
        seed=args.seed,
        heldout_batches=args.heldout_batches,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
    )
    losses: list[float] = []
    with step_progress(settings.steps, max(1, settings.steps // 10)) as update:
        clock = time.perf_counter()

        def progress(step: int, line: dict[str, Any]) -> None:
            losses.append(line["loss"])
            tokens = step * settings.batch_size * settings.seq_len  # at most the context (sequence_length)
            update(step, {**line, "tokens_per_s": tokens / (time.perf_counter() - clock)})

        lens = train_lens(trained.model, args.data, settings, progress)
    per_layer = heldout_comparison(trained.model, lens, args.data, settings)
    metadata = {key: str(value) for key, value in vars(settings).items()}
    save_lens(args.save, lens, metadata)
    config.update(
        vars(settings), data=str(args.data), save=str(args.save), lens_sha256=sha256_file(args.save)
    )
    header = (
        f"stack lens: trained a tuned lens of {args.path} on {args.data} ({settings.steps} steps of "
        f"{settings.batch_size} × {settings.seq_len} tokens)"
    )
    result = training_result(per_layer, (losses[0], losses[-1]), header, _lens_warning(ledger))
    result.lines.append(f"lens: {args.save}")
    return result


def _data_read(args: argparse.Namespace) -> DataRef | None:
    """The DATA_DIR a lens is fitted on, cited by its manifest's and tokenizer's sha256 as a training
    record cites its data: what ties the record's GATE-DATA-001/005 counts to that data's manifest."""
    from contracts.evidence import DataRef
    from stack.data.manifest import load_manifest
    from stack.data.tokenizer import load_tokenizer

    if not args.train:
        return None
    manifest = load_manifest(args.data)
    return DataRef(manifest_sha256=manifest.sha256, tokenizer_sha256=load_tokenizer(args.data).sha256)


def run(args: argparse.Namespace) -> int:
    """Read or train, write the outputs asked for and the evidence record; 3 when a gate fired."""
    import torch

    from stack.cli.inputs import check_inputs
    from stack.cli.trace import run_recorded
    from stack.trace.record import run_dir_of
    from stack.train.trained import load_trained, resolve_checkpoint

    _validate(args)
    check_inputs("lens", args)
    _check_outputs(args)
    checkpoint = resolve_checkpoint(args.path)
    anchor = run_dir_of(checkpoint)
    kind = "lens-train" if args.train else "lens"
    config: dict[str, Any] = {"checkpoint": str(args.path)}

    loaded: list[Trained] = []

    def compute(ledger: Ledger) -> Result:
        trained = load_trained(checkpoint, torch.device(args.device))  # present: values.absent_device
        loaded.append(trained)
        return _train(args, trained, config, ledger) if args.train else _read(args, trained, config)

    def check_written(result: Result, written: dict[str, str]) -> None:
        """State each output's sha256 in the record; hold a reading's --csv to its reading."""
        from stack.lens.report import check_table

        config["outputs_sha256"] = written
        if args.csv is not None and not args.train:
            check_table(args.csv, result.payload(), loaded[0].tokenizer.text_of)

    result, path = run_recorded(args, anchor, kind, config, compute, _data_read(args), check_written)
    print(f"verdict: {result.verdict}   evidence: {path}")
    return 0
