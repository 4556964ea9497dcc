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
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.data import ownership
from stack.data import split as splitting
from stack.data.batches import Event, Long, batched, is_long
from stack.data.bpe_sample import BpeSample
from stack.data.corpus import (
    INVALID_UTF8_ACTION,
    Document,
    FileRegion,
    InputFile,
    InputSpec,
    Skipped,
    check_source_name,
    default_spec,
    discover,
    parse_input,
)
from stack.data.defaults import DEFAULT_BPE_VOCAB, DEFAULT_SHARD_TOKENS, DEFAULT_SOURCE, DEFAULT_VAL_FRACTION
from stack.data.filters.gates import check_reports, open_filters
from stack.data.filters.runner import FilterRunner
from stack.data.formats import Layout, read_documents
from stack.data.line_ends import Normalised
from stack.data.long_documents import LongDocument, Spill
from stack.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    DataFile,
    FilterReport,
    Manifest,
    Shard,
    SourceStats,
    Split,
    SplitTotals,
    normalised_input,
    write_manifest,
)
from stack.data.pretrained import given_tokenizer, writes_tokenizer_file
from stack.data.read_ahead import read_ahead
from stack.data.shards import DTYPES, ShardWriter, dtype_for, naming
from stack.data.split import content_sha256
from stack.data.tokenizer import (
    BPE_MIN_VOCAB,
    ByteTokenizer,
    Tokenizer,
    byte_level_cut,
    train_bpe,
)
from stack.data.tokenizer_record import data_tokenizer_entry
from stack.data.working_set import (
    DEFAULT_BPE_SAMPLE,
    DEFAULT_WORKING_SET,
    MIN_WORKING_SET,
    WorkingSet,
    format_size,
)
from stack.runlock import exclusive

log = logging.getLogger(__name__)


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


