"""`stack sample`: generate text from a trained checkpoint, deterministically for a fixed seed."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sample", help="generate text from a run or checkpoint")
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    parser.add_argument("--prompt", default="", help="text to continue (default: empty)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the prompt followed by its continuation."""
    import torch

    from contracts.errors import BadInput
    from stack.model.generate import generate_long
    from stack.train.trained import load_trained

    if args.tokens < 1:
        raise BadInput("--tokens must be at least 1")
    trained = load_trained(args.path, args.device)
    ids = trained.tokenizer.encode(args.prompt) if args.prompt else []
    if not ids:
        ids = [trained.tokenizer.eot_id]  # an empty prompt starts where a document would
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
