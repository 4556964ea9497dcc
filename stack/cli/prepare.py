"""`stack prepare`: tokenize files into verified shards, a document index and a manifest.

    stack prepare INPUT... --out DATA_DIR [--tokenizer byte|bpe|hf:DIR|RUN_DIR] [--source NAME] ...
    stack prepare stories.txt --doc-sep '<|endoftext|>' --out DATA_DIR   # many documents per file
    stack prepare shards/ --glob '*.parquet' --out DATA_DIR             # JSONL and Parquet by suffix
    stack prepare --default --out DATA_DIR          # the interpreter's standard library
    stack prepare --verify --out DATA_DIR [--seq-len T --batch-size B]   # check, write nothing
    stack prepare chats.jsonl --format chat --out DATA_DIR [--template FILE] [--pack-len T]  # SFT

Formats, determinism and every error message are described in docs/data.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput
from stack.cli import values
from stack.cli.inputs import check_inputs
from stack.data.defaults import (
    DEFAULT_BPE_VOCAB,
    DEFAULT_DOC_BYTES,
    DEFAULT_SHARD_TOKENS,
    DEFAULT_SOURCE,
    DEFAULT_TEXT_FIELD,
    DEFAULT_VAL_FRACTION,
    HELDOUT_DOCUMENTS,
)
from stack.data.doc_size import off_share, wanted_documents
from stack.data.filters.settings import dedup_flags
from stack.data.tokenizer import TOKENIZER_NAMES, Tokenizer
from stack.data.working_set import DEFAULT_BPE_SAMPLE, DEFAULT_WORKING_SET, format_size, parse_size

if TYPE_CHECKING:
    from stack.data.manifest import Manifest, SftEntry

RECORD_KIND = "prepare"  # the run kind of its evidence record (spec/run_kinds.yaml)
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
# Options only a corpus's shards and reading take: a fine-tuning --format refuses them typed at all,
# even at their defaults, since its record states them as none (`_read_config`).
CORPUS_ONLY = ("shard_tokens", "doc_bytes", "bpe_sample")


def separator(text: str) -> str:
    """A --doc-sep value: literal text in which \\n, \\r, \\t and \\\\ stand for what they do in Python."""
    unknown = [m[1] for m in re.finditer(r"\\(.?)", text) if m[1] not in ESCAPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r} has the escape \\{unknown[0]}; only \\n, \\r, \\t and \\\\ are known "
            "(write \\\\ for a backslash)"
        )
    return re.sub(r"\\(.)", lambda m: ESCAPES[m[1]], text)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack prepare` and its options."""
    parser = sub.add_parser(
        "prepare",
        help="tokenize a corpus into shards and a manifest",
        description="Tokenize files into token shards, a document index and manifest.json under DATA_DIR.",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="file or directory, read recursively; NAME=PATH puts PATH in source NAME",
    )
    parser.add_argument(
        "--out", required=True, type=values.utf8_path, metavar="DATA_DIR", help="directory to write"
    )
    parser.add_argument(
        "--tokenizer",
        default="byte",
        metavar="byte|bpe|hf:DIR|RUN_DIR",
        help="byte (default), bpe trained on the corpus, hf:DIR: the tokenizer.json of a local "
        "Hugging Face model directory, or RUN_DIR: the tokenizer a model carries (a run, checkpoint, "
        "surgery, merge, import or export directory; or a DATA_DIR's), to fine-tune that model",
    )
    parser.add_argument(
        "--vocab-size",
        type=values.positive_int,
        help=f"bpe vocabulary, separator included (default {DEFAULT_BPE_VOCAB})",
    )
    parser.add_argument("--glob", help="only files whose path below an input matches, e.g. '*.py'")
    parser.add_argument(
        "--val-fraction",
        type=float,
        help=f"share of documents held out, chosen by content hash (default {DEFAULT_VAL_FRACTION}; for "
        "--format chat|prompt-completion|prefs the share that holds GATE-EVAL-001's "
        "wanted_heldout_examples, at most its max_val_fraction)",
    )
    parser.add_argument(
        "--seed", type=values.seed, default=0, help="seed of the train/held-out draw (default 0)"
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"source of INPUTs given without NAME= (default {DEFAULT_SOURCE})",
    )
    parser.add_argument(
        "--default", action="store_true", help="add the standard library's .py files as source 'stdlib'"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace what an earlier prepare wrote in DATA_DIR (only that)"
    )
    parser.add_argument(
        "--dtype", choices=("auto", "uint16", "uint32"), default="auto", help="shard token type"
    )
    parser.add_argument(
        "--shard-tokens",
        action=values.NoteGiven,
        type=values.positive_int,
        default=DEFAULT_SHARD_TOKENS,
        help="tokens per shard, about",
    )
    parser.add_argument(
        "--format",
        choices=("auto", "text", "jsonl", "parquet", "csv", "chat", "prompt-completion", "prefs"),
        default="auto",
        help="how input files are read (default auto: .jsonl/.ndjson are JSONL, .parquet Parquet, "
        ".csv/.tsv with the text column CSV, the rest text); chat and prompt-completion read JSONL or "
        "Parquet fine-tuning examples (docs/finetuning.md), prefs JSONL or Parquet preference pairs for "
        "`stack dpo` (docs/preferences.md)",
    )
    parser.add_argument(
        "--template",
        metavar="NAME|FILE",
        help="with --format chat|prompt-completion|prefs: a shipped chat template by name, or a YAML file "
        "(default: the model's own when --tokenizer names a model that ships one, else chat, "
        "stack/data/templates/chat.yaml)",
    )
    parser.add_argument(
        "--join",
        choices=("concatenate", "chat-turns"),
        help="with --format prompt-completion: concatenate (default, as TRL joins them: the prompt, then "
        "the completion and EOS supervised) or chat-turns (the prompt as the user's turn, the completion "
        "as the assistant's, rendered by --template)",
    )
    parser.add_argument(
        "--pack-len",
        type=values.positive_int,
        metavar="T",
        help="with --format chat|prompt-completion: tokens per packed window, at most the model's ctx; "
        "with --format prefs: tokens per sequence (a pair's window holds two), at most ctx + 1 "
        "(default: with --tokenizer RUN, the shortest that admits every example the model reads; else 128)",
    )
    parser.add_argument(
        "--doc-sep",
        type=separator,
        metavar="SEP",
        help="text files hold many documents separated by SEP, e.g. '<|endoftext|>', or '\\n\\n' for "
        "blank lines (default: one file is one document)",
    )
    parser.add_argument(
        "--doc-bytes",
        action=values.NoteGiven,
        type=parse_size,
        metavar="SIZE",
        help="text files read without --doc-sep are cut into documents of at most SIZE, at line ends "
        f"(default {format_size(DEFAULT_DOC_BYTES)}, or finer where a corpus of text files would make too "
        "few documents for --val-fraction to be a share of its text)",
    )
    parser.add_argument(
        "--text-field",
        "--text-column",
        action="append",
        default=[],
        metavar="NAME|SOURCE=NAME",
        help="JSONL field, Parquet or CSV column that holds a document's text (default "
        f"{DEFAULT_TEXT_FIELD}); SOURCE=NAME names it for one source alone, e.g. code=content",
    )
    parser.add_argument(
        "--source-field",
        "--source-column",
        metavar="NAME",
        help="JSONL field or Parquet column that names each document's source (default: the input's)",
    )
    parser.add_argument(
        "--working-set",
        type=parse_size,
        default=DEFAULT_WORKING_SET,
        metavar="SIZE",
        help="memory for reading and tokenizing, e.g. 1G; changes speed, never the data "
        f"(default {format_size(DEFAULT_WORKING_SET)})",
    )
    parser.add_argument(
        "--bpe-sample",
        action=values.NoteGiven,
        type=parse_size,
        default=DEFAULT_BPE_SAMPLE,
        metavar="SIZE",
        help=f"bpe trains on a seeded sample of this much text (default {format_size(DEFAULT_BPE_SAMPLE)})",
    )
    parser.add_argument(
        "--workers",
        type=values.positive_int,
        metavar="N",
        help="worker processes the files are shared out to; never changes what is written "
        "(default: one per core for a corpus of many files, see docs/data.md#speed)",
    )
    add_filter_options(parser)
    parser.add_argument("--verify", action="store_true", help="check an existing DATA_DIR and exit")
    parser.add_argument(
        "--seq-len",
        type=values.positive_int,
        help="with --verify: also check the data can feed windows of this length",
    )
    parser.add_argument(
        "--batch-size", type=values.positive_int, default=1, help="with --verify --seq-len (default 1)"
    )
    parser.set_defaults(func=run)