class _Collector:
    """Encodes documents in batches, splits them, writes their tokens, and counts everything.

    The next batch is read on a thread while this one is encoded (stack.data.read_ahead); a
    document longer than a batch goes through stack.data.long_documents. Documents are written
    in the order they were read.
    """

    def __init__(self, staging: Path, tokenizer: Tokenizer, dtype: str, plan: _Plan) -> None:
        self.staging, self.tokenizer, self.dtype, self.plan = staging, tokenizer, dtype, plan
        self.working = plan.working_set
        self.stats: defaultdict[str, Counter[str]] = defaultdict(
            Counter, {s: Counter() for s in plan.sources}
        )
        self.normalised: defaultdict[str, Counter[str]] = defaultdict(Counter)  # stack.data.line_ends
        self.writers: dict[tuple[Split, str], ShardWriter] = {}
        # The document index, 9 bytes a document: the only memory that grows with the corpus.
        self._shas = array("Q")
        self._heldout = array("B")

    def add_files(self, advance: Callable[[int], None]) -> None:
        """Read every input file and write its documents; skipped input is counted."""
        long_invalid = False  # a long document of the file being read had invalid UTF-8
        events = _screened(
            batched(self.plan.files, self.plan.layout, self.working, advance), self.plan.filters
        )
        for event in read_ahead(events):
            if isinstance(event, list):
                self.add(event)
            elif isinstance(event, Long):
                long_invalid |= self._add_long(event)
            elif isinstance(event, Skipped):
                self.stats[event.source][f"{event.reason}_skipped"] += 1
            elif isinstance(event, Normalised):
                self.normalised[event.source][event.what] += 1
            else:  # FileEnd: the file's own counts
                counts = self.stats[event.item.source]
                counts["files"] += 1
                counts["invalid_utf8_files"] += event.invalid_utf8 or long_invalid
                long_invalid = False

    def _writer(self, source: str, sha: bytes) -> ShardWriter:
        """The writer of a document's split and source; the document is entered in the index."""
        split = splitting.assign_split(sha, self.plan.seed, self.plan.val_fraction)
        key = (split, source)
        if key not in self.writers:
            self.writers[key] = ShardWriter(self.staging, split, source, self.dtype, self.plan.shard_tokens)
        doc, heldout = splitting.index_row(sha, split)
        self._shas.append(doc)
        self._heldout.append(heldout)
        self.stats[source]["documents"] += 1
        return self.writers[key]

    def add(self, group: list[Document]) -> None:
        """Encode one batch of documents (on every core the tokenizer uses) and write them."""
        encoded = self.tokenizer.encode_documents([doc.data for doc in group])
        # One array for the batch, every document followed by EOT: numpy works per batch, not per document.
        eot = np.array([self.tokenizer.eot_id], dtype=np.uint32)
        tokens = np.concatenate([part for ids in encoded for part in (ids, eot)]).astype(DTYPES[self.dtype])
        start = 0
        for doc, end in zip(group, np.cumsum([len(ids) + 1 for ids in encoded]).tolist(), strict=True):
            self._writer(doc.source, doc.sha).add(tokens[start:end])
            start = end

    def _add_long(self, long: Long) -> bool:
        """Encode a long document in pieces through a spill file; whether it had invalid UTF-8."""
        document = LongDocument(long.document, self.working.piece_bytes)
        pieces = document.pieces(self.tokenizer.cut_point, self.working.piece_bytes)
        spill = Spill(self.staging, self.dtype)
        try:
            for group in _groups(pieces, self.working.batch_bytes):
                if len(group) == 1 and len(group[0]) > self.working.batch_bytes:
                    log.warning(
                        f"note: {long.item.path}: {format_size(len(group[0]))} of one document has no "
                        f"point where the {self.tokenizer.name} tokenizer can cut it safely; it is encoded "
                        "in one piece, beyond the working set"
                    )
                for ids in self.tokenizer.encode_documents(group):
                    spill.write(ids)
            end = np.array([self.tokenizer.eot_id], dtype=np.uint32)
            writer = self._writer(document.source, document.sha)
            writer.add_blocks(_then(spill.blocks(self.working.batch_bytes), end), spill.tokens + 1)
        finally:
            spill.remove()
        return document.invalid_utf8

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

    def index(self) -> np.ndarray:
        """The document index, in the order documents were written."""
        index = np.empty(len(self._shas), dtype=splitting.INDEX_DTYPE)
        index["doc"] = np.frombuffer(self._shas, dtype=np.uint64) if self._shas else 0
        index["heldout"] = np.frombuffer(self._heldout, dtype=np.uint8) if self._heldout else 0
        return index

    def duplicates(self) -> int:
        """Documents whose content hash (its 64-bit prefix, as in the index) appeared earlier."""
        return len(self._shas) - len(np.unique(np.frombuffer(self._shas, dtype=np.uint64)))


def _screened(events: Generator[Event, None, None], filters: FilterRunner) -> Generator[Event, None, None]:
    """The events with the documents the filters drop taken out (counted by the runner).

    It runs on the read-ahead thread, so the filters' Python work overlaps the encoding of the
    batch before (the tokenizers library releases the GIL while it encodes).
    """
    with closing(events):  # stopped early, the reader below closes its files at once
        for event in events:
            if isinstance(event, list):
                if kept := [doc for doc in event if filters.keep(doc.source, doc.sha, doc.data)]:
                    yield kept
            elif isinstance(event, Long):
                if filters.keep_unread(event.item.source, _length(event.document)):
                    yield event
            else:
                yield event


def _length(found: Document | FileRegion) -> int:
    """A document's length in bytes, known without reading a long one."""
    return len(found.data) if isinstance(found, Document) else found.end - found.start


def _groups(pieces: Iterable[bytes], limit: int) -> Iterator[list[bytes]]:
    """Pieces in groups of at most `limit` bytes (a piece longer than that alone)."""
    group: list[bytes] = []
    size = 0
    for piece in pieces:
        if group and size + len(piece) > limit:
            yield group
            group, size = [], 0
        group.append(piece)
        size += len(piece)
    if group:
        yield group


