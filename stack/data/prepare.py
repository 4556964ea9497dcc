"""`stack prepare`: turn files into verified token shards, a document index and a manifest.

One writer at a time: prepare holds DATA_DIR/.lock (stack.runlock) while it writes. The work
happens in a hidden staging directory inside DATA_DIR and is published only when complete
(stack.data.ownership): the files an earlier prepare listed in its manifest, and still holding
the sha256 it recorded, are replaced, the new ones are moved in, and manifest.json comes last.
Nothing prepare did not write is ever deleted or overwritten, with or without --force, and a
failure (a full disk included) removes what this run wrote and names the file it was writing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.data import ownership
from stack.data import split as splitting
from stack.data.corpus import (
    INVALID_UTF8_ACTION,
    Document,
    InputFile,
    InputSpec,
    Skipped,
    check_source_name,
    default_spec,
    discover,
    parse_input,
    read_document,
)
from stack.data.defaults import DEFAULT_BPE_VOCAB, DEFAULT_SHARD_TOKENS, DEFAULT_SOURCE, DEFAULT_VAL_FRACTION
from stack.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    DataFile,
    Manifest,
    Shard,
    SourceStats,
    Split,
    SplitTotals,
    TokenizerEntry,
    write_manifest,
)
from stack.data.pretrained import PretrainedTokenizer, directory_of
from stack.data.shards import ShardWriter, dtype_for, naming
from stack.data.tokenizer import (
    BPE_MIN_VOCAB,
    TOKENIZER_FILE,
    TOKENIZER_NAMES,
    BpeTokenizer,
    ByteTokenizer,
    Tokenizer,
    train_bpe,
)
from stack.runlock import exclusive

log = logging.getLogger(__name__)

# Documents are tokenized in groups of about this many bytes (bpe encodes a group on all cores).
ENCODE_GROUP_BYTES = 4 << 20


def _specs(inputs: Sequence[str | Path], source: str, glob: str | None, default: bool) -> list[InputSpec]:
    check_source_name(source)
    specs = []
    for item in inputs:
        name, path = parse_input(str(item), source)
        specs.append(InputSpec(name, path, glob or "*"))
    if default:
        specs.append(default_spec(glob))
    if not specs:
        raise BadInput(
            "nothing to prepare: give INPUT files or directories, or --default for the built-in corpus"
        )
    return specs


def _groups(items: Iterable[Document | Skipped]) -> Iterator[list[Document | Skipped]]:
    group: list[Document | Skipped] = []
    size = 0
    for item in items:
        group.append(item)
        size += len(item.data) if isinstance(item, Document) else 0
        if size >= ENCODE_GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


class _Collector:
    """Splits documents, writes their tokens, and counts everything the manifest reports."""

    def __init__(
        self,
        staging: Path,
        tokenizer: Tokenizer,
        dtype: str,
        seed: int,
        val_fraction: float,
        shard_tokens: int,
        sources: Iterable[str],
    ) -> None:
        self.staging, self.tokenizer, self.dtype = staging, tokenizer, dtype
        self.seed, self.val_fraction, self.shard_tokens = seed, val_fraction, shard_tokens
        self.stats = {name: Counter[str]() for name in sources}
        self.writers: dict[tuple[Split, str], ShardWriter] = {}
        self.rows: list[tuple[int, int]] = []
        self.seen: set[bytes] = set()
        self.duplicates = 0

    def add(self, group: list[Document | Skipped]) -> None:
        """Count, split, tokenize and write one group of read files."""
        documents = [item for item in group if isinstance(item, Document)]
        for item in group:
            counts = self.stats[item.source]
            counts["files"] += 1
            if isinstance(item, Skipped):
                counts[f"{item.reason}_skipped"] += 1
        encoded = self.tokenizer.encode_documents([doc.data for doc in documents])
        for doc, ids in zip(documents, encoded, strict=True):
            split = splitting.assign_split(doc.sha, self.seed, self.val_fraction)
            tokens = np.empty(len(ids) + 1, dtype=np.uint32)
            tokens[:-1] = ids
            tokens[-1] = self.tokenizer.eot_id
            key = (split, doc.source)
            if key not in self.writers:
                self.writers[key] = ShardWriter(
                    self.staging, split, doc.source, self.dtype, self.shard_tokens
                )
            self.writers[key].add(tokens)
            self.rows.append(splitting.index_row(doc.sha, split))
            self.duplicates += doc.sha in self.seen
            self.seen.add(doc.sha)
            counts = self.stats[doc.source]
            counts["documents"] += 1
            counts["invalid_utf8_files"] += doc.invalid_utf8

    def close(self) -> None:
        """Finish every open shard (where a full disk may still show, when buffers are flushed)."""
        for writer in self.writers.values():
            writer.close()

    def discard(self) -> None:
        """Close every open shard after a failure, dropping what is still buffered."""
        for writer in self.writers.values():
            writer.discard()

    def shards(self) -> list[Shard]:
        """The manifest entries of all shards written, by path."""
        return sorted((s for writer in self.writers.values() for s in writer.written), key=lambda s: s.path)


def _texts(items: Iterable[Document | Skipped], advance: Callable[[int], None]) -> Iterator[str]:
    for item in items:
        advance(1)
        if isinstance(item, Document):
            yield item.data.decode("utf-8")


def _totals(shards: list[Shard]) -> dict[Split, SplitTotals]:
    return {
        split: SplitTotals(
            tokens=sum(s.tokens for s in shards if s.split == split),
            documents=sum(s.documents for s in shards if s.split == split),
        )
        for split in ("train", "heldout")
    }


def _progress(
    enabled: bool, total: int
) -> tuple[AbstractContextManager[object], Callable[[str], Callable[[int], None]]]:
    """A rich progress bar on the terminal, or nothing; returns (context, task factory)."""
    if not enabled:
        return nullcontext(), lambda _label: lambda _n: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )

    def task(label: str) -> Callable[[int], None]:
        task_id = bar.add_task(label, total=total)
        return lambda n: bar.advance(task_id, n)

    return bar, task


@dataclass(frozen=True)
class _Plan:
    """What one prepare builds, once its arguments are checked."""

    files: list[InputFile]
    sources: set[str]
    tokenizer: str
    pretrained: PretrainedTokenizer | None
    vocab_size: int
    dtype: str
    seed: int
    val_fraction: float
    shard_tokens: int
    progress: bool


def _tokenize(staging: Path, plan: _Plan) -> tuple[Tokenizer, str, _Collector]:
    """Train the tokenizer if it is bpe, then write every document's tokens into staged shards."""
    bar, task = _progress(plan.progress, len(plan.files))
    with bar:
        tok: Tokenizer
        if plan.pretrained is not None:
            tok = plan.pretrained
        elif plan.tokenizer == "bpe":
            texts = _texts(map(read_document, plan.files), task("reading for bpe"))
            tok = train_bpe(texts, plan.vocab_size)
        else:
            tok = ByteTokenizer()
        final_dtype = dtype_for(tok.vocab_size, plan.dtype)
        collector = _Collector(
            staging, tok, final_dtype, plan.seed, plan.val_fraction, plan.shard_tokens, plan.sources
        )
        advance = task("tokenizing")
        try:
            for group in _groups(map(read_document, plan.files)):
                collector.add(group)
                advance(len(group))
            collector.close()
        except BaseException:
            collector.discard()
            raise
    return tok, final_dtype, collector