def tokenizer_option(value: str) -> str | Tokenizer:
    """A --tokenizer value: a name or hf:DIR as it is, or the tokenizer of the model directory named.

    The names win: a directory called `bpe` is given as `./bpe`.
    """
    from stack.data.pretrained import directory_of

    if value in TOKENIZER_NAMES or directory_of(value) is not None or not Path(value).is_dir():
        return value  # stack.data.pretrained.given_tokenizer refuses what is none of these
    from stack.export.hf_tokenizer import model_tokenizer

    return model_tokenizer(Path(value))


def _prepare_sft(args: argparse.Namespace) -> Manifest:
    """`--format chat|prompt-completion|prefs`: fine-tuning examples or preference pairs
    (stack.data.sft_prepare, stack.data.prefs_rows)."""
    from stack.data.sft_prepare import prepare_sft

    options = ("default", "doc_sep", "glob", "seq_len", "workers", "text_field", "source_field")
    given = [
        f"--{name.replace('_', '-')}" for name in options if getattr(args, name) not in (None, False, [])
    ]
    # What a corpus's shards and reading take, which a fine-tuning set never uses (its record states
    # them as none: `_read_config`), typed at all, even at its default; and a shard dtype other than auto.
    given += [f"--{name.replace('_', '-')}" for name in CORPUS_ONLY if name in values.given(args)] + (
        ["--dtype"] if args.dtype != "auto" else []
    )
    if given:
        raise BadInput(
            f"--format {args.format} reads the JSONL or Parquet files given as INPUT, whose fields it "
            f"knows; drop {' and '.join(given)}"
        )
    check_inputs("prepare", args)
    waivers = _waivers(args)
    pack_len, context = _pack_len(args)
    manifest = _recorded(
        args.argv,
        args.evidence_dir,
        _record_config(args, waivers, pack_len),
        lambda: prepare_sft(
            args.inputs,
            args.out,
            fmt=args.format,
            template=args.template,
            join=args.join,
            pack_len=pack_len,
            tokenizer=tokenizer_option(args.tokenizer),
            vocab_size=args.vocab_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
            source=args.source,
            force=args.force,
            filters=args.filter,
            filter_settings=args.filters,
            no_filter=waivers,
            context=context,
            model_template=_model_template(args),
        ),
    )
    for line in _chosen_lines(args, manifest, context):
        print(line, file=sys.stderr)
    return manifest


