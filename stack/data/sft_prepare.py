"""`stack prepare --format chat|prompt-completion`: supervised examples into packed, labelled shards.

Each JSONL record is rendered by the chat template into ids and a mask: `--template`'s
(stack.data.sft_template); else, when the tokenizer comes from a model that ships its own chat
template, that one (stack.data.chat_render); else the stack's default. A prompt-completion record,
by default, is joined as TRL joins it instead: prompt, then completion and EOS, supervised;
`join="chat-turns"` renders it as a user and an assistant turn. A record the template cannot write
(a tool call, for a template without them) is dropped as unrenderable into the filters' books, not
refused with the file. Each example is assigned to a split by the sha256 of its turns (as documents
are), and packed in input order, whole, into windows of `pack_len` tokens: an example that does not
fit the current window starts the next one, the rest of the window is padding (the EOS id,
unsupervised, example 0), and an example longer than `pack_len` is refused. Each split and source
becomes one token shard laid out as pretraining's (stack.data.shards), its windows back to back plus
one trailing padding token, so the reader's windows of `pack_len + 1` tokens with stride `pack_len`
are exactly the packed windows; and one label file beside it (`.labels`, the same 32-byte header
with magic GSLABELS, then a uint32 `example * 2 + supervised` per token), hashed in the manifest
like the shard. GATE-SFT-001 and GATE-SFT-002 are judged before anything is written.

Publishing reuses prepare's rules (stack.data.ownership): the lock, the staging directory, and
`--force` replacing only what an earlier prepare wrote.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from contracts.packing import PAIR_ROWS
from contracts.record_fields import FORMATS, record_texts
from contracts.spec import load_spec
from contracts.split import document_identity, example_identity
from stack.artifacts import INDEX_FILE
from stack.data import json_array, ownership
from stack.data import split as splitting
from stack.data.accounting import (
    TURNS,
    Books,
    Fields,
    FilesRead,
    check_accounts,
    check_fields,
    check_files_read,
)
from stack.data.chat_jinja import jinja_of, shipped_template
from stack.data.chat_render import (
    ModelTemplate,
    ModelTurn,
    model_example_text,
    model_texts,
    model_turns,
    named_tokens,
    render_model,
)
from stack.data.chat_shapes import (
    UNRENDERABLE,
    LeftOut,
    chat_messages,
    explicit_pair,
    message_text,
    prompt_completion_messages,
    record_tools,
    refuse_tools,
    turns_of,
)
from stack.data.corpus import InputFile, check_source_name, name_text
from stack.data.defaults import DEFAULT_BPE_VOCAB
from stack.data.filters.droplog import DROP_LOG_FILE, DropLog, recount
from stack.data.filters.gates import check_reports, open_filters
from stack.data.filters.report import empty_corpus
from stack.data.filters.runner import Counted, Doc, FilterRunner
from stack.data.filters.script import SourceLetters
from stack.data.json_array import array_elements
from stack.data.line_ends import reported, text_lines
from stack.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    ByteAccount,
    DataFile,
    FilterReport,
    LabelFile,
    Manifest,
    NormalisedInput,
    SftEntry,
    Shard,
    SourceStats,
    Split,
    SplitTotals,
    normalised_input,
    write_manifest,
)
from stack.data.parquet_records import is_parquet, parquet_records
from stack.data.prefs_rows import PREFS_FORMAT, pair_ids, pair_text, parse_pair, render_pair
from stack.data.prepare import UNPACKED_DIR, write_locked
from stack.data.pretrained import given_tokenizer, writes_tokenizer_file
from stack.data.record_input import holds_array
from stack.data.round_trips import RoundTrips, book_examples, check_round_trips
from stack.data.sft_gates import (
    check_boundary,
    check_markers,
    check_packing,
    check_rendering,
    check_supervision,
    check_turns,
    example_verdicts,
    pair_windows,
    stored_example_keys,
)
from stack.data.sft_template import (
    ChatTemplate,
    ExampleText,
    Rendered,
    TurnText,
    concatenated_text,
    example_text,
    load_template,
    render,
    render_concatenated,
    supervised_texts,
)
from stack.data.shards import HEADER, SHARD_VERSION, ShardWriter, dtype_for, naming
from stack.data.table_input import TAB_SUFFIXES, TABLE_SUFFIXES
from stack.data.tokenizer import ByteTokenizer, Tokenizer, train_bpe
from stack.data.tokenizer_record import data_tokenizer_entry
from stack.data.unpack import readable

SFT_FORMATS = ("chat", "prompt-completion", PREFS_FORMAT)
PROMPT_COMPLETION = "prompt-completion"
# How a prompt-completion record becomes one example: as TRL joins it (the default), or as a chat.
JOINS = ("concatenate", "chat-turns")
LABELS_MAGIC = b"GSLABELS"
LABELS_SUFFIX = ".labels"
LABEL_DTYPE = np.dtype("<u4")
DEFAULT_PACK_LEN = 128
# One shard per split and source: fine-tuning sets are small, and a window never spans shards.
SFT_SHARD_TOKENS = 1 << 62


@dataclass
class _Split:
    """The rendered examples of one split, in input order, each one's assistant turns as text
    (written from the template and the messages: what GATE-SFT-001 reads the packed turns against),
    and each one whole as text, from its messages alone (what GATE-SFT-001 reads every id of the
    packed example against); neither for preference pairs, whose rows are not assistant turns. And
    each one's key in the index (what GATE-SFT-001's check boundary finds a pair read at its mask among)."""

    examples: list[Rendered] = field(default_factory=list)
    texts: list[list[TurnText]] = field(default_factory=list)
    wholes: list[ExampleText] = field(default_factory=list)
    keys: set[int] = field(default_factory=set)


def most_pack_len(fmt: str, ctx: int) -> int:
    """The longest --pack-len a model of context `ctx` reads: a chat or prompt-completion window
    holds ctx tokens, a pair's row its context and the one token it predicts last."""
    return ctx + 1 if fmt == PREFS_FORMAT else ctx


