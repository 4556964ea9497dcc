"""`stack memorization`: how many training examples a fine-tuned model recites verbatim, beside its base.

    stack memorization TUNED --base BASE --data DATA_DIR | --examples TRAIN.jsonl [--n 100] [--prefix 32]

For --n training examples, each model continues the first --prefix tokens greedily for
--continuation tokens (default: the spec's min_verbatim_tokens, the least that can count); an
example is reproduced when the continuation shares a verbatim run of min_verbatim_tokens tokens
with the true one. Exit 0: the table (or --json) printed; GATE-FT-003 (warning) names the
remedies when the fine-tuned model's rate passes max_rate; 2: bad input. See docs/finetuning.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from stack.cli import values
from stack.cli.eval import add_result_options

if TYPE_CHECKING:
    from stack.eval.evidence import CommandEvidence
    from stack.eval.memorization import Drawn, Recall

KIND = "memorization"
RESULT_FILE = "memorization.json"
GATE = "GATE-FT-003"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack memorization` and its options."""
    parser = sub.add_parser(
        "memorization",
        help="the share of training examples a fine-tuned model continues verbatim, beside its base",
        description="Greedy continuations of training-example prefixes by the fine-tuned and the base "
        "model, and the longest verbatim run each shares with the true continuation.",
    )
    parser.add_argument(
        "path",
        type=values.utf8_path,
        metavar="TUNED",
        help="the fine-tuned model: a run or checkpoint, or an adapter directory of BASE",
    )
    parser.add_argument(
        "--base", type=values.utf8_path, required=True, metavar="BASE", help="the model it was tuned from"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", type=values.utf8_path, metavar="DATA_DIR", help="the train split's documents"
    )
    source.add_argument(
        "--examples",
        type=values.utf8_path,
        metavar="JSONL",
        help='lines {"text"}, {"prompt", "completion"} or chat {"messages"}',
    )
    parser.add_argument(
        "--template",
        type=values.utf8_text,
        metavar="NAME|FILE",
        help="with --examples: the chat template chat records were prepared with (default chat)",
    )
    parser.add_argument("--n", type=values.positive_int, default=100, help="examples to draw (default 100)")
    parser.add_argument("--prefix", type=values.positive_int, default=32, help="prefix tokens (default 32)")
    parser.add_argument(
        "--continuation",
        type=values.positive_int,
        help="tokens generated and compared (default and least: the spec's min_verbatim_tokens)",
    )
    parser.add_argument(
        "--batch-size", type=values.positive_int, default=16, help="prefixes per forward (default 16)"
    )
    parser.add_argument("--seed", type=values.seed, default=0, help="the draw of the examples (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    add_result_options(parser, RESULT_FILE)
    parser.set_defaults(func=run)


def _continuation(args: argparse.Namespace) -> int:
    """The continuation length: at least the spec's min_verbatim_tokens, or the gate could never fire."""
    from contracts.errors import BadInput
    from contracts.spec import load_spec

    least = int(load_spec().threshold(GATE, "min_verbatim_tokens"))
    if args.continuation is None:
        return least
    if args.continuation < least:
        raise BadInput(
            f"--continuation {args.continuation} is shorter than the {least} verbatim tokens that count "
            f"an example as reproduced ({GATE} min_verbatim_tokens); give at least {least}"
        )
    return int(args.continuation)


def run(args: argparse.Namespace) -> int:
    """Measure both models, keep the evidence, print the table (or JSON)."""
    import json
    import sys

    from contracts.evidence import Verdict, canonical_sha256
    from stack.cli.inputs import check_inputs
    from stack.eval.evidence import CommandEvidence, check_record_dir, judged_and_kept

    check_inputs(KIND, args)
    check_record_dir(args.record, RESULT_FILE)
    continuation = _continuation(args)
    evidence = CommandEvidence(KIND, args.argv, args.device, args.evidence_dir)
    config = {
        "models": {"tuned": str(args.path), "base": str(args.base)},
        "data": None if args.data is None else str(args.data),
        "examples": None if args.examples is None else str(args.examples),
        **({"template": args.template} if args.template is not None else {}),
        "n": args.n,
        "prefix": args.prefix,
        "continuation": continuation,
        "seed": args.seed,
    }
    evidence.record.config, evidence.record.config_sha256 = config, canonical_sha256(config)
    result, kept = judged_and_kept(
        evidence, args.record, RESULT_FILE, lambda: _measure(args, evidence, continuation)
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)
    for gate in evidence.record.gates:
        if gate.verdict is Verdict.WARN:
            print(f"stack memorization: warning: {gate.id}: {gate.message}", file=sys.stderr)
    for where in kept:
        print(f"stack memorization: evidence in {where}", file=sys.stderr)
    return 0


def _examples(args: argparse.Namespace, tokenizer: Any, length: int) -> Drawn:
    """--n training examples of `length` tokens, from the DATA_DIR (same tokenizer, by identity) or
    the JSONL file."""
    from contracts.errors import BadInput
    from stack.data.sft_template import load_template
    from stack.data.tokenizer import load_tokenizer
    from stack.eval.memorization import data_examples, jsonl_examples
    from stack.eval.split_check import check_train_examples

    if args.examples is not None:
        template = load_template(args.template)
        return jsonl_examples(args.examples, tokenizer, args.n, length, args.seed, template)
    if args.template is not None:
        raise BadInput("--template goes with --examples (a DATA_DIR's documents are already tokens)")
    if load_tokenizer(args.data).identity != tokenizer.identity:
        raise BadInput(
            f"--data {args.data} was tokenized by another tokenizer than the model's; give its own data"
        )
    drawn = data_examples(args.data, tokenizer, args.n, length, args.seed)
    check_train_examples(args.data, [example.tokens for example in drawn.examples])
    return drawn


def _measure(args: argparse.Namespace, evidence: CommandEvidence, continuation: int) -> dict[str, Any]:
    """Load both models, draw the examples, measure, and describe it all in the record."""
    from contracts.errors import BadInput
    from contracts.evidence import DataRef
    from stack.cli.progress import count_progress
    from stack.data.sft_template import load_template
    from stack.eval.memorization import (
        check_drawn_examples,
        check_example_texts,
        measure_recall,
        rendered_examples,
    )
    from stack.eval.tuned import load_tuned
    from stack.train.trained import load_measured

    tuned = load_tuned(args.path, args.base, args.device)
    evidence.note_checkpoint(tuned.checkpoint.path)
    base = load_measured(args.base, args.device)  # held to its architecture, as the tuned model
    if base.tokenizer.identity != tuned.tokenizer.identity:
        raise BadInput(
            f"--base {args.base} has another tokenizer than {args.path}; give the model it was tuned from"
        )
    for option, trained in ((f"TUNED {args.path}", tuned), (f"--base {args.base}", base)):
        ctx = trained.config.model.ctx
        if args.prefix + continuation > ctx:
            raise BadInput(
                f"--prefix {args.prefix} + --continuation {continuation} tokens do not fit the context of "
                f"{option} ({ctx} tokens): past it the continuation would follow a cut prefix; give "
                f"--prefix and --continuation that sum to at most {ctx}"
            )
    evidence.record.data = DataRef(tokenizer_sha256=tuned.tokenizer.sha256)
    evidence.record.metrics["base_checkpoint"] = str(base.checkpoint.path.resolve())
    length = args.prefix + continuation
    drawn = _examples(args, tuned.tokenizer, length)
    # the draw made again from the seed the record states (GATE-FT-003 check drawn)
    check_drawn_examples(drawn, args.n, length, evidence.record.config["seed"])
    chosen = drawn.examples
    with count_progress("memorization", 2) as advance:
        recall = measure_recall(
            tuned.model, base.model, chosen, args.prefix, continuation, args.batch_size, advance
        )
    if args.examples is not None:  # each example's ids against its record's text (GATE-FT-003 check tokens)
        template = load_template(args.template)
        rendered = rendered_examples(args.examples, chosen, tuned.tokenizer, template)
        check_example_texts(recall, rendered, tuned.tokenizer)
    evidence.record.metrics.update(_rates(recall))
    return {
        **_rates(recall),
        "examples": recall.sources,
        "tuned_runs": recall.tuned,
        "base_runs": recall.base,
        # every continuation's ids, the true ones and each row's: the checker finds every run again
        "continuations": recall.continuations,
    }


def _rates(recall: Recall) -> dict[str, Any]:
    """Each model's share of reproduced examples and its longest run, as the table shows them."""
    from contracts.derive.memorization import memorization_summary
    from contracts.spec import load_spec

    least = int(load_spec().threshold(GATE, "min_verbatim_tokens"))
    models = {
        name: memorization_summary(runs, least)
        for name, runs in (("fine-tuned", recall.tuned), ("base", recall.base))
    }
    return {
        "prefix": recall.prefix,
        "continuation": recall.continuation,
        "min_verbatim_tokens": least,
        "models": models,
    }


def _table(result: dict[str, Any]) -> None:
    """Both models as a rich table on stdout."""
    from rich.table import Table

    from stack.cli import data_console

    title = (
        f"verbatim recall of {len(result['examples'])} training examples "
        f"({result['prefix']}-token prefix, {result['continuation']}-token continuation)"
    )
    table = Table(title=title)
    for column in (
        "model",
        f"reproduced ({result['min_verbatim_tokens']}+ tokens)",
        "rate",
        "longest run",
        "mean run",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in result["models"].items():
        cells = (
            str(row["reproduced"]),
            f"{row['rate']:.1%}",
            str(row["longest_run"]),
            f"{row['mean_run']:.1f}",
        )
        table.add_row(name, *cells)
    data_console().print(table)