def _model_template(args: argparse.Namespace) -> str | None:
    """The chat template of the model `--tokenizer` names (hf:DIR or RUN_DIR), when it ships one:
    it renders the examples unless --template names another (stack.data.chat_render)."""
    from stack.data.pretrained import directory_of
    from stack.export.hf_tokenizer import model_chat_template, read_chat_template

    if args.tokenizer in TOKENIZER_NAMES:
        return None
    directory = directory_of(args.tokenizer)
    if directory is not None:
        return read_chat_template(directory)
    return model_chat_template(Path(args.tokenizer)) if Path(args.tokenizer).is_dir() else None


def _data_model(args: argparse.Namespace) -> tuple[Path | None, int | None]:
    """The model the data is for, the one whose tokenizer `--tokenizer RUN_DIR` takes, and its
    context: None for each when the tokenizer names no model."""
    from stack.data.pretrained import directory_of
    from stack.export.hf_tokenizer import model_context

    given = args.tokenizer not in TOKENIZER_NAMES
    model = directory_of(args.tokenizer) or Path(args.tokenizer) if given else None
    return model, None if model is None else model_context(model)


def _admitting(args: argparse.Namespace, longest: int) -> str:
    """The --pack-len that would admit an example of `longest` tokens, within the data's model."""
    from stack.data.sft_prepare import admitting, most_pack_len

    ctx = _data_model(args)[1]
    return admitting(longest, None if ctx is None else most_pack_len(args.format, ctx))


def _pack_len(args: argparse.Namespace) -> tuple[int, int | None]:
    """--pack-len, checked before any work against the model the data is for (_data_model): longer
    is refused. Unset, it is None where that model is known: the examples then choose it, up to the
    model's context (stack.data.sft_prepare.fitted_pack_len); else DEFAULT_PACK_LEN. With it, that
    model's context."""
    from stack.data.sft_prepare import DEFAULT_PACK_LEN, most_pack_len

    model, ctx = _data_model(args)
    if ctx is None:
        return args.pack_len or DEFAULT_PACK_LEN, None
    most = most_pack_len(args.format, ctx)
    if args.pack_len is not None and args.pack_len > most:
        raise BadInput(
            f"--pack-len {args.pack_len} is longer than {model} reads (context {ctx}: at most {most}); "
            f"give at most {most}"
        )
    return args.pack_len, ctx


def _row_pack_len(manifest: Manifest) -> int:
    """A fine-tuning DATA_DIR's --pack-len: its windows' length, a pair's row's for preference pairs."""
    from contracts.packing import PAIR_ROWS
    from stack.data.sft_prepare import PREFS_FORMAT

    assert manifest.sft is not None
    return manifest.sft.pack_len // (PAIR_ROWS if manifest.sft.format == PREFS_FORMAT else 1)


