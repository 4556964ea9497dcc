"""`stack evalmatrix`: held-out items scored by the base model, with few-shot examples, with an
adapter and with retrieved passages, side by side, so an adapter is judged against prompting.

    stack evalmatrix BASE --items HELDOUT.jsonl --train TRAIN.jsonl [--adapter TUNED] [--docs DIR]

Items and training examples are JSONL lines {"id", "prompt", "completion"}. Rows: A base, B base
+ --shots examples drawn from --train (never the item itself: GATE-FT-002), C the --adapter's
model (a fine-tuned or merged-LoRA checkpoint of BASE), D the adapter's model (else the base)
with the --passages best BM25 passages of --docs before the prompt. Exit 0: the table (or --json)
printed; GATE-FT-001 (warning) reports an adapter that does not beat few-shot; 3: a row scored
other items than the rest, or an item was its own example, or exact match was computed other than
config.exact_match says (GATE-FT-002); 2: bad input. See
docs/finetuning.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.cli import values
from stack.cli.eval import add_result_options

if TYPE_CHECKING:
    from stack.eval.evidence import CommandEvidence
    from stack.eval.matrix import Setup

KIND = "evalmatrix"
RESULT_FILE = "evalmatrix.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack evalmatrix` and its options."""
    parser = sub.add_parser(
        "evalmatrix",
        help="score held-out items by base, base + few-shot, base + adapter, and with retrieval",
        description="Bits per byte (and optional exact match) of every item's reference completion "
        "under each row; the rows score the same item ids, and the adapter is judged against few-shot.",
    )
    parser.add_argument(
        "path", type=values.utf8_path, metavar="BASE", help="the base model (run or checkpoint)"
    )
    parser.add_argument(
        "--items",
        type=values.utf8_path,
        required=True,
        metavar="JSONL",
        help="held-out {id, prompt, completion}",
    )
    parser.add_argument(
        "--train",
        type=values.utf8_path,
        required=True,
        metavar="JSONL",
        help="training {id, prompt, completion}: the pool few-shot examples are drawn from",
    )
    parser.add_argument(
        "--shots", type=values.positive_int, default=2, help="few-shot examples per item (row B; default 2)"
    )
    parser.add_argument(
        "--adapter",
        type=values.utf8_path,
        metavar="TUNED",
        help="row C: the base fine-tuned: a run or checkpoint (a LoRA run, `stack lora merge` output) "
        "or an adapter directory of BASE",
    )
    parser.add_argument(
        "--docs",
        type=values.utf8_path,
        metavar="DIR",
        help="row D: a folder of .txt/.md documents to retrieve from",
    )
    parser.add_argument(
        "--passages", type=values.positive_int, default=1, help="passages retrieved per item (default 1)"
    )
    parser.add_argument(
        "--exact-match", action="store_true", help="also decode greedily and count exact matches"
    )
    parser.add_argument("--seed", type=values.seed, default=0, help="the few-shot draw's seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    add_result_options(parser, RESULT_FILE)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score every row, keep the evidence, print the table (or JSON)."""
    import json

    from contracts.evidence import canonical_sha256
    from stack.cli.inputs import check_inputs
    from stack.eval.evidence import CommandEvidence, check_record_dir, judged_and_kept

    check_inputs(KIND, args)
    check_record_dir(args.record, RESULT_FILE)
    evidence = CommandEvidence(KIND, args.argv, args.device, args.evidence_dir)
    config = {
        "models": {"base": str(args.path), "adapter": None if args.adapter is None else str(args.adapter)},
        "items": str(args.items),
        "train": str(args.train),
        "shots": args.shots,
        "docs": None if args.docs is None else str(args.docs),
        "passages": args.passages,
        "exact_match": args.exact_match,
        "seed": args.seed,
    }
    evidence.record.config, evidence.record.config_sha256 = config, canonical_sha256(config)
    result, kept = judged_and_kept(evidence, args.record, RESULT_FILE, lambda: _score(args, evidence))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)
    _report(evidence, kept)
    _unretrieved_note(args, result)
    _cut_notes(result)
    return 0