def admitting(longest: int, most: int | None) -> str:
    """What would admit an example of `longest` tokens: that --pack-len, unless the model the data is
    for reads fewer (`most`, from most_pack_len, when --tokenizer names the model)."""
    if most is None or longest <= most:
        return f"--pack-len {longest} admits it"
    return f"no --pack-len admits it, the model reads at most {most}: shorten it, or take a longer context"


def labels_header(tokens: int, examples: int) -> bytes:
    """The 32-byte header of a label file."""
    return HEADER.pack(LABELS_MAGIC, SHARD_VERSION, LABEL_DTYPE.itemsize, tokens, examples)


def pack(examples: list[Rendered], pack_len: int, eos_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Tokens and labels of whole examples packed greedily into windows of `pack_len`, plus one
    trailing padding token; returns (tokens, labels, windows). An example's own padding positions
    (a pair's rows, stack.data.prefs_rows) are labelled as padding is: example 0, unsupervised."""
    tokens: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    used, windows = pack_len, 0  # `used` of the current window; pack_len forces a first window
    for number, example in enumerate(examples, start=1):
        if used + len(example.ids) > pack_len:
            if windows:
                tokens.append(np.full(pack_len - used, eos_id, dtype=np.int64))
                labels.append(np.zeros(pack_len - used, dtype=np.int64))
            used, windows = 0, windows + 1
        tokens.append(example.ids)
        numbered = number * 2 + example.mask.astype(np.int64)
        labels.append(numbered if example.padding is None else np.where(example.padding, 0, numbered))
        used += len(example.ids)
    tail = pack_len - used + 1  # pad the last window, then the one token its window reads past
    tokens.append(np.full(tail, eos_id, dtype=np.int64))
    labels.append(np.zeros(tail, dtype=np.int64))
    return np.concatenate(tokens), np.concatenate(labels), windows


def _tokenizer(spec: str | Tokenizer, vocab_size: int | None, texts: list[str]) -> Tokenizer:
    """A tokenizer given ready-made (hf:DIR, a model's), byte, or bpe trained on the examples' text."""
    given = given_tokenizer(spec, vocab_size)
    if given is not None:
        return given
    if spec == "byte":
        return ByteTokenizer()
    return train_bpe(texts, vocab_size or DEFAULT_BPE_VOCAB)


# What renders a prepare's examples: the stack's template (YAML), or the model's own (Jinja).
Renderer = ChatTemplate | ModelTemplate


@dataclass
class _Example:
    """One record as read: its turns (a pair's prompt, chosen, rejected), which the filters judge and
    its identity is hashed from; where it was read; and, for a model's own template, its assistant
    turns as that template writes them (stack.data.chat_render). And the record's text fields as the
    contracts declare them apart from the shape reader (contracts.record_fields), which its rendered
    text must hold (GATE-DATA-014's check `fields`); none for a preference pair, whose completions
    are the model's template's text when `templated` (stack.data.prefs_rows.Pair)."""

    turns: list[tuple[str, str]]
    where: str
    written: list[ModelTurn] | None = None
    said: list[tuple[str, str]] = field(default_factory=list)
    templated: bool = False
    # A text prompt-completion record under --join concatenate: prompt and completion joined as TRL
    # joins them, no template writing either.
    joined: bool = False


def _example(record: object, plan: SftPlan, renderer: Renderer, where: str) -> _Example:
    """One record's example, in the format's shapes (stack.data.chat_shapes); a record the renderer
    cannot write is LeftOut as unrenderable."""
    if plan.fmt == PREFS_FORMAT:
        pair = parse_pair(record, where, renderer)
        return _Example(pair.turns, where, templated=pair.templated)
    if plan.fmt == PROMPT_COMPLETION:
        messages = prompt_completion_messages(record, where)
    else:
        messages = chat_messages(record, where)
    if plan.join == "concatenate" and not conversational(record):  # joined as TRL joins text
        return _Example([(m["role"], m["content"]) for m in messages], where, joined=True)
    tools = record_tools(record, where)
    if isinstance(renderer, ModelTemplate):
        turns = [(str(m["role"]), message_text(m)) for m in messages]
        return _Example(turns, where, model_turns(renderer.offering(tools), messages, where))
    refuse_tools(tools, where)
    return _Example(turns_of(messages, tuple(renderer.spec.roles), where), where)


def conversational(record: object) -> bool:
    """Whether a prompt-completion record or a pair is in the conversational form, its prompt a list
    of chat messages: a chat, which the chat template renders, as TRL renders one."""
    return isinstance(record, dict) and isinstance(record.get("prompt"), list)


def turns_bytes(turns: Sequence[tuple[str, str]]) -> int:
    """The UTF-8 bytes of an example's turns, the unit of a fine-tuning prepare's books
    (stack.data.accounting)."""
    return sum(len(text.encode("utf-8")) for _, text in turns)


def _said(value: object) -> str:
    """What a prompt, completion or message says, as text: a string as it is, a message its text
    (message_text), a list of them joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return message_text(value)
    return "".join(map(_said, value)) if isinstance(value, list) else ""


def _unrendered_bytes(record: object, plan: SftPlan, where: str) -> int:
    """The UTF-8 bytes of what a record the renderer cannot write says (its messages' text, a pair's
    prompt, chosen and rejected), booked as read and dropped as unrenderable so GATE-DATA-014's books
    balance (stack.data.accounting). The record was parsed once already: where reading it again as
    its shape leaves it out once more (a pair whose prompt holds a ShareGPT tool turn), every text
    it holds is counted instead (`_strings`), the same on both sides of the books."""
    try:
        return _said_bytes(record, plan, where)
    except LeftOut:
        return sum(len(text.encode("utf-8")) for text in _strings(record))


def _strings(value: object) -> Iterator[str]:
    """Every string a JSON value holds, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def _said_bytes(record: object, plan: SftPlan, where: str) -> int:
    """`_unrendered_bytes` read by the record's shape (a ShareGPT record's turns are its values, read
    as they stand: its tool turns are no messages; an OpenAI preference line's its input messages
    and outputs, whatever tools it offers)."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    given = record.get("input") if isinstance(record, dict) else None
    if plan.fmt == PREFS_FORMAT and isinstance(given, dict):  # OpenAI's line, which may offer tools
        outputs = [record.get(key) for key in ("preferred_output", "non_preferred_output")]
        parts: list[object] = [given.get("messages"), *outputs]
    elif plan.fmt == PREFS_FORMAT:
        pair = explicit_pair(record, where)
        parts = [pair["prompt"], pair["chosen"], pair["rejected"]]
    elif plan.fmt == PROMPT_COMPLETION:
        parts = [record["prompt"], record["completion"]] if isinstance(record, dict) else []
    elif isinstance(turns, list):
        parts = [turn.get("value") for turn in turns if isinstance(turn, dict)]
    else:
        parts = list(chat_messages(record, where))
    return sum(len(_said(part).encode("utf-8")) for part in parts)


def _read_examples(
    plan: SftPlan, renderer: Renderer, scratch: Path, dropped: Dropped
) -> tuple[list[_Example], Counter[str]]:
    """Every record's example (`_example`) in file order, each where it was read (file:line,
    file[element] in a JSON array, or file row N of Parquet) and its turns' bytes booked as read
    (stack.data.accounting);
    blank lines are skipped, and a byte-order mark or CRLF line ends counted (stack.data.line_ends).
    A record with nothing to learn from is left out into `dropped` (stack.data.chat_shapes.LeftOut);
    one the renderer cannot write is dropped as unrenderable into the filters' books (the drop log
    and the source's report, where GATE-DATA-014 counts it and GATE-DATA-015 weighs its share) and
    its bytes booked as read and dropped (`_unrendered_bytes`), the records it can write kept. A
    compressed file, or one in UTF-16 or UTF-32 with a byte-order mark, is read through a UTF-8 copy
    in `scratch` (stack.data.unpack), as pretraining text is."""
    examples, counts = [], Counter[str]()
    for number, given in enumerate(plan.files):
        if given.is_dir():
            # a Hub dataset's directory holds Parquet shards (train-00000-of-00002.parquet, ...)
            shards = any(given.glob("*.parquet")) and not any(given.glob("*.jsonl"))
            raise BadInput(
                f"{given} is a directory; name its files (`{given}/*.{'parquet' if shards else 'jsonl'}`): "
                f"{plan.fmt} data is read from the JSONL or Parquet files given"
            )
        if not given.is_file():
            raise BadInput(f"{given} is not a file; give JSONL or Parquet files of {plan.fmt} records")
        counts["files"] += 1
        refuse_table(given, plan.fmt)
        parquet = is_parquet(given)
        path = given if parquet else readable(InputFile("main", given, given.name), scratch, number).path
        for at, record in _records(path, given, plan.fmt, counts, parquet):
            where = f"{name_text(given.name)}{at}"
            try:
                examples.append(_example(record, plan, renderer, f"{given}{at}"))
                examples[-1].where = where
                examples[-1].said = record_texts(record, plan.fmt) if plan.fmt in FORMATS else []
            except LeftOut as out:
                if out.rule != UNRENDERABLE:
                    dropped.add(out.rule, f"{where}: {out.reason}")
                    continue
                sha = document_identity(
                    json.dumps(record, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
                )
                # The books' example of the rule is its first record with the whole reason and fix.
                plan.filters.report(plan.source).examples.setdefault(UNRENDERABLE, f"{where}: {out.reason}")
                plan.filters.count(plan.source, UNRENDERABLE, sha, Counted(where, out.reason))
                size = _unrendered_bytes(record, plan, f"{given}{at}")
                dropped.books.read(plan.source, TURNS, size)
                dropped.books.document(plan.source, UNRENDERABLE, size)
                continue
            dropped.books.read(plan.source, TURNS, turns_bytes(examples[-1].turns))
            if plan.fmt in (PREFS_FORMAT, PROMPT_COMPLETION):
                counts["chat_prompts"] += conversational(record)
        dropped.files.ended(name_text(given.name), below=False)  # an input itself: no --glob applies
    return examples, counts


# One record of each fine-tuning format, as a line of its JSONL file reads (stack.data.chat_shapes).
JSONL_EXAMPLES = {
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    "prompt-completion": '{"prompt": "What is 2+2?", "completion": " 4"}',
    PREFS_FORMAT: '{"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5"}',
}


def refuse_table(given: Path, fmt: str) -> None:
    """A CSV/TSV table given to a fine-tuning format, refused by what it is before its bytes are
    misread as JSON lines ("not JSON"): the fine-tuning formats read JSONL, a JSON array or Parquet,
    whose records have nested messages a flat table cannot hold, and the fix is converting the
    table to one object a line."""
    name = given.name.removesuffix(".gz")
    tabbed = name.lower().endswith(TAB_SUFFIXES)
    if not name.lower().endswith(TABLE_SUFFIXES):
        return
    tabs = ", sep='\\t'" if tabbed else ""
    raise BadInput(
        f"--format {fmt} reads JSONL or Parquet files; {given} is {'a TSV' if tabbed else 'a CSV'} table: "
        f'convert it to JSONL with one object per line, e.g. {JSONL_EXAMPLES[fmt]} (python -c "import '
        f"pandas as pd; pd.read_csv('{given}'{tabs}).to_json('{Path(name).stem}.jsonl', orient='records', "
        'lines=True, force_ascii=False)")'
    )


def _records(
    path: Path, given: Path, fmt: str, counts: Counter[str], parquet: bool = False
) -> Iterator[tuple[str, object]]:
    """(where in the file, record) of each record of a JSONL file (`:line`), of a file holding one
    JSON array of records (`[element]`, stack.data.json_array) or of a Parquet file (` row N`, from
    0, stack.data.parquet_records): `path` read, `given` named (the file the user gave, of which
    `path` may be a UTF-8 copy)."""
    if parquet:
        for row, record in parquet_records(path, given):
            yield f" row {row}", record
        return
    what = f"a JSONL file of {fmt} records"
    if holds_array(path):
        for index, record, invalid in array_elements(path, str(given), lambda _n: None):
            if invalid:
                raise BadInput(f"{given}[{index}] is not UTF-8 text; give {what}")
            yield f"[{index}]", record
        return
    lines, bom, crlf = text_lines(path, what, given)
    counts.update(event.what for event in reported("", bom, crlf))
    for number, line in lines:
        if not line.strip():
            counts["empty_skipped"] += 1
            continue
        try:
            yield f":{number}", json_array.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{given}:{number}: not JSON ({exc.msg})") from None


@dataclass
class Dropped:
    """Examples left out by a rule of their own (the filters count theirs in their report): blank
    for what is learnt (`empty`), longer than the window (`too_long`, with the longest), or of
    nothing to learn from as read (stack.data.chat_shapes.LeftOut: `unanswered`, `tie`,
    `diverged`); and, per rule, where its first one was read and why. `books` holds the bytes of
    the examples read, kept and dropped (stack.data.accounting), `files` the files read (GATE-DATA-014's
    check inputs: each is an input itself, which no --glob narrows), `fields` each rendered example
    held to its record's text fields (GATE-DATA-014's check fields)."""

    counts: Counter[str] = field(default_factory=Counter)
    longest: int = 0
    first: dict[str, str] = field(default_factory=dict)
    books: Books = field(default_factory=Books)
    fields: Fields = field(default_factory=Fields)
    files: FilesRead = field(default_factory=lambda: FilesRead(None))

    def add(self, rule: str, why: str, length: int = 0) -> None:
        self.counts[rule] += 1
        self.longest = max(self.longest, length)
        self.first.setdefault(rule, why)


def _empty(fmt: str, turns: list[tuple[str, str]]) -> bool:
    """Nothing to learn: every assistant turn is blank (a chat or prompt-completion example)."""
    return fmt != PREFS_FORMAT and all(not text.strip() for role, text in turns if role == "assistant")


def _render_all(
    examples: list[_Example], renderer: Renderer, tok: Tokenizer, plan: SftPlan, dropped: Dropped
) -> tuple[dict[Split, _Split], np.ndarray, Counter[str]]:
    """Render, split and index every example; leave out (and count in `dropped`) the blank and the
    too long; hold each chat or prompt-completion example's text to its record's fields
    (`dropped.fields`). Also returns the examples' assistant turns counted: supervised
    (`assistant_turns`), without their marker (`markers_missing`) and read as history (`history_turns`)."""
    splits: dict[Split, _Split] = {"train": _Split(), "heldout": _Split()}
    shas, heldout = [], []
    assigned = splitting.Assigned(plan.seed, plan.val_fraction)  # GATE-DATA-005, example by example
    counted: Counter[str] = Counter()
    for i, example in enumerate(examples):
        turns, where = example.turns, example.where
        if plan.fmt == PREFS_FORMAT:  # one window per pair: its chosen row, then its rejected row
            pair, limit = pair_ids(tok, turns, example.templated), plan.pack_len // 2
            if not pair.prompt:
                dropped.add("empty", f"{where}: the prompt is empty")
                dropped.books.document(plan.source, "empty", turns_bytes(turns))
                continue
            length = pair.length
            rendered = render_pair(pair, limit, tok.eot_id) if length <= limit else None
            whole = pair_text(tok, turns, example.templated)
        elif _empty(plan.fmt, turns):
            dropped.add("empty", f"{where}: every assistant turn is blank")
            dropped.books.document(plan.source, "empty", turns_bytes(turns))
            continue
        else:
            rendered = _rendered(example, i, renderer, tok, plan)
            limit, length = plan.pack_len, len(rendered.ids)
        if rendered is None or length > limit:
            dropped.add("too_long", f"{where}: {length} tokens", length)
            dropped.books.document(plan.source, "too_long", turns_bytes(turns))
            continue
        sha = example_identity(turns)
        which = splitting.assign_split(sha, plan.seed, plan.val_fraction)
        splits[which].examples.append(rendered)
        dropped.books.document(plan.source, None, turns_bytes(turns))
        if plan.fmt != PREFS_FORMAT:  # the turns as text: a joined prompt and completion are one turn
            texts, whole = _texts(example, renderer, tok, plan)
            splits[which].texts.append(texts)
            dropped.fields.rendered(example.said, whole[0], where)
        splits[which].wholes.append(whole)
        assigned.add(example_identity(turns), which)  # the rule's split of the content, taken again
        doc, held = splitting.index_row(sha, which)
        splits[which].keys.add(doc)
        shas.append(doc)
        heldout.append(held)
        counted["assistant_turns"] += rendered.assistant_turns
        counted["markers_missing"] += rendered.markers_missing
        counted["history_turns"] += rendered.history_turns
    splitting.check_assigned(assigned)
    index = np.empty(len(shas), dtype=splitting.INDEX_DTYPE)
    index["doc"], index["heldout"] = shas, heldout
    return splits, index, counted


def _rendered(example: _Example, i: int, renderer: Renderer, tok: Tokenizer, plan: SftPlan) -> Rendered:
    """A chat or prompt-completion example's ids and mask: a prompt and completion joined as TRL
    joins them, or rendered by the model's own template (stack.data.chat_render), or by the stack's."""
    turns = example.turns
    if example.joined:
        return render_concatenated(tok, turns[0][1], turns[1][1], f"example {i + 1}")
    if example.written is not None:
        return render_model(example.written, tok)
    assert isinstance(renderer, ChatTemplate)
    return render(renderer, tok, turns, f"example {i + 1}")


def _length(example: _Example, i: int, renderer: Renderer, tok: Tokenizer, plan: SftPlan) -> int | None:
    """The tokens an example needs of a window (a pair: of each of its two rows), as `_render_all`
    measures it; None for one it drops as empty whatever the length."""
    if plan.fmt == PREFS_FORMAT:
        pair = pair_ids(tok, example.turns, example.templated)
        return pair.length if pair.prompt else None
    if _empty(plan.fmt, example.turns):
        return None
    return len(_rendered(example, i, renderer, tok, plan).ids)


def fitted_pack_len(lengths: Sequence[int], most: int) -> int:
    """The shortest pack length up to `most` (what the model reads) that admits every example the
    model can read at all: the longest of them. An example longer than `most` is dropped at any
    pack length; a fixed default below the model's context would drop more."""
    return max(max((n for n in lengths if n <= most), default=most), 2)