def _chosen_lines(args: argparse.Namespace, manifest: Manifest, context: int | None) -> list[str]:
    """What a fine-tuning prepare chose for the options left at their defaults, and why: the pack
    length the examples needed within the model's context, and the held-out share the held-out
    loss's estimate needs within its cap (GATE-EVAL-001's wanted_heldout_examples, max_val_fraction)."""
    from contracts.spec import load_spec

    assert manifest.sft is not None
    lines = []
    if args.pack_len is None and context is not None:
        lines.append(
            f"stack prepare: note: --pack-len {_row_pack_len(manifest)}, the shortest that admits "
            f"every example {args.tokenizer} reads (its context is {context})"
        )
    if args.val_fraction is None:
        spec = load_spec()
        wanted = int(spec.threshold("GATE-EVAL-001", "wanted_heldout_examples"))
        cap = spec.threshold("GATE-EVAL-001", "max_val_fraction")
        held, total = manifest.sft.examples["heldout"], sum(manifest.sft.examples.values())
        aim = f"the {wanted} held-out examples GATE-EVAL-001 aims at (wanted_heldout_examples)"
        why = aim if manifest.val_fraction < cap else f"capped by max_val_fraction short of {aim}"
        why += (
            "; `stack sft` and `stack dpo` measure at each evaluation whether their loss is precise "
            "enough for early stopping, and turn it off if not"
        )
        lines.append(
            f"stack prepare: note: --val-fraction {manifest.val_fraction:g} held out {held} of {total} "
            f"examples: {why}"
        )
    return lines


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """The document filters, their settings and waivers, and where the evidence record goes."""
    parser.add_argument(
        "--filter",
        action="append",
        type=values.utf8_text,
        metavar="NAME",
        help="run this filter (repeatable); the filters named replace the default list: leak, oversize, "
        "encoding, diversity, script, dedup (default: leak, oversize, encoding, diversity, script; see "
        "docs/data.md#filters)",
    )
    parser.add_argument(
        "--filters",
        type=values.utf8_path,
        metavar="FILE",
        help="YAML filter settings over the built-in ones (stack/data/filters/defaults.yaml)",
    )
    parser.add_argument(
        "--no-filter",
        action="append",
        type=values.utf8_text,
        default=[],
        metavar="SOURCE",
        help="leave SOURCE unfiltered; needs a --reason, recorded in the manifest (repeatable, in pairs)",
    )
    parser.add_argument(
        "--reason",
        action="append",
        type=values.utf8_text,
        default=[],
        metavar="TEXT",
        help="why the --no-filter SOURCE before it needs no filtering",
    )
    parser.add_argument(
        "--evidence-dir",
        type=values.utf8_path,
        metavar="LEDGER",
        help="also file a `prepare` evidence record (the filter gates' verdicts) as LEDGER/<run-id>/",
    )


def _waivers(args: argparse.Namespace) -> dict[str, str]:
    """--no-filter SOURCE --reason TEXT pairs, in order; unpaired or repeated ones are BadInput."""
    if len(args.no_filter) != len(args.reason):
        raise BadInput(
            f"{len(args.no_filter)} --no-filter and {len(args.reason)} --reason: give each "
            '--no-filter SOURCE its own --reason "why it needs no filtering"'
        )
    if len(set(args.no_filter)) != len(args.no_filter):
        raise BadInput("a source is named twice by --no-filter; give each source once")
    return dict(zip(args.no_filter, args.reason, strict=True))


def _record_config(
    args: argparse.Namespace, waivers: dict[str, str], pack_len: int | None = None
) -> dict[str, object]:
    """What the evidence record keeps of the request: inputs (as `name_text` writes a name that is not
    UTF-8, as the record's command line does), tokenizer, the resolved filter settings, the seed
    and val_fraction handed to the split (every prepare path draws it with these two), and
    every other option that selects or shapes what enters DATA_DIR, by its option's name:
    a corpus's read settings (`_read_config`), a fine-tuning set's format, template, join and
    pack_len (`pack_len`: the one used, default or cut to the model's context), the tokenizer's
    vocab_size and the source of INPUTs without NAME=. An option the path does not use is None.
    The checker holds each to the command line (tools/integrity/settings/argv_record.STATED_OPTIONS) and to
    the manifest the prepare wrote (contracts.derive.prepare.prepare_record)."""
    from stack.data.corpus import name_text
    from stack.data.filters.settings import load_settings
    from stack.data.sft_prepare import JOINS, PROMPT_COMPLETION, SFT_FORMATS

    sft = args.format in SFT_FORMATS
    joined = args.join or JOINS[0] if args.format == PROMPT_COMPLETION else args.join
    return {
        "inputs": [name_text(item) for item in args.inputs] + (["--default"] if args.default else []),
        "out": str(args.out),
        "tokenizer": args.tokenizer,
        "filters": args.filter,
        "filter_settings": load_settings(args.filters).model_dump(),
        "waivers": waivers,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "format": args.format,
        "vocab_size": args.vocab_size,
        "source": args.source,
        "template": args.template,
        "join": joined,
        "pack_len": pack_len if sft else None,
        **_read_config(args, sft),
    }