def _then(blocks: Iterator[np.ndarray], last: np.ndarray) -> Iterator[np.ndarray]:
    yield from blocks
    yield last


def _sample(plan: _Plan, advance: Callable[[int], None]) -> BpeSample:
    """The seeded sample of the corpus that bpe trains on (stack.data.bpe_sample)."""
    sample = BpeSample(plan.bpe_sample, plan.seed)
    working = plan.working_set
    for item in plan.files:
        for found in read_documents(item, plan.layout, working.batch_bytes, advance):
            if isinstance(found, Skipped | Normalised):
                continue
            if isinstance(found, Document) and not is_long(found, working):
                sample.offer(found.data, found.sha)
                continue
            # The BPE to be trained cuts where every byte-level BPE made by train_bpe does.
            for piece in LongDocument(found, working.piece_bytes).pieces(byte_level_cut, working.piece_bytes):
                sample.offer(piece, content_sha256(piece))
    if not sample.complete:
        log.warning(
            f"note: bpe trains on a seeded sample of the corpus: {sample.units:,} of "
            f"{sample.offered_units:,} documents or pieces, {format_size(sample.text_bytes)} of "
            f"{format_size(sample.offered_bytes)} (--bpe-sample {format_size(plan.bpe_sample)})"
        )
    return sample


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
    """A rich progress bar of input bytes on the terminal, or nothing; returns (context, task factory)."""
    if not enabled:
        return nullcontext(), lambda _label: lambda _n: None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
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
    layout: Layout
    tokenizer: str | Tokenizer
    pretrained: Tokenizer | None  # given ready-made: hf:DIR, or a model's (--tokenizer RUN_DIR)
    vocab_size: int
    dtype: str
    seed: int
    val_fraction: float
    shard_tokens: int
    working_set: WorkingSet
    bpe_sample: int
    progress: bool
    filters: FilterRunner


def _tokenize(staging: Path, plan: _Plan) -> tuple[Tokenizer, str, _Collector]:
    """Train the tokenizer if it is bpe, then write every document's tokens into staged shards."""
    bar, task = _progress(plan.progress, sum(item.path.stat().st_size for item in plan.files))
    with bar:
        tok: Tokenizer
        if plan.pretrained is not None:
            tok = plan.pretrained
        elif plan.tokenizer == "bpe":
            tok = train_bpe(_sample(plan, task("sampling for bpe")).texts(), plan.vocab_size)
        else:
            tok = ByteTokenizer()
        final_dtype = dtype_for(tok.vocab_size, plan.dtype)
        collector = _Collector(staging, tok, final_dtype, plan)
        advance = task("tokenizing")
        try:
            collector.add_files(advance)
            collector.close()
        except BaseException:
            collector.discard()
            raise
    return tok, final_dtype, collector


def _build(staging: Path, plan: _Plan) -> Manifest:
    """Write shards, the document index, the tokenizer and manifest.json into `staging`."""
    tok, final_dtype, collector = _tokenize(staging, plan)
    check_reports(plan.filters, {name: counts["documents"] for name, counts in collector.stats.items()})
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
        splitting.write_index(index_path, collector.index())
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        tokenizer=data_tokenizer_entry(staging, tok),
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
        duplicate_documents=collector.duplicates(),
        filters={name: FilterReport(**report) for name, report in plan.filters.as_dict().items()},
        normalised=normalised_input(collector.normalised),
    )
    with naming(staging / MANIFEST_FILE):
        return write_manifest(staging, manifest)


def write_locked(
    out: Path, created: Path | None, found: ownership.Claim, build: Callable[[Path], Manifest]
) -> Manifest:
    """Take DATA_DIR's lock, `build` into a staging directory, publish it; a failed write is BadInput.

    Shared by every kind of prepare (stack.data.sft_prepare too), so all publish by the same rules.
    """
    try:
        with exclusive(out, "prepare") as note:
            if note is not None:
                log.warning(f"note: {note}")
            return _write(out, created, found, build)
    except OSError as exc:
        raise BadInput(ownership.write_failure(exc, out)) from None


