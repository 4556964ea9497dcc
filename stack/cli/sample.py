"""`stack sample`: generate text from a trained checkpoint, deterministically for a fixed seed.

Every sampling option is checked while the command line is parsed (stack.cli.values), so a NaN
temperature or an impossible seed is a one-line usage error before the checkpoint is read.

The generation runs under the gates of a `sample` record: GATE-CKPT-002 when the checkpoint
loads, and GATE-TRAIN-005's drawn, context and seeded checks on what was sampled (every draw
replayed under the options given, from the logits a plain forward of its context gives, and from
the generator state the record's seed starts; stack.model.sampling_checks), so a sampler that
penalises the wrong way, cuts before it scales, keeps the wrong part of a long text or draws from
another seed than the one given exits 3 instead of printing. `--record DIR` writes the record as
DIR/metadata.json beside the result (DIR/sample.json); `--evidence-dir LEDGER` files it. Without
either the gates still fire, and only the text is printed.

A request longer than the default shows its progress on stderr while it draws, and a Ctrl-C or
SIGTERM prints the text drawn so far (unjudged: the gates judge a whole generation) and says where it
was cut short, exit 130 or 143 as every interrupted command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.cli import values
from stack.cli.eval import add_record_options

if TYPE_CHECKING:
    import torch

    from stack.data.tokenizer import Tokenizer
    from stack.eval.evidence import CommandEvidence

KIND = "sample"
RESULT_FILE = "sample.json"
# `--tokens` when none is given; a longer request shows its progress while it draws (`drawing`).
DEFAULT_TOKENS = 200


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sample", help="generate text from a run or checkpoint")
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    parser.add_argument(
        "--prompt", type=values.utf8_text, default="", help="UTF-8 text to continue (default: empty)"
    )
    parser.add_argument(
        "--tokens", type=values.positive_int, default=DEFAULT_TOKENS, help="tokens to generate"
    )
    parser.add_argument(
        "--temperature", type=values.temperature, default=0.8, help="0 is greedy; else at least 0.001"
    )
    parser.add_argument("--top-k", type=values.positive_int, default=None, help="keep the k likeliest")
    parser.add_argument("--top-p", type=values.probability, default=None, help="from 0.000001 to 1")
    parser.add_argument(
        "--repetition-penalty", type=values.factor, default=1.0, help="1.0 is off; from 0.001 to 1000"
    )
    parser.add_argument("--seed", type=values.seed, default=0, help=f"0 to {values.SEED_MAX}")
    parser.add_argument(
        "--ignore-eot",
        action="store_true",
        help="go on past the end-of-text the model draws (default: the text stops there)",
    )
    parser.add_argument("--device", type=values.device, default="cpu", help="cpu | cuda | cuda:N")
    add_record_options(parser, RESULT_FILE)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the prompt followed by its continuation, and keep its evidence."""
    import sys

    from stack.cli.inputs import check_inputs
    from stack.eval.evidence import CommandEvidence, check_record_dir, judged_and_kept

    check_inputs("sample", args)
    check_record_dir(args.record, RESULT_FILE)
    evidence = CommandEvidence(KIND, args.argv, args.device, args.evidence_dir)
    result, kept = judged_and_kept(evidence, args.record, RESULT_FILE, lambda: _sample(args, evidence))
    for where in kept:
        print(f"stack sample: evidence in {where}", file=sys.stderr)
    print(result["text"])
    return 0