def _build(staging: Path, plan: _Plan) -> Manifest:
    """Write shards, the document index, the tokenizer and manifest.json into `staging`."""
    tok, final_dtype, collector = _tokenize(staging, plan)
    shards = collector.shards()
    totals = _totals(shards)
    documents = totals["train"].documents + totals["heldout"].documents
    if documents == 0:
        raise BadInput(
            f"empty corpus: {len(plan.files)} file(s) found under the inputs, all binary or empty; "
            "give text files"
        )
    if totals["train"].documents == 0:
        raise BadInput(
            f"all {documents} document(s) landed in the held-out split; lower --val-fraction "
            f"(now {plan.val_fraction}) or add documents"
        )
    index_path = staging / splitting.INDEX_FILE
    with naming(index_path):
        splitting.write_index(index_path, np.array(collector.rows, dtype=splitting.INDEX_DTYPE))
    tokenizer_path = None
    if isinstance(tok, BpeTokenizer | PretrainedTokenizer):
        tokenizer_path = TOKENIZER_FILE
        with naming(staging / TOKENIZER_FILE):
            (staging / TOKENIZER_FILE).write_text(tok.to_json(), encoding="utf-8")
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        tokenizer=TokenizerEntry(
            name=tok.name,
            vocab_size=tok.vocab_size,
            sha256=tok.sha256,
            path=tokenizer_path,
            eot_token=tok.eot_token if isinstance(tok, PretrainedTokenizer) else None,
        ),
        dtype=final_dtype,
        seed=plan.seed,
        val_fraction=plan.val_fraction,
        invalid_utf8_action=INVALID_UTF8_ACTION,
        sources={
            name: SourceStats(**{f: counts[f] for f in SourceStats.model_fields})
            for name, counts in sorted(collector.stats.items())
        },
        shards=shards,
        documents=DataFile(
            path=splitting.INDEX_FILE, bytes=index_path.stat().st_size, sha256=sha256_file(index_path)
        ),
        totals=totals,
        duplicate_documents=collector.duplicates,
    )
    with naming(staging / MANIFEST_FILE):
        return write_manifest(staging, manifest)