def _write(
    out: Path, created: Path | None, found: ownership.Claim, build: Callable[[Path], Manifest]
) -> Manifest:
    """Under DATA_DIR's lock: stage the build, publish it, and clean up whatever happens."""
    ownership.take_over(out, found)
    staging = Path(tempfile.mkdtemp(prefix=ownership.staging_prefix(), dir=out))
    try:
        manifest = build(staging)
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
    tokenizer: str | Tokenizer = "byte",
    vocab_size: int | None = None,
    glob: str | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    source: str = DEFAULT_SOURCE,
    default: bool = False,
    force: bool = False,
    dtype: str = "auto",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    layout: Layout | None = None,
    working_set: int = DEFAULT_WORKING_SET,
    bpe_sample: int = DEFAULT_BPE_SAMPLE,
    progress: bool = False,
    filters: Sequence[str] | None = None,
    filter_settings: Path | None = None,
    no_filter: Mapping[str, str] | None = None,
) -> Manifest:
    """Prepare a DATA_DIR from `inputs` (paths, or NAME=PATH to name their source) and/or --default.

    `layout` says how files become documents (stack.data.formats); `working_set` bounds the
    memory of reading and tokenizing and never changes what is written; bpe trains on a seeded
    sample of at most `bpe_sample` bytes (stack.data.bpe_sample). Every document passes the
    `filters` named (default: the settings' default list) with the settings of `filter_settings`
    over the built-in ones, except in the sources `no_filter` waives ({source: reason});
    stack.data.filters says what each drops, and the manifest counts it per source and reason.

    Returns the manifest written, stamped with its sha256. Every problem the user can fix is
    BadInput, raised before DATA_DIR is touched where it can be known then; a split that is not
    disjoint is GATE-DATA-005 firing.
    """
    pretrained = given_tokenizer(tokenizer, vocab_size)
    if not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction} must be at least 0 and below 1, e.g. 0.05")
    if seed < 0:
        raise BadInput(f"--seed {seed} must be 0 or more")
    if shard_tokens < 1:
        raise BadInput(f"--shard-tokens {shard_tokens} must be 1 or more")
    if working_set < MIN_WORKING_SET:
        raise BadInput(
            f"--working-set {working_set} bytes is too small: give at least {format_size(MIN_WORKING_SET)}, "
            "e.g. 256M"
        )
    if bpe_sample < 1:
        raise BadInput(f"--bpe-sample {bpe_sample} must be at least 1 byte, e.g. 64M")
    if tokenizer == "byte":
        if vocab_size not in (None, ByteTokenizer().vocab_size):
            raise BadInput(
                f"--vocab-size applies to --tokenizer bpe; byte has {ByteTokenizer().vocab_size} ids"
            )
        vocab_size = ByteTokenizer().vocab_size
    if pretrained is not None:
        vocab_size = pretrained.vocab_size
    vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if tokenizer == "bpe" and vocab_size < BPE_MIN_VOCAB:
        raise BadInput(f"--vocab-size {vocab_size} is too small for bpe: it needs at least {BPE_MIN_VOCAB}")
    dtype_for(vocab_size, dtype)  # refuse a vocabulary that cannot fit before any work is done
    out = Path(out)
    specs = _specs(inputs, source, glob, default)
    sources = {spec.source for spec in specs}
    runner = open_filters(filters, filter_settings, no_filter or {}, sources)
    created = ownership.check_out(out)
    found = ownership.claim(out, force, sources, bpe=writes_tokenizer_file(tokenizer))
    files = discover(specs, out)
    plan = _Plan(
        files,
        sources,
        layout or Layout(),
        tokenizer,
        pretrained,
        vocab_size,
        dtype,
        seed,
        val_fraction,
        shard_tokens,
        WorkingSet(working_set),
        bpe_sample,
        progress,
        runner,
    )
    return write_locked(out, created, found, lambda staging: _build(staging, plan))