def _read_config(args: argparse.Namespace, sft: bool) -> dict[str, object]:
    """A corpus's read settings as asked, the keys of the manifest's `reading` (stack.data.manifest
    .ReadSettings): --glob, --doc-sep, --doc-bytes, --text-field, --source-field, --dtype,
    --shard-tokens, --bpe-sample. A fine-tuning set refuses the first, third and fourth of them and
    uses none of the others but its automatic dtype: each is None there but dtype, "auto"."""
    corpus = {
        "glob": args.glob,
        "doc_sep": args.doc_sep,
        "doc_bytes": args.doc_bytes,
        "text_field": args.text_field,
        "source_field": args.source_field,
        "dtype": args.dtype,
        "shard_tokens": args.shard_tokens,
        "bpe_sample": args.bpe_sample,
    }
    return {key: (value if not sft or key == "dtype" else None) for key, value in corpus.items()}


def _recorded(
    argv: list[str], ledger_dir: Path | None, settings: dict[str, Any], work: Callable[[], Manifest]
) -> Manifest:
    """Run `work` (a prepare) and, with --evidence-dir LEDGER, file its evidence record there.

    The prepare runs with the record's ledger active, so the filter gates (GATE-DATA-012..014,
    stack.data.filters.gates) land in it; a gate that fires leaves the record halted and it is
    filed all the same. The record keeps the manifest's sha256, the per-source drop report
    (`metrics.filters`) and the resolved filter settings, so the site reads the drops from the
    record alone; a copy of the DATA_DIR's manifest.json is filed beside
    it, the raw per-source reports the integrity check re-derives `metrics.filters`, the totals
    and GATE-DATA-013/014's values from (contracts.derive.reports). Without a ledger the gates
    still run and still stop the prepare; nothing is filed. An INPUT whose name is not UTF-8 is
    kept in the command line and its place as `name_text` writes it, which JSON can hold.
    """
    if ledger_dir is None:
        return work()
    from contracts.errors import GateViolation
    from contracts.evidence import DataRef, RunStatus, canonical_sha256
    from stack.data.corpus import name_text
    from stack.data.manifest import MANIFEST_FILE
    from stack.eval.evidence import CommandEvidence

    evidence = CommandEvidence(RECORD_KIND, argv, "cpu", ledger_dir)
    record = evidence.record
    record.run.argv = [name_text(word) for word in argv]
    record.run.places = {name_text(word): name_text(at) for word, at in (record.run.places or {}).items()}
    record.config, record.config_sha256 = settings, canonical_sha256(settings)
    try:
        with evidence.judging():
            manifest = work()
    except GateViolation:
        evidence.file()
        raise
    # What the data chose where left unset: a fine-tuning set's pack length and share, a corpus's cut.
    if manifest.sft is not None:
        chosen = {"pack_len": _row_pack_len(manifest), "val_fraction": manifest.val_fraction}
    else:
        chosen = {"doc_bytes": manifest.reading.doc_bytes if manifest.reading is not None else None}
    settings = {**settings, **{key: chosen[key] for key in chosen if settings.get(key) is None}}
    record.config, record.config_sha256 = settings, canonical_sha256(settings)
    record.data = DataRef(manifest_sha256=manifest.sha256, tokenizer_sha256=manifest.tokenizer.sha256)
    record.metrics["filters"] = {name: report.model_dump() for name, report in manifest.filters.items()}
    record.metrics["totals"] = {split: totals.model_dump() for split, totals in manifest.totals.items()}
    evidence.settle(RunStatus.COMPLETED)
    filed = evidence.file((Path(str(settings["out"])) / MANIFEST_FILE,))  # `out`: the DATA_DIR written
    print(f"stack prepare: evidence in {filed}", file=sys.stderr)
    return manifest


def _repeat_unit(manifest: Manifest) -> str:
    """What a repeat is counted in: kept, not skipped (the count stood among the skips and read as
    dropped; dedup is no default filter, and a fine-tuning set keeps repeated examples)."""
    return "example(s)" if manifest.sft is not None else "document(s)"