def _write(out: Path, created: Path | None, found: ownership.Claim, plan: _Plan) -> Manifest:
    """Under DATA_DIR's lock: stage the build, publish it, and clean up whatever happens."""
    ownership.take_over(out, found)
    staging = Path(tempfile.mkdtemp(prefix=ownership.staging_prefix(), dir=out))
    try:
        manifest = _build(staging, plan)
        ownership.publish(staging, out, found.owned)
        return manifest
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_corpus(
    inputs: Sequence[str | Path],
    out: Path | str,
    *,
    tokenizer: str = "byte",
    vocab_size: int | None = None,
    glob: str | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    source: str = DEFAULT_SOURCE,
    default: bool = False,
    force: bool = False,
    dtype: str = "auto",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = False,
) -> Manifest:
    """Prepare a DATA_DIR from `inputs` (paths, or NAME=PATH to name their source) and/or --default.

    Returns the manifest written, stamped with its sha256. Every problem the user can fix is
    BadInput, raised before DATA_DIR is touched where it can be known then; a split that is not
    disjoint is GATE-DATA-005 firing.
    """
    pretrained_dir = directory_of(tokenizer)
    pretrained = None if pretrained_dir is None else PretrainedTokenizer.from_dir(pretrained_dir)
    if pretrained is None and tokenizer not in TOKENIZER_NAMES:
        raise BadInput(
            f"unknown --tokenizer {tokenizer!r}; use one of: {', '.join(TOKENIZER_NAMES)}, or hf:DIR"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction} must be at least 0 and below 1, e.g. 0.05")
    if seed < 0:
        raise BadInput(f"--seed {seed} must be 0 or more")
    if shard_tokens < 1:
        raise BadInput(f"--shard-tokens {shard_tokens} must be 1 or more")
    if tokenizer == "byte":
        if vocab_size not in (None, ByteTokenizer().vocab_size):
            raise BadInput(
                f"--vocab-size applies to --tokenizer bpe; byte has {ByteTokenizer().vocab_size} ids"
            )
        vocab_size = ByteTokenizer().vocab_size
    if pretrained is not None:
        if vocab_size is not None:
            raise BadInput(
                f"--vocab-size applies to --tokenizer bpe; {tokenizer} has {pretrained.vocab_size} ids"
            )
        vocab_size = pretrained.vocab_size
    vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if tokenizer == "bpe" and vocab_size < BPE_MIN_VOCAB:
        raise BadInput(f"--vocab-size {vocab_size} is too small for bpe: it needs at least {BPE_MIN_VOCAB}")
    dtype_for(vocab_size, dtype)  # refuse a vocabulary that cannot fit before any work is done
    out = Path(out)
    specs = _specs(inputs, source, glob, default)
    sources = {spec.source for spec in specs}
    created = ownership.check_out(out)
    found = ownership.claim(out, force, sources, bpe=tokenizer != "byte")
    files = discover(specs, out)
    plan = _Plan(
        files, sources, tokenizer, pretrained, vocab_size, dtype, seed, val_fraction, shard_tokens, progress
    )
    try:
        with exclusive(out, "prepare") as note:
            if note is not None:
                log.warning(f"note: {note}")
            return _write(out, created, found, plan)
    except OSError as exc:
        raise BadInput(ownership.write_failure(exc, out)) from None
