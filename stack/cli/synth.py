"""`stack synth`: synthetic instruction data from a chat checkpoint, Magpie-style, filtered.

    stack synth RUN_DIR|CKPT --out OUT --samples 200 --seed 0 --template chat [--device cuda]

The model writes a user turn after the template's user prefix, then answers it. Samples too
short, caught in a repetition loop, or duplicated are dropped and counted by reason. Exit 0:
OUT/synth.jsonl (chat records: `stack prepare OUT/synth.jsonl --format chat` takes it as it is),
OUT/synth.json (seed, model sha256, counts) and OUT/metadata.json written;
3: a gate fired (GATE-SYNTH-001: the counts add up; -002: the seed gives the same samples);
2: bad input. See docs/preferences.md.
"""

from __future__ import annotations

import argparse
import sys

from stack.cli import values
from stack.tune.settings import SYNTH_DEFAULTS, SynthSettings

# The settings the command line may give, with their validators.
OPTIONS = (
    ("--samples", "samples", values.positive_int, "samples to generate"),
    ("--seed", "seed", values.seed, "seeds the sampling; the same seed gives the same file"),
    ("--temperature", "temperature", values.temperature, "sampling temperature (0: greedy)"),
    (
        "--max-instruction-tokens",
        "max_instruction_tokens",
        values.positive_int,
        "tokens of a user turn at most",
    ),
    ("--max-response-tokens", "max_response_tokens", values.positive_int, "tokens of a response at most"),
    ("--min-chars", "min_chars", values.natural, "shorter instructions or responses are dropped"),
    ("--min-coherence", "min_coherence", values.factor, "lower coherence scores (0-100) are dropped"),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack synth` and its options."""
    parser = sub.add_parser(
        "synth",
        help="synthetic instruction data (Magpie-style) from a chat checkpoint, filtered, as JSONL",
        description="Write OUT/synth.jsonl (chat records {messages: [user, assistant]} per line, ready for "
        "`stack prepare --format chat`), OUT/synth.json (seed, model sha256, what was dropped and why) and "
        "OUT/metadata.json.",
    )
    parser.add_argument("path", type=values.utf8_path, metavar="RUN_DIR|CKPT", help="a chat-capable model")
    parser.add_argument("--out", type=values.utf8_path, required=True, metavar="OUT", help="a new directory")
    parser.add_argument("--template", type=values.utf8_text, help="chat template name or file (default chat)")
    for flag, name, kind, text in OPTIONS:
        parser.add_argument(
            flag, dest=name, type=kind, help=f"{text} (default {getattr(SYNTH_DEFAULTS, name)})"
        )
    parser.add_argument(
        "--device",
        type=values.device,
        default="cpu",
        help="cpu | cuda | cuda:N: where the model samples (the seed's samples are per device)",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file the evidence record as LEDGER/<run-id>/ (append-only)",
    )
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Generate, print the counts and where the file went."""
    from stack.cli.inputs import check_inputs
    from stack.synth_run import RECORDS, run
    from stack.tune.synth import none_kept

    check_inputs("synth", args)
    given = {name: getattr(args, name) for _, name, _, _ in OPTIONS if getattr(args, name) is not None}
    settings = SynthSettings(**given)

    def progress(done: int) -> None:
        if done % 10 == 0 or done == settings.samples:
            print(f"synth: {done}/{settings.samples} samples", file=sys.stderr, flush=True)

    report = run(
        args.path, args.out, args.template, settings, args.argv, args.evidence_dir, progress, args.device
    )
    dropped = ", ".join(f"{reason} {n}" for reason, n in report.dropped.items())
    print(f"generated {report.generated}, kept {len(report.kept)}; dropped: {dropped}")
    print(f"wrote {args.out / RECORDS} (evidence in {args.out})")
    advice = none_kept(report, settings)
    if advice:
        print(f"stack synth: warning: {advice}", file=sys.stderr)
    return 0