def aimed_val_fraction(examples: int) -> float:
    """The held-out share of `examples` that holds GATE-EVAL-001's wanted_heldout_examples, at most
    its max_val_fraction: the held-out loss's standard error narrows with every held-out example,
    while every one held out is one fewer to train on."""
    spec = load_spec()
    wanted = spec.threshold("GATE-EVAL-001", "wanted_heldout_examples")
    cap = spec.threshold("GATE-EVAL-001", "max_val_fraction")
    return round(min(cap, wanted / max(examples, 1)), 4)


def _settled(plan: SftPlan, kept: list[_Example], renderer: Renderer, tok: Tokenizer) -> SftPlan:
    """`plan` with the defaults that depend on the examples chosen: the pack length that admits
    them within the model's context (`fitted_pack_len`, when the data's model is known and no
    --pack-len was given) and the held-out share the estimate needs (`aimed_val_fraction`, when no
    --val-fraction was given)."""
    pack_len, val_fraction = plan.pack_len, plan.val_fraction
    if pack_len is None:
        assert plan.context is not None
        lengths = [_length(example, i, renderer, tok, plan) for i, example in enumerate(kept)]
        fitted = fitted_pack_len([n for n in lengths if n is not None], most_pack_len(plan.fmt, plan.context))
        pack_len = fitted * PAIR_ROWS if plan.fmt == PREFS_FORMAT else fitted
    if val_fraction is None:
        val_fraction = aimed_val_fraction(len(kept))
    return replace(plan, pack_len=pack_len, val_fraction=val_fraction)


