"""`stack sample`: generate text from a trained checkpoint, deterministically for a fixed seed.

Every sampling option is checked while the command line is parsed (stack.cli.values), so a NaN
temperature or an impossible seed is a one-line usage error before the checkpoint is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stack.cli import values


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sample", help="generate text from a run or checkpoint")
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    parser.add_argument(
        "--prompt", type=values.utf8_text, default="", help="UTF-8 text to continue (default: empty)"
    )
    parser.add_argument("--tokens", type=values.positive_int, default=200, help="tokens to generate")
    parser.add_argument(
        "--temperature", type=values.temperature, default=0.8, help="0 is greedy; else at least 0.001"
    )
    parser.add_argument("--top-k", type=values.positive_int, default=None, help="keep the k likeliest")
    parser.add_argument("--top-p", type=values.probability, default=None, help="from 0.000001 to 1")
    parser.add_argument(
        "--repetition-penalty", type=values.factor, default=1.0, help="1.0 is off; from 0.001 to 1000"
    )
    parser.add_argument("--seed", type=values.seed, default=0, help=f"0 to {values.SEED_MAX}")
    parser.add_argument("--device", type=values.device, default="cpu", help="cpu | cuda | cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the prompt followed by its continuation."""
    import sys

    import torch

    from stack.cli.inputs import check_inputs
    from stack.model.generate import generate_long
    from stack.train.trained import load_trained

    check_inputs("sample", args)
    trained = load_trained(args.path, args.device)
    ids = trained.tokenizer.encode(args.prompt) if args.prompt else []
    if not ids:
        ids = [trained.tokenizer.eot_id]  # an empty prompt starts where a document would
    for note in context_notes(len(ids), args.tokens, trained.config.model.ctx):
        print(f"stack sample: note: {note}", file=sys.stderr)
    idx = torch.tensor([ids], dtype=torch.long, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    out = generate_long(
        trained.model,
        idx,
        args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        generator=generator,
    )
    print(args.prompt + trained.tokenizer.decode(out[0, len(ids) :].tolist()))
    return 0


def context_notes(prompt: int, tokens: int, ctx: int) -> list[str]:
    """What the model's context does to this request (stack.model.generate.generate_long): a prompt
    that fills it is read from its last half, and tokens past it are generated in a sliding window.
    Said on the terminal, so the text is not taken for a continuation of the whole prompt."""
    notes = []
    if prompt >= ctx:
        notes.append(
            f"the prompt is {prompt} tokens and the model's context {ctx}: the continuation follows "
            f"only its last {ctx // 2}"
        )
    if prompt + tokens > ctx:
        notes.append(
            f"{prompt} + {tokens} tokens pass the model's context of {ctx}: past it, each token is "
            f"generated from the last {ctx // 2} to {ctx - 1} tokens"
        )
    return notes