def _units(manifest: Manifest, split: str) -> str:
    """What a split holds, as the user counts it: a fine-tuning set's examples (its shards count
    packed streams, not examples), a corpus's documents."""
    if manifest.sft is not None:
        return f"{manifest.sft.examples[split]:,} examples"
    return f"{manifest.totals[split].documents:,} documents"


def run(args: argparse.Namespace) -> int:
    """Prepare (or verify) DATA_DIR and print what it holds."""
    started = time.perf_counter()
    if args.val_fraction is None and args.format not in ("chat", "prompt-completion", "prefs"):
        args.val_fraction = DEFAULT_VAL_FRACTION  # fine-tuning data's is chosen from its examples
    if args.verify:
        if args.inputs or args.default:
            raise BadInput("--verify checks an existing DATA_DIR; give it no INPUT and no --default")
        if args.filter or args.filters or args.no_filter or args.reason or args.evidence_dir or args.workers:
            raise BadInput(
                "--filter, --filters, --no-filter, --reason, --evidence-dir and --workers go with preparing"
            )
        check_inputs("prepare", args)
        from stack.data.verify import verify_data_dir

        manifest = verify_data_dir(args.out, args.batch_size, args.seq_len)
        verb = "verified"
    elif args.format in ("chat", "prompt-completion", "prefs"):
        manifest = _prepare_sft(args)
        verb = "prepared"
    else:
        if args.template is not None or args.pack_len is not None or args.join is not None:
            raise BadInput(
                "--template, --pack-len and --join go with --format chat, prompt-completion or prefs"
            )
        if args.seq_len is not None:
            raise BadInput("--seq-len and --batch-size go with --verify")
        check_inputs("prepare", args)
        from stack.data.formats import Layout, TextFields
        from stack.data.prepare import prepare_corpus

        waivers = _waivers(args)
        manifest = _recorded(
            args.argv,
            args.evidence_dir,
            _record_config(args, waivers),
            lambda: prepare_corpus(
                args.inputs,
                args.out,
                tokenizer=tokenizer_option(args.tokenizer),
                vocab_size=args.vocab_size,
                glob=args.glob,
                val_fraction=args.val_fraction,
                seed=args.seed,
                source=args.source,
                default=args.default,
                force=args.force,
                dtype=args.dtype,
                shard_tokens=args.shard_tokens,
                layout=Layout(
                    args.format,
                    args.doc_sep,
                    TextFields.parse(args.text_field),
                    args.source_field,
                    args.doc_bytes,
                ),
                working_set=args.working_set,
                bpe_sample=args.bpe_sample,
                progress=sys.stderr.isatty(),
                filters=args.filter,
                filter_settings=args.filters,
                no_filter=waivers,
                workers=args.workers,
            ),
        )
        verb = "prepared"
    train, heldout = manifest.totals["train"], manifest.totals["heldout"]
    skipped = {
        key: sum(getattr(stats, key) for stats in manifest.sources.values())
        for key in ("binary_skipped", "empty_skipped", "invalid_utf8_files", "missing_field_skipped")
    }
    missing = skipped["missing_field_skipped"]
    print(
        f"{verb} {args.out}: {manifest.tokenizer.name} tokenizer (vocab {manifest.tokenizer.vocab_size}, "
        f"{manifest.dtype}), sources {', '.join(manifest.sources)}\n"
        f"  train {train.tokens:,} tokens in {_units(manifest, 'train')}; "
        f"held-out {heldout.tokens:,} tokens in {_units(manifest, 'heldout')}; "
        f"{len(manifest.shards)} shard(s)\n"
        f"  skipped {skipped['binary_skipped']} binary and {skipped['empty_skipped']} empty file(s) or "
        f"record(s){f' and {missing} record(s) without the text field' if missing else ''}; "
        f"{skipped['invalid_utf8_files']} file(s) had invalid UTF-8 (replaced with U+FFFD); "
        f"kept {manifest.duplicate_documents} {_repeat_unit(manifest)} that repeat an earlier one\n"
        f"  manifest sha256 {manifest.sha256} ({time.perf_counter() - started:.1f} s)"
    )
    documents, cuttable = sum(s.documents for s in manifest.sources.values()), _cuttable(manifest)
    told = off_share(heldout.tokens, train.tokens + heldout.tokens, manifest.val_fraction, documents)
    if heldout.tokens == 0 and manifest.val_fraction > 0:
        print(_empty_heldout_line(documents, manifest.val_fraction, cuttable))
    elif told:
        share = heldout.tokens / (train.tokens + heldout.tokens)
        print(_off_share_line(share, documents, manifest.val_fraction, cuttable))
    if heldout.tokens and (line := _short_heldout_line(args.out, manifest, told)):
        print(line)
    if manifest.sft is not None:
        print(_template_line(args, manifest.sft))
    if manifest.sft is not None and manifest.sft.dropped:
        left = ", ".join(f"{rule} {n}" for rule, n in manifest.sft.dropped.items())
        longest = manifest.sft.longest_dropped
        admits = f" (the longest needs {longest} tokens: {_admitting(args, longest)})" if longest else ""
        lost, kept = sum(manifest.sft.dropped.values()), sum(manifest.sft.examples.values())
        share = 100.0 * lost / (lost + kept)
        said = f"left out {lost} of {lost + kept} example(s) ({share:.1f}%), apart from the filters"
        print(f"  warning: {said}: {left}{admits}")
        for rule, first in manifest.sft.first_dropped.items():
            print(f"    the first {rule}: {first}")
    if manifest.normalised:
        marks = sum(n.byte_order_marks for n in manifest.normalised.values())
        crlf = sum(n.crlf_files for n in manifest.normalised.values())
        print(
            f"  read as saved: {marks} file(s) began with a UTF-8 byte-order mark (dropped), "
            f"{crlf} had CRLF line ends (read as LF)"
        )
    if manifest.filters:
        from stack.data.filters.report import drop_lines, drop_warnings

        reports = {name: report.model_dump() for name, report in manifest.filters.items()}
        print("\n".join(["  filters, per source:", *drop_lines(reports), *drop_warnings(reports)]))
        for line in _unrenderable_lines(reports):
            print(line)
    return 0