def _texts(
    example: _Example, renderer: Renderer, tok: Tokenizer, plan: SftPlan
) -> tuple[list[TurnText], ExampleText]:
    """An example's assistant turns as text and the example whole as text, written from its messages
    and its template alone, never from its ids: what GATE-SFT-001 reads the packed tables back against."""
    turns = example.turns
    if example.joined:
        return [(turns[0][1], turns[1][1], True)], concatenated_text(turns[0][1], turns[1][1])
    if example.written is not None:
        return model_texts(example.written, tok), model_example_text(example.written, tok)
    assert isinstance(renderer, ChatTemplate)
    return supervised_texts(renderer, turns), example_text(renderer, tok, turns)


def _all_dropped(plan: SftPlan, read: int, blank: int, dropped: Dropped) -> BadInput:
    """The refusal when no example is left: each rule with what it dropped, and what would admit them."""
    files = ", ".join(map(str, plan.files))
    if not read:
        return BadInput(f"no {plan.fmt} records in {files}: {blank} blank line(s) and no record")
    reasons = []
    if dropped.counts["too_long"]:
        assert plan.pack_len is not None  # an example is too long only for a pack length chosen
        width = plan.pack_len // 2 if plan.fmt == PREFS_FORMAT else plan.pack_len
        if plan.context is None:  # the model is yet to be made: its context is the user's to choose
            most = "the model's context + 1" if plan.fmt == PREFS_FORMAT else "the model's context"
            admits = f"--pack-len {dropped.longest} admits them, at most {most}"
        else:
            admits = admitting(dropped.longest, most_pack_len(plan.fmt, plan.context))
        reasons.append(
            f"{dropped.counts['too_long']} longer than --pack-len {width} (the longest needs "
            f"{dropped.longest} tokens: {admits})"
        )
    if dropped.counts["empty"]:
        blank_part = "a prompt" if plan.fmt == PREFS_FORMAT else "an assistant turn"
        reasons.append(f"{dropped.counts['empty']} empty after the template (no text in {blank_part})")
    for rule in sorted(set(dropped.counts) - {"too_long", "empty"}):  # left out as read (LeftOut)
        reasons.append(f"{dropped.counts[rule]} {rule} (the first: {dropped.first[rule]})")
    filtered = plan.filters.report(plan.source).dropped
    if filtered:
        by = ", ".join(f"{reason} {n}" for reason, n in sorted(filtered.items()))
        reasons.append(
            f"{sum(filtered.values())} by the filters ({by}: --no-filter {plan.source} --reason TEXT "
            "admits them on record, --filters FILE tunes them)"
        )
    return BadInput(
        f"every one of the {read} {plan.fmt} record(s) in {files} was dropped: {'; '.join(reasons)}"
    )