def _sample(args: argparse.Namespace, evidence: CommandEvidence) -> dict[str, Any]:
    """Load the checkpoint, sample under GATE-TRAIN-005, and describe both in the record."""
    import hashlib
    import sys

    import torch

    from contracts.evidence import DataRef, canonical_sha256
    from stack.data.chat_prompt import chat_ask
    from stack.model.sampling_checks import Sampler, check_prompt, sample_checked
    from stack.train.trained import load_measured

    trained = load_measured(args.path, args.device)
    evidence.note_checkpoint(trained.checkpoint.path)
    sampler = Sampler(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    record = evidence.record
    record.data = DataRef(tokenizer_sha256=trained.tokenizer.sha256)
    config = {
        "checkpoint": str(trained.checkpoint.path.resolve()),
        "prompt": args.prompt,
        "tokens": args.tokens,
        "seed": args.seed,
        "ignore_eot": args.ignore_eot,
        **sampler.settings(),
    }
    record.config, record.config_sha256 = config, canonical_sha256(config)
    ids = prompt_ids(trained.tokenizer, args.prompt)
    notes = context_notes(len(ids), args.tokens, trained.config.model.ctx)
    ask = chat_ask(trained.checkpoint.state, trained.tokenizer)
    asked = ask.asked(args.prompt or "…") if ask is not None else None
    if ask is not None and asked is not None:
        notes.append(
            f"the model was tuned on chats in {ask.name}, and this prompt has no {ask.marker!r}: asked "
            f"as it was tuned, it reads {asked!r}"
        )
    for note in notes:
        print(f"stack sample: note: {note}", file=sys.stderr)
    idx = torch.tensor([ids], dtype=torch.long, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    with drawing(trained.tokenizer, args.prompt, args.tokens, args.ignore_eot) as on_token:
        out = sample_checked(trained.model, idx, args.tokens, sampler, generator, args.seed, on_token)
    given = prompt_ids(trained.tokenizer, config["prompt"])
    check_prompt(given, out[0, : out.shape[1] - args.tokens].tolist())  # what the draws followed
    drawn = out[0, len(ids) :].tolist()
    shown = shown_draws(trained.tokenizer, drawn, args.ignore_eot)
    if len(shown) < len(drawn):
        print(
            f"stack sample: note: the model ended the text (end-of-text) after {len(shown)} of "
            f"{len(drawn)} tokens; --ignore-eot shows what it drew past it",
            file=sys.stderr,
        )
    text = sample_text(trained.tokenizer, args.prompt, drawn, args.ignore_eot)
    record.metrics["text_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"text": text, "prompt_tokens": len(ids), "prompt_ids": ids, "drawn": drawn}


@contextmanager
def drawing(
    tokenizer: Tokenizer, prompt: str, tokens: int, ignore_eot: bool
) -> Iterator[Callable[[torch.Tensor], None]]:
    """Yield the per-token callback of a generation of `tokens` draws (sample_checked's `on_token`):
    it keeps every token drawn and, for a request longer than DEFAULT_TOKENS, shows the progress
    (stack.cli.progress.amount_progress). A Ctrl-C or SIGTERM in the block prints the text drawn so
    far and ends the command as `Interrupted`, naming how many of the tokens were drawn: a user who
    stops a long generation keeps what it made."""
    import torch

    from contracts.errors import Interrupted
    from stack.cli.progress import amount_progress

    kept: list[torch.Tensor] = []
    progress: AbstractContextManager[Callable[[int, int], None]] = (
        amount_progress("stack sample: drawn", "tokens")
        if tokens > DEFAULT_TOKENS
        else nullcontext(lambda _done, _total: None)
    )
    try:
        with progress as reached:

            def on_token(token: torch.Tensor) -> None:
                kept.append(token)
                reached(len(kept), tokens)

            yield on_token
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as stack.cli raises it
        drawn = torch.cat(kept, dim=1)[0].tolist() if kept else []
        print(sample_text(tokenizer, prompt, drawn, ignore_eot), flush=True)
        stopped = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        shown = len(shown_draws(tokenizer, drawn, ignore_eot))
        raise Interrupted(stopped, cut_short(len(drawn), shown, tokens)) from exc


def cut_short(drawn: int, shown: int, tokens: int) -> str:
    """What an interrupted `stack sample` says beside the text it printed: how far the drawing got,
    where the text it printed ends if the model ended it (`shown_draws`), and that GATE-TRAIN-005
    (which replays a whole generation) did not judge it."""
    ended = ""
    if shown < drawn:
        ended = f" (the model ended the text after {shown:,}; --ignore-eot shows the rest)"
    return (
        f"cut short at {drawn:,} of {tokens:,} tokens{ended}; the text drawn so far is printed, "
        "unjudged by GATE-TRAIN-005 and unrecorded"
    )


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids `stack sample` continues: the prompt's, or the end-of-text id where it has none (an
    empty prompt starts where a document would). sample.json's `prompt_tokens` counts them, and the
    checker holds it to them (tools/integrity/models/trace_tokens.py)."""
    return tokenizer.encode_prompt(prompt) or [tokenizer.eot_id]


def shown_draws(tokenizer: Tokenizer, drawn: list[int], ignore_eot: bool) -> list[int]:
    """The drawn ids the text shows: up to the first end-of-text, where the model ended the document
    (transformers' generate stops at its end-of-sequence the same way), or all of them with
    --ignore-eot. Every draw is still made and kept in sample.json's `drawn`: GATE-TRAIN-005 replays
    the whole generation, and a tokenizer decodes the end-of-text to nothing, so a text run on past
    it would show no sign of where the document ended."""
    if ignore_eot or tokenizer.eot_id not in drawn:
        return drawn
    return drawn[: drawn.index(tokenizer.eot_id)]


def sample_text(tokenizer: Tokenizer, prompt: str, drawn: list[int], ignore_eot: bool) -> str:
    """The text `stack sample` prints and keeps (sample.json's `text`): the prompt as given, then
    what the ids it shows of those drawn after it decode to (`shown_draws`). The checker derives a
    record's text with this function (tools/integrity/models/trace_tokens.py)."""
    return prompt + tokenizer.text_of(shown_draws(tokenizer, drawn, ignore_eot))


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