def _cuttable(manifest: Manifest) -> bool:
    """Whether some of the corpus was read from text files whole, which --doc-bytes or --doc-sep can
    cut into more documents (a record of JSONL, Parquet or CSV is one document, never cut)."""
    from stack.data.accounting import TEXT_FILES

    return any(TEXT_FILES in account.input_bytes for account in manifest.accounting.values())


def _empty_heldout_line(documents: int, val_fraction: float, cuttable: bool) -> str:
    """The warning for a held-out split no document landed in, with the fix that can move it: a
    document is never divided between the splits, so one document read from a text file needs
    cutting into several (--doc-bytes or --doc-sep), where a larger --val-fraction could at best
    take the only one from train; a few need the same, or more records where they are records (a
    larger fraction would hold out a share of a few documents, any share of the text:
    stack.data.doc_size); only many can take a larger fraction."""
    if documents == 1 and cuttable:
        fix = (
            "cut the text into documents with --doc-bytes SIZE (e.g. --doc-bytes 1K) or --doc-sep SEP, "
            "or add documents (a larger --val-fraction cannot split one document)"
        )
    elif documents < wanted_documents(val_fraction):
        return (
            f"  warning: the held-out split is empty: none of the {documents:,} documents landed in it, and "
            f"`stack train` scores held-out text; {_more_documents(documents, val_fraction, cuttable)}"
        )
    else:
        fix = "raise --val-fraction or add documents"
    return (
        f"  warning: the held-out split is empty: none of the {documents:,} document(s) landed in it at "
        f"--val-fraction {val_fraction}; `stack train` scores held-out text, so {fix}"
    )


def _off_share_line(share: float, documents: int, val_fraction: float, cuttable: bool) -> str:
    """The warning for a split of too few documents whose held-out share of the text is far from the
    one asked (stack.data.doc_size.off_share): correct, and not what the user asked for."""
    return (
        f"  warning: the held-out split holds {share:.2%} of the text; "
        f"{_more_documents(documents, val_fraction, cuttable)}"
    )


def _more_documents(documents: int, val_fraction: float, cuttable: bool) -> str:
    """The fix for a split of too few documents for --val-fraction to be a share of the text: cutting
    the text into more where it was read from text files whole, else more records."""
    wanted = wanted_documents(val_fraction)
    fix = (
        "cut the text into more documents (--doc-bytes SIZE, or --doc-sep SEP where it separates them) "
        "or add documents"
        if cuttable
        else "add documents (a record is one document, never cut)"
    )
    return (
        f"--val-fraction {val_fraction} is a share of whole documents, and {documents:,} "
        f"{'is' if documents == 1 else 'are'} too few for it to hold of the text as well (about "
        f"{wanted:,} would hold out {HELDOUT_DOCUMENTS}): {fix}"
    )