@dataclass(frozen=True)
class SftPlan:
    """What one supervised prepare builds, its arguments checked."""

    files: list[Path]
    fmt: str
    template: str | None
    pack_len: int | None  # None: fitted to the examples and the model's context (`_settled`)
    tokenizer: str | Tokenizer
    vocab_size: int | None
    seed: int
    val_fraction: float | None  # None: the share the held-out estimate needs (`_settled`)
    source: str
    filters: FilterRunner
    join: str | None = None  # prompt-completion only: concatenate or chat-turns
    context: int | None = None  # the context of the model the data is for, when --tokenizer names it
    model_template: str | None = None  # that model's own chat template (Jinja), when it ships one


def _write_split(
    staging: Path,
    split: Split,
    plan: SftPlan,
    rendered: _Split,
    tok: Tokenizer,
    dtype: str,
    stored: splitting.Stored,
    trips: RoundTrips,
    by_model: bool,
) -> tuple[list[Shard], list[LabelFile], int]:
    """The shard and label file of one split (none when it has no example); each example written is
    keyed as stored into `stored`, and its ids decoded against its whole text into `trips`;
    `by_model`: the model's own template rendered the examples (GATE-SFT-001 admits the EOS it ends
    a prompt's turns with)."""
    if not rendered.examples:
        return [], [], 0
    eos_id = tok.eot_id
    tokens, labels, _ = pack(rendered.examples, plan.pack_len, eos_id)
    check_supervision(tokens, labels, eos_id, by_model)
    check_packing(labels, [len(example.ids) for example in rendered.examples], plan.pack_len)
    if plan.fmt != PREFS_FORMAT:
        check_turns(tokens, labels, rendered.texts, tok)
    check_rendering(tokens, labels, rendered.wholes, tok)
    if plan.fmt == PREFS_FORMAT:  # each pair's mask read back as its text, against the split's pairs
        check_boundary(*pair_windows(tokens, labels, plan.pack_len), rendered.keys, tok)
    for key in stored_example_keys(tokens, labels, tok):
        stored.add(split, key)
    verdicts = example_verdicts(tokens, labels, rendered.wholes, tok)
    book_examples(trips, split == "heldout", verdicts, f"{split} example")
    writer = ShardWriter(staging, split, plan.source, dtype, SFT_SHARD_TOKENS)
    writer.add(tokens)
    shards = writer.close()
    shard = shards[0]
    path = staging / (shard.path.removesuffix(".bin") + LABELS_SUFFIX)
    with naming(path):
        path.write_bytes(
            labels_header(len(labels), len(rendered.examples)) + labels.astype(LABEL_DTYPE).tobytes()
        )
    entry = LabelFile(
        path=path.relative_to(staging).as_posix(),
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        shard=shard.path,
        tokens=len(labels),
    )
    return shards, [entry], int((labels & 1).sum())