# What a row's cut context lost, and what to change, for the rows GATE-FT-001 does not judge (row B's
# cut is its check `shown`, said as the gate's warning).
PROMPTS_TOO_LONG = "the items' prompts are longer than the model's context; give shorter prompts"
CUT_REMEDIES = {
    "A": PROMPTS_TOO_LONG,
    "C": PROMPTS_TOO_LONG,
    "D": "it read less than the passages retrieved; give fewer --passages, or documents of shorter "
    "paragraphs",
}


def _cut_notes(result: dict[str, Any]) -> None:
    """Say which rows besides B had contexts cut to fit the model: the table's count alone does not
    say that row D's passages were not read whole, or that a prompt lost its start."""
    import sys

    for name, scores in result["scores"].items():
        cut = [item for item in scores if item["dropped"]]
        if name in CUT_REMEDIES and cut:
            tokens = sum(item["dropped"] for item in cut)
            print(
                f"stack evalmatrix: note: row {name}'s context was cut to fit the model on {len(cut)} of "
                f"{len(scores)} item(s) ({tokens} tokens): {CUT_REMEDIES[name]}",
                file=sys.stderr,
            )


def _unretrieved_note(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Say which items row D found no passage for: their row D is the row without retrieval again,
    and a table whose row D equals row C (no prompt word in the folder) said nothing of why."""
    import sys

    empty = [item for item, found in result["retrieved"].items() if not found]
    if args.docs is None or not empty:
        return
    same = "C" if args.adapter is not None else "A"
    print(
        f"stack evalmatrix: note: row D retrieved no passage for {len(empty)} of {len(result['items'])} "
        f"item(s) (no passage of --docs {args.docs} scores above 0 for their prompts: {', '.join(empty[:5])}"
        f"{' …' if len(empty) > 5 else ''}); for those, row D scores as row {same} does",
        file=sys.stderr,
    )


def _untemplated_note(state: dict[str, Any], tokenizer: Any, items: list[Any]) -> None:
    """Say when the adapter was tuned on chats and no item's prompt asks for a reply in its template:
    rows C and D then score completions after text the adapter was not tuned to answer, and may
    understate it against few-shot (GATE-FT-001)."""
    import sys

    from stack.data.chat_prompt import chat_ask

    ask = chat_ask(state, tokenizer)
    if ask is None or not items:
        return
    asked = [ask.asked(item.prompt.strip()) for item in items]
    if all(written is not None for written in asked):
        print(
            f"stack evalmatrix: note: the adapter was tuned on chats in {ask.name}, and no item's prompt "
            f"has {ask.marker!r}: rows C and D score it after text it was not tuned to answer; write the "
            f"prompts as it was asked, e.g. {asked[0]!r}",
            file=sys.stderr,
        )


def _setup(args: argparse.Namespace, evidence: CommandEvidence) -> tuple[Setup, list[Any]]:
    """Load the models, the items, the few-shot pool and the retriever; record what was read."""
    from contracts.errors import BadInput
    from contracts.evidence import DataRef
    from stack.eval.items import read_items
    from stack.eval.matrix import Setup
    from stack.eval.retrieval import BM25, read_passages
    from stack.eval.tuned import load_tuned
    from stack.train.trained import load_measured

    items, pool = read_items(args.items, "--items"), read_items(args.train, "--train")
    retriever = None if args.docs is None else BM25(read_passages(args.docs))
    base = load_measured(args.path, args.device)  # GATE-MODEL-003: the forward every row scores
    evidence.note_checkpoint(base.checkpoint.path)
    adapter = None
    if args.adapter is not None:
        adapter = load_tuned(args.adapter, args.path, args.device)
        if adapter.tokenizer.identity != base.tokenizer.identity:
            raise BadInput(
                f"--adapter {args.adapter} has another tokenizer than {args.path}; "
                "give a fine-tune of this base model"
            )
        evidence.record.metrics["adapter_checkpoint"] = str(adapter.checkpoint.path.resolve())
        _untemplated_note(adapter.checkpoint.state, adapter.tokenizer, items)
    evidence.record.data = DataRef(tokenizer_sha256=base.tokenizer.sha256)
    setup = Setup(
        base.model,
        None if adapter is None else adapter.model,
        base.tokenizer,
        pool,
        args.shots,
        retriever,
        args.passages,
        args.seed,
        args.exact_match,
    )
    return setup, items


def _score(args: argparse.Namespace, evidence: CommandEvidence) -> dict[str, Any]:
    """The matrix, its adapter gain (GATE-FT-001 when there is an adapter), as the result JSON."""
    from stack.cli.progress import count_progress
    from stack.eval.matrix import adapter_gain, pool_measured, rows_of, score_matrix
    from stack.eval.overlap import item_overlap

    setup, items = _setup(args, evidence)
    with count_progress("evalmatrix", len(items) * len(rows_of(setup))) as advance:
        matrix = score_matrix(setup, items, lambda row: advance(f"row {row}"), evidence.record.config)
    gain = adapter_gain(matrix) if setup.adapter is not None else None
    rows = [r.summary() for r in matrix.rows]
    overlap = item_overlap(items, setup.pool)
    evidence.record.metrics.update(rows=rows, adapter_gain_bpb=gain, items=len(items), overlap=overlap)
    retrieved = {
        item: [{k: p[k] for k in ("source", "paragraph", "score")} for p in found]
        for item, found in matrix.retrieved.items()
    }
    return {
        "items": [item.id for item in items],
        # each item's completion, as scored: the checker counts the bytes each score divides by again
        "completions": [item.completion for item in items],
        "rows": rows,
        "scores": {r.row.name: r.scores for r in matrix.rows},  # the raw results the rows are summed from
        "adapter_gain_bpb": gain,
        "overlap": overlap,
        # the items' and the pool's prompts, beside their ids: the checker finds the overlap again
        "prompts": [item.prompt for item in items],
        "pool_prompts": [p.prompt for p in setup.pool],
        "few_shot": [d.measured() for d in matrix.draws],
        "pool": pool_measured(setup.pool),  # the pool drawn from: the checker draws every item again
        "retrieved": retrieved,
    }


def _table(result: dict[str, Any]) -> None:
    """The rows as a rich table on stdout."""
    from rich.table import Table

    from stack.cli import data_console

    table = Table(title=f"evaluation matrix over {len(result['items'])} items")
    for column in ("row", "what", "bits/byte", "loss", "exact match", "context cut"):
        table.add_column(column, justify="left" if column in ("row", "what") else "right")
    for row in result["rows"]:
        exact = "-" if row["exact_match"] is None else f"{row['exact_match']:.1%}"
        cells = (row["row"], row["label"], f"{row['bits_per_byte']:.4f}", f"{row['loss']:.4f}", exact)
        table.add_row(*cells, str(row["context_tokens_dropped"]))
    console = data_console()
    console.print(table)
    if result["adapter_gain_bpb"] is not None:
        console.print(f"adapter gain over few-shot: {result['adapter_gain_bpb']:.4f} bits per byte")


def _report(evidence: CommandEvidence, kept: list[Path]) -> None:
    """Say on stderr where the evidence went and which warning gate found something."""
    import sys

    from contracts.evidence import Verdict

    for gate in evidence.record.gates:
        if gate.verdict is Verdict.WARN:
            print(f"stack evalmatrix: warning: {gate.id}: {gate.message}", file=sys.stderr)
    overlap = evidence.record.metrics["overlap"]
    assert isinstance(overlap, dict)
    if overlap["by_id"] or overlap["by_text"]:
        print(
            f"stack evalmatrix: warning: {len(overlap['by_id']) + len(overlap['by_text'])} held-out item(s) "
            f"are also training items (by id: {', '.join(overlap['by_id']) or 'none'}; by prompt text: "
            f"{', '.join(overlap['by_text']) or 'none'}): their scores are not held out, and few-shot "
            "examples may show them",
            file=sys.stderr,
        )
    for where in kept:
        print(f"stack evalmatrix: evidence in {where}", file=sys.stderr)