def _presets_short_of_heldout(data_dir: Path, manifest: Manifest) -> tuple[list[str], bool]:
    """The presets whose held-out set `stack train` (`sft`, `dpo`) `--preset NAME` would refuse
    before its first step: a split of no window, or a set that repeats windows (duplicated documents
    or examples), which GATE-EVAL-001 refuses; and whether any set is refused for its repeats (one of
    two distinct windows or more, too few for its batches). The set is drawn as the run draws it, in
    windows of the model's context or of fine-tuning data's pack length, the whole split where it
    is smaller."""
    from stack.data.heldout import heldout_set_outcome
    from stack.train.config import resolve
    from stack.train.presets import PRESETS

    short, repeats = [], False
    for name in PRESETS:
        config = resolve(name, None, [], vocab=manifest.tokenizer.vocab_size)
        window = config.model.ctx if manifest.sft is None else manifest.sft.pack_len
        try:
            held = heldout_set_outcome(data_dir, config.train.batch_size, window, config.eval.batches)
        except BadInput:
            short.append(name)
            continue
        if not held.ok:
            short.append(name)
            repeats = repeats or (held.measured or {}).get("distinct_windows", 0) >= 2
    return short, repeats


def _short_heldout_line(data_dir: Path, manifest: Manifest, few: bool = False) -> str | None:
    """The note for a held-out split too small for some presets' evaluation (None: for none). A
    document (an example) is held out whole, so a split of a few short ones can hold far less of the
    text than --val-fraction says of them (`few`: the warning above said so, and named the fix, more
    documents, which a larger fraction is not); a copy is held out with its first, so a split whose
    set is refused for its copies holds them at any --val-fraction, and dedup is the fix. The fix and
    the way to check one setting are named."""
    short, repeats = _presets_short_of_heldout(data_dir, manifest)
    if not short:
        return None
    train, heldout = manifest.totals["train"].tokens, manifest.totals["heldout"].tokens
    share = heldout / (train + heldout)
    if manifest.sft is None:
        units, more, window, command = "documents", "text", "CTX", "train"
    else:
        units, more, window = "examples", "examples", manifest.sft.pack_len
        command = "dpo" if manifest.sft.format == "prefs" else "sft"
    fix = f"more {units}, as the warning above says" if few else f"raise --val-fraction or add {more}"
    if repeats and manifest.duplicate_documents:
        fix = (
            f"a copy is held out with its first at any --val-fraction, and {manifest.duplicate_documents} "
            f"{_repeat_unit(manifest)} repeat an earlier one: prepare again with {dedup_flags()}, which "
            "keeps the first of each"
        )
    return (
        f"  note: the held-out split holds {heldout:,} tokens, {share:.2%} of the text (--val-fraction "
        f"{manifest.val_fraction} is a share of whole {units}): too few distinct windows for the "
        f"evaluation of --preset {', '.join(short)}, which `stack {command}` refuses; {fix}, or check "
        f"one setting with `stack prepare --verify --out {data_dir} --seq-len {window} --batch-size B`"
    )


def _template_line(args: argparse.Namespace, sft: SftEntry) -> str:
    """Which chat template rendered the examples, and, when the model `--tokenizer` names ships
    another, that training the model on them replaces its own (and how that is accepted)."""
    from stack.data.sft_prepare import PROMPT_COMPLETION

    if sft.format == PROMPT_COMPLETION and sft.chat_template is None:
        return "  chat template: none (prompt and completion joined as TRL joins them)"
    line = f"  chat template: {sft.template} (sha256 {sft.template_sha256[:12]})"
    shipped = _model_template(args) if args.template is not None else None
    if shipped is not None and shipped != sft.chat_template:
        line += (
            f"\n  note: {args.tokenizer} ships its own chat template, which --template {args.template} "
            "replaces: fine-tuning the model on this data is refused unless accepted on record with "
            '--set data.chat_template_change="why"; leave out --template to render with the model\'s own'
        )
    if sft.history_turns:
        every = sft.assistant_turns + sft.history_turns
        line += (
            f"\n  note: {sft.history_turns:,} of {every:,} assistant turns read as context, not trained: the "
            "template writes them otherwise once a later turn follows (as Qwen3's drops an earlier turn's "
            "reasoning); each example's later turns train as the model generates them"
        )
    return line


def _unrenderable_lines(reports: dict[str, dict[str, Any]]) -> list[str]:
    """A line for each source with records the chat template could not write, naming the first."""
    from stack.data.chat_shapes import UNRENDERABLE

    return [
        f"  warning: {name}: left out {report['dropped'][UNRENDERABLE]:,} record(s) the chat template "
        f"cannot write; the first: {report['examples'].get(UNRENDERABLE, '')}"
        for name, report in sorted(reports.items())
        if report["dropped"].get(UNRENDERABLE)
    ]