def chosen_renderer(template: str | None, model_template: str | None, tokenizer: str | Tokenizer) -> Renderer:
    """What renders the examples: `--template`'s, when given; else the model's own chat template,
    when the tokenizer comes from a model that ships one (stack.data.chat_render), rendered the
    stack's way where it is the Jinja of a shipped template (a stack model tuned on chats: the
    same text, tokenized as the model was tuned); else the stack's default
    (stack/data/templates/chat.yaml)."""
    if template is None and model_template is not None and isinstance(tokenizer, Tokenizer):
        specials = frozenset(tokenizer.special_tokens)
        return shipped_template(model_template) or ModelTemplate(
            model_template, named_tokens(tokenizer), specials
        )
    return load_template(template)


def _jinja(renderer: Renderer) -> str:
    """The renderer as the Jinja chat template a model trained on its examples carries."""
    return renderer.jinja if isinstance(renderer, ModelTemplate) else jinja_of(renderer.spec)


def _templated(plan: SftPlan, counts: Counter[str]) -> bool:
    """Whether the chat template rendered the examples: chats, prompt-completion read as chat turns
    (every record under --join chat-turns, the conversational ones under concatenate), and pairs
    whose prompts are chat messages. Only then does the data's model learn its format."""
    if plan.fmt == PREFS_FORMAT or plan.join == "concatenate":
        return counts["chat_prompts"] > 0
    return True


def _build(staging: Path, plan: SftPlan) -> Manifest:
    """Render, check, pack and write everything into `staging`; the manifest comes last."""
    renderer = chosen_renderer(plan.template, plan.model_template, plan.tokenizer)
    scratch = staging / UNPACKED_DIR
    dropped = Dropped()
    runner = plan.filters
    runner.log = DropLog(staging)  # open from the first record: one the template cannot write is logged
    examples, counts = _read_examples(plan, renderer, scratch, dropped)
    shutil.rmtree(scratch, ignore_errors=True)  # the UTF-8 copies are never published
    # Filtered before rendering, a leak looked for in the first user turn (stack.data.filters): the
    # source's scripts measured over its examples, its canaries planted first, each drop logged.
    letters = SourceLetters()
    for example in examples:
        doc = Doc("\n".join(c for _, c in example.turns).encode("utf-8"))
        letters.add(plan.source, runner.screen.letters(plan.source, doc), runner.settings.script)
    runner.set_scripts(letters.held(runner.settings.script))
    runner.plant_turns(plan.source)
    kept = []
    for example in examples:
        if (reason := runner.judge_turns(plan.source, example.turns, example.where)) is None:
            kept.append(example)
        else:
            dropped.books.document(plan.source, reason, turns_bytes(example.turns))
    log_path = runner.log.close()
    check_reports(runner, {plan.source: len(kept)}, recount(log_path))
    read = runner.report(plan.source).documents_in + sum(dropped.counts.values())
    if not kept:
        if runner.reports[plan.source].dropped:  # the filters took them all: name them, with an example
            raise BadInput(empty_corpus(len(plan.files), runner.as_dict()))
        raise _all_dropped(plan, read, counts["empty_skipped"], dropped)
    tok = _tokenizer(plan.tokenizer, plan.vocab_size, [c for example in kept for _, c in example.turns])
    plan = _settled(plan, kept, renderer, tok)
    splits, index, turns = _render_all(kept, renderer, tok, plan, dropped)
    if not splits["train"].examples and not splits["heldout"].examples:
        raise _all_dropped(plan, read, counts["empty_skipped"], dropped)
    check_markers(turns["assistant_turns"], turns["markers_missing"])
    check_accounts(dropped.books)
    check_files_read(dropped.files)
    if plan.fmt in FORMATS:
        check_fields(dropped.fields)
    if not splits["train"].examples:
        raise BadInput(f"all {len(kept)} example(s) landed in the held-out split; lower --val-fraction")
    dtype = dtype_for(tok.vocab_size)
    shards, label_files, supervised = [], [], {}
    by_model = isinstance(renderer, ModelTemplate) and _templated(plan, counts)
    stored = splitting.Stored()
    trips = RoundTrips(tok, 1.0, sum(path.stat().st_size for path in plan.files))  # every example
    for split in ("train", "heldout"):
        written, labels, count = _write_split(
            staging, split, plan, splits[split], tok, dtype, stored, trips, by_model
        )
        shards += written
        label_files += labels
        supervised[split] = count
    check_round_trips(trips)
    splitting.check_stored(stored)
    index_path = staging / INDEX_FILE
    with naming(index_path):
        splitting.write_index(index_path, index)
    totals = {
        split: SplitTotals(
            tokens=sum(s.tokens for s in shards if s.split == split),
            documents=sum(s.documents for s in shards if s.split == split),
        )
        for split in ("train", "heldout")
    }
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        tokenizer=data_tokenizer_entry(staging, tok),
        dtype=dtype,
        seed=plan.seed,
        val_fraction=plan.val_fraction,
        invalid_utf8_action="refuse",
        sources={
            plan.source: SourceStats(
                files=counts["files"],
                documents=len(kept),
                binary_skipped=0,
                empty_skipped=counts["empty_skipped"],
                invalid_utf8_files=0,
            )
        },
        shards=sorted(shards, key=lambda s: s.path),
        documents=DataFile(path=INDEX_FILE, bytes=index_path.stat().st_size, sha256=sha256_file(index_path)),
        totals=totals,
        duplicate_documents=len(index) - len(np.unique(index["doc"])),
        filters={name: FilterReport(**report) for name, report in plan.filters.as_dict().items()},
        drop_log=DataFile(path=DROP_LOG_FILE, bytes=log_path.stat().st_size, sha256=sha256_file(log_path)),
        normalised=normalised_input({plan.source: {k: counts[k] for k in NormalisedInput.model_fields}}),
        accounting={name: ByteAccount(**account) for name, account in dropped.books.as_dict().items()},
        sft=SftEntry(
            format=plan.fmt,  # type: ignore[arg-type]
            template=renderer.name if isinstance(renderer, ModelTemplate) else renderer.spec.name,
            template_sha256=renderer.sha256,
            join=plan.join,
            chat_template=_jinja(renderer) if _templated(plan, counts) else None,
            renderer="model" if by_model else "stack",
            pack_len=plan.pack_len,
            examples={s: len(splits[s].examples) for s in ("train", "heldout")},  # type: ignore[misc]
            dropped=dict(sorted(dropped.counts.items())),
            longest_dropped=dropped.longest or None,
            first_dropped=dict(sorted(dropped.first.items())),
            supervised_tokens=supervised,
            assistant_turns=turns["assistant_turns"],
            markers_missing=turns["markers_missing"],
            history_turns=turns["history_turns"],
            labels=label_files,
        ),
    )
    splitting.check_share(manifest.model_dump(mode="json"), index)
    with naming(staging / MANIFEST_FILE):
        return write_manifest(staging, manifest)


def prepare_sft(
    inputs: Sequence[str | Path],
    out: Path | str,
    *,
    fmt: str,
    template: str | None = None,
    join: str | None = None,
    pack_len: int | None = DEFAULT_PACK_LEN,
    tokenizer: str | Tokenizer = "byte",
    vocab_size: int | None = None,
    val_fraction: float | None = 0.1,
    seed: int = 0,
    source: str = "sft",
    force: bool = False,
    filters: Sequence[str] | None = None,
    filter_settings: Path | None = None,
    no_filter: Mapping[str, str] | None = None,
    context: int | None = None,
    model_template: str | None = None,
) -> Manifest:
    """Prepare supervised fine-tuning data from JSONL `inputs` into DATA_DIR `out` (module docstring);
    `context` is that of the model the data is for, when known, which bounds what a refusal offers;
    `model_template` that model's own chat template, which renders the examples unless `template`
    names another (stack.data.chat_render). `pack_len` None (with `context`): the shortest that
    admits every example the model reads; `val_fraction` None: the share the held-out loss's
    estimate needs, within a cap (both `_settled`, once the examples are read)."""
    if fmt not in SFT_FORMATS:
        raise BadInput(f"--format {fmt!r} is not one of {', '.join(SFT_FORMATS)}")
    if not inputs:
        raise BadInput(f"--format {fmt} needs INPUT JSONL files")
    if pack_len is None and context is None:
        raise BadInput("a pack length fitted to the examples needs the context of the model they are for")
    if pack_len is not None and pack_len < 2:
        raise BadInput(f"--pack-len {pack_len} must be at least 2 (a marker and an EOS)")
    if fmt == PROMPT_COMPLETION:
        join = join or JOINS[0]
        if join not in JOINS:
            raise BadInput(f"--join {join!r} is not one of {', '.join(JOINS)}")
    elif join is not None:
        raise BadInput(
            f"--join goes with --format {PROMPT_COMPLETION}; {fmt} records are rendered by --template"
        )
    if fmt == PREFS_FORMAT and pack_len is not None:
        pack_len *= PAIR_ROWS  # a window is a pair: two rows of --pack-len tokens (stack.data.prefs_rows)
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction} must be at least 0 and below 1, e.g. 0.1")
    check_source_name(source)
    runner = open_filters(filters, filter_settings, no_filter or {}, {source})
    load_template(template)  # a bad template is refused before DATA_DIR is touched
    tokenizer = given_tokenizer(tokenizer, vocab_size) or tokenizer  # and so is a bad --tokenizer
    plan = SftPlan(
        [Path(i) for i in inputs],
        fmt,
        template,
        pack_len,
        tokenizer,
        vocab_size,
        seed,
        val_fraction,
        source,
        runner,
        join,
        context,
        model_template,
    )
    out = Path(out)
    created = ownership.check_out(out)
    found = ownership.claim(out, force, {source}, bpe=writes_tokenizer_file(tokenizer))
    return write_locked(out, created, found, lambda staging: _build(staging, plan))
