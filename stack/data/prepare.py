"""`stack prepare`: turn files into verified token shards, a document index and a manifest.

One writer at a time: prepare holds DATA_DIR/.lock (stack.outputs.lock) while it writes. The work
happens in a hidden staging directory inside DATA_DIR and is published only when complete
(stack.data.ownership): the files an earlier prepare listed in its manifest, and still holding
the sha256 it recorded, are replaced, the new ones are moved in, and manifest.json comes last.
Nothing prepare did not write is ever deleted or overwritten, with or without --force, and a
failure (a full disk included) removes what this run wrote and names the file it was writing.

The corpus is read in up to two passes, file by file (stack.data.prepare_tasks): a survey that
measures each source's scripts for the script filter and draws bpe's training sample, when
either is needed, then the pass that filters and encodes. The files may go to worker processes
(stack.data.fanout); this process takes their results in file order and alone decides what
depends on the documents before (dedup, the split, the shards, the counts), so the output is
the same for any number of workers.

What it writes is held to what it read, measured as it writes: every input byte is a document's,
kept or dropped, or framing (GATE-DATA-014, stack.data.accounting); the ids it writes decode to
the documents' text (GATE-DATA-007, stack.data.round_trips); and no held-out document is stored as
a train one, keyed from the ids written (GATE-DATA-005, stack.data.split.Stored).
"""

from __future__ import annotations

import collections
import logging
import shutil
import tempfile
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.artifacts import INDEX_FILE
from stack.data import ownership
from stack.data import split as splitting
from stack.data.accounting import (
    TEXT_FIELDS,
    TEXT_FILES,
    Books,
    Cut,
    FilesRead,
    Marks,
    Separated,
    check_accounts,
    check_cut,
    check_files_read,
    check_marks,
    check_separated,
)
from stack.data.bpe_sample import BpeSample
from stack.data.corpus import (
    ALL_FILES,
    INVALID_UTF8_ACTION,
    InputFile,
    InputSpec,
    Named,
    check_source_name,
    default_spec,
    discover,
    holds_text,
    parse_input,
)
from stack.data.defaults import (
    DEFAULT_BPE_VOCAB,
    DEFAULT_DOC_BYTES,
    DEFAULT_SHARD_TOKENS,
    DEFAULT_SOURCE,
    DEFAULT_VAL_FRACTION,
    HELDOUT_DOCUMENTS,
)
from stack.data.doc_size import pieces
from stack.data.fanout import Fanout, cores
from stack.data.filters.droplog import DROP_LOG_FILE, DropLog, recount
from stack.data.filters.gates import check_reports, open_filters
from stack.data.filters.report import empty_corpus
from stack.data.filters.runner import FilterRunner, check_waived_met
from stack.data.formats import Layout
from stack.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    ByteAccount,
    DataFile,
    FilterReport,
    Manifest,
    ReadSettings,
    Shard,
    SourceStats,
    Split,
    SplitTotals,
    normalised_input,
    write_manifest,
)
from stack.data.prepare_tasks import (
    EncodeJob,
    Judged,
    Part,
    RoundTripDraw,
    Survey,
    SurveyJob,
    Task,
    encode,
    encode_in_worker,
    read_spill,
    spill_path,
    survey,
)
from stack.data.pretrained import given_tokenizer, writes_tokenizer_file
from stack.data.round_trips import RoundTrips, check_round_trips, decodes_to, sample_rate
from stack.data.sample_check import Reading, check_sample, sample_measured
from stack.data.shards import DTYPES, ShardWriter, dtype_for, naming
from stack.data.tokenizer import BPE_MIN_VOCAB, ByteTokenizer, Tokenizer, train_bpe
from stack.data.tokenizer_record import data_tokenizer_entry
from stack.data.unpack import readable_files
from stack.data.working_set import (
    DEFAULT_BPE_SAMPLE,
    DEFAULT_WORKING_SET,
    MIN_WORKING_SET,
    WorkingSet,
    format_size,
)
from stack.outputs.lock import exclusive

log = logging.getLogger(__name__)

# When --workers is not given: input a worker process must have to repay its start (about a
# second), and working set per worker: each costs about 100 MiB besides its share of the working
# set (200 MiB reading Parquet, pyarrow's buffers), so the default 256 MiB allows eight, about
# 1.9 GiB in all at the most (benchmarks/prepare_stream.py measures the sum).
WORKER_BYTES = 16 << 20
WORKER_SET = 32 << 20
# What a skip of each reason that a note names is.
SKIPPED = {"binary": "file(s) that hold no text", "missing_field": "record(s) without the text field"}
# The scratch directory of the staging directory that copies of compressed or UTF-16/32 files go to.
UNPACKED_DIR = ".unpacked"


def _specs(inputs: Sequence[str | Path], source: str, glob: str | None, default: bool) -> list[InputSpec]:
    check_source_name(source)
    specs = []
    for item in inputs:
        name, path = parse_input(str(item), source)
        specs.append(InputSpec(name, path, glob or ALL_FILES))
    if default:
        specs.append(default_spec(glob))
    if not specs:
        raise BadInput(
            "nothing to prepare: give INPUT files or directories, or --default for the built-in corpus"
        )
    return specs


class _Collector:
    """Takes the parts of every file in file order: asks dedup, counts, splits and writes what is kept.

    The one process that writes. A part's ids come from memory, a long document's spill file, or
    a worker's spill file (stack.data.prepare_tasks); documents are written in the order they
    were read, whichever process encoded them.
    """

    def __init__(self, staging: Path, tokenizer: Tokenizer, dtype: str, plan: _Plan) -> None:
        self.staging, self.tokenizer, self.dtype, self.plan = staging, tokenizer, dtype, plan
        self.runner = plan.filters
        self.block_tokens = max(plan.working_set.batch_bytes // DTYPES[dtype].itemsize, 1)
        self.stats: defaultdict[str, Counter[str]] = defaultdict(
            Counter, {s: Counter() for s in plan.sources}
        )
        self.normalised: defaultdict[str, Counter[str]] = defaultdict(Counter)  # stack.data.line_ends
        # What notes name, by reason or by note: the first NAMED_IN_NOTES names and how many in all.
        self.skipped: defaultdict[str, Named] = defaultdict(Named)
        self.invalid_utf8 = Named()
        self.grouped: defaultdict[str, Named] = defaultdict(Named)  # a note's text → the files it is about
        self.writers: dict[tuple[Split, str], ShardWriter] = {}
        # The document index, 9 bytes a document: the only memory that grows with the corpus.
        self._shas = array("Q")
        self._heldout = array("B")
        self.assigned = splitting.Assigned(plan.seed, plan.val_fraction)  # GATE-DATA-005, per document
        self.books = Books()  # where every input byte went (GATE-DATA-014, stack.data.accounting)
        self.files = FilesRead(plan.glob)  # every file read, against --glob (GATE-DATA-014's check inputs)
        self.separated = Separated(plan.layout.doc_sep)  # GATE-DATA-014's check separated
        self.cut = Cut(plan.layout.cut_bytes)  # GATE-DATA-014's check cut
        self.marks = Marks()  # each file as read, not UTF-16 or UTF-32 text (GATE-DATA-014's check marks)
        self.stored = splitting.Stored()  # every document as written (GATE-DATA-005's check stored)
        # GATE-DATA-007: the share of documents held in memory, beside the held-out ones, whose ids
        # are decoded again, by the bytes of every file read
        self.trips = RoundTrips(tokenizer, sample_rate(plan.input_bytes), plan.input_bytes)

    def _write(self, source: str, sha: bytes, blocks: Iterator[np.ndarray], tokens: int) -> Split:
        """Write one document into its split's and source's shard, enter it in the index, and key it
        as written (splitting.Stored); the split it went to."""
        split = splitting.assign_split(sha, self.plan.seed, self.plan.val_fraction)
        key = (split, source)
        if key not in self.writers:
            self.writers[key] = ShardWriter(self.staging, split, source, self.dtype, self.plan.shard_tokens)
        self.assigned.add(sha, split)
        doc, heldout = splitting.index_row(sha, split)
        self._shas.append(doc)
        self._heldout.append(heldout)
        self.stats[source]["documents"] += 1
        self.stored.add(split, self.writers[key].add_blocks(blocks, tokens))
        return split

    def take(self, part: Part, spill: BinaryIO | None = None) -> None:
        """One part of a file; `spill` is the worker's spill file its `at` points into."""
        if part.note is not None and part.note.about:
            self.grouped[part.note.text].add(part.note.about)
        elif part.note is not None:
            log.warning(part.note.text)
        if part.skipped is not None:
            self.stats[part.skipped.source][f"{part.skipped.reason}_skipped"] += 1
            if part.skipped.what:
                self.skipped[part.skipped.reason].add(part.skipped.what)
        for event in part.normalised:
            self.normalised[event.source][event.what] += 1
        for framing in part.framing:
            self.books.framed(framing.source, framing.removed)
            self.books.read(framing.source, TEXT_FIELDS, framing.read)
        if part.end is not None:
            if self.plan.layout.format_of(part.end) == "text":  # its size, as the file system had it
                self.books.read(part.end.source, TEXT_FILES, self.plan.sizes[part.end.path])
            counts = self.stats[part.end.source]
            counts["files"] += 1
            self.files.ended(part.end.name, part.end.below)
            self.marks.ended(part.end.label, part.end.path)
            self.separated.ended(part.separated, part.holding)
            self.cut.ended(part.cut, part.over)
            counts["invalid_utf8_files"] += part.invalid_utf8
            if part.invalid_utf8:
                self.invalid_utf8.add(part.end.label)
        if part.long:
            self._take_long(part, spill)
            return
        ids = part.ids
        if part.at is not None:
            assert spill is not None, "a worker's part comes with its spill file"
            ids = np.concatenate(
                [*read_spill(spill, self.dtype, part.at[1], part.at[1]), np.empty(0, DTYPES[self.dtype])]
            )
        start = 0
        for judged in part.docs:
            reason = self._verdict(judged)
            if judged.tokens:
                assert ids is not None
                if reason is None:
                    one = ids[start : start + judged.tokens]
                    split = self._write(judged.source, judged.sha, iter([one]), judged.tokens)
                    self.books.document(judged.source, None, judged.raw, judged.altered)
                    text = judged.check_text
                    verdict = None if text is None else decodes_to(self.tokenizer, one, text)
                    self.trips.add(split == "heldout", verdict, judged.where)
                start += judged.tokens

    def _verdict(self, judged: Judged) -> str | None:
        """dedup's word where it is still due, then the books: a canary's tally, or the document's counts."""
        reason = judged.reason
        if reason is None and judged.signature is not None:
            assert judged.data is not None, "a document dedup judges comes with its bytes"
            reason = self.runner.duplicate(judged.sha, judged.signature, judged.data)
        if judged.canary is not None:  # counted apart; a canary never has ids, so it is never written
            self.runner.count_canary(judged.source, judged.canary, reason)
            return reason
        self.runner.count(judged.source, reason, judged.sha, judged.counted())
        if reason is not None:  # a kept document is booked as it is written
            self.books.document(judged.source, reason, judged.raw, judged.altered)
        return reason

    def _take_long(self, part: Part, spill: BinaryIO | None) -> None:
        """A long document the other filters kept: its ids, from its own spill file or the worker's,
        block by block, unless dedup drops it now (one held whole is deduplicated like any other)."""
        (judged,) = part.docs
        if self._verdict(judged) is not None:
            if part.spill is not None:
                part.spill.remove()
            else:  # the worker's spill file is read in order: its ids are passed over
                assert spill is not None and part.at is not None
                collections.deque(read_spill(spill, self.dtype, part.at[1], self.block_tokens), maxlen=0)
            return
        self.books.document(judged.source, None, judged.raw, judged.altered)
        if part.spill is not None:
            try:
                blocks = part.spill.blocks(self.plan.working_set.batch_bytes)
                split = self._write(judged.source, judged.sha, blocks, judged.tokens)
            finally:
                part.spill.remove()
        else:
            assert spill is not None and part.at is not None
            blocks = read_spill(spill, self.dtype, part.at[1], self.block_tokens)
            split = self._write(judged.source, judged.sha, blocks, judged.tokens)
        self.trips.add(split == "heldout", judged.round_trip, judged.where)

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

    def notes(self) -> list[str]:
        """What the user should read about the inputs: the files and records skipped, by name, and the
        files that had bytes that are not UTF-8."""
        found = [f"{text}: {names}" for text, names in self.grouped.items()]
        found += [
            f"note: skipped {names.count:,} {SKIPPED[reason]}: {names}"
            for reason, names in sorted(self.skipped.items())
            if reason in SKIPPED
        ]
        if self.invalid_utf8.count:
            found.append(
                f"note: {self.invalid_utf8.count:,} file(s) had bytes that are not UTF-8, read as U+FFFD: "
                f"{self.invalid_utf8}; a document that is mostly U+FFFD is dropped (mis_encoded): "
                "convert such files to UTF-8 (iconv -f ENCODING -t utf-8 FILE, e.g. -f cp1251)"
            )
        return found

    def duplicates(self) -> int:
        """Documents whose content hash (its 64-bit prefix, as in the index) appeared earlier."""
        return len(self._shas) - len(np.unique(np.frombuffer(self._shas, dtype=np.uint64)))


def _tasks(files: Sequence[InputFile]) -> list[Task]:
    """One task per file, in file order; a source's canaries are planted in its first file."""
    seen: set[str] = set()
    tasks = []
    for number, item in enumerate(files):
        tasks.append(Task(number, item, plant=item.source not in seen))
        seen.add(item.source)
    return tasks


def _survey(
    plan: _Plan, tasks: list[Task], fan: Fanout, task: Callable[[str], Callable[[int], None]]
) -> Survey:
    """The survey pass, when one is needed: the sources' letters by script, bpe's sample."""
    screen = plan.filters.screen
    measured = plan.filters.settings.script.expected is None and "script" in screen.filters
    all_waived = plan.layout.source_field is None and all(name in screen.waivers for name in plan.sources)
    letters = measured and not all_waived
    sampling = plan.pretrained is None and plan.tokenizer == "bpe"
    found = Survey(sample=BpeSample(plan.bpe_sample, plan.seed) if sampling else None)
    if not (letters or sampling):
        return found
    advance = task("surveying")
    job = SurveyJob(
        plan.layout, plan.working_set, screen, letters, plan.bpe_sample if sampling else None, plan.seed
    )
    if plan.workers == 1:
        for one in tasks:
            found.merge(survey(job, one, advance))
    else:
        for one, part in zip(tasks, fan.ordered(survey, job, tasks), strict=True):
            found.merge(part)
            advance(one.item.path.stat().st_size)
    return found


def _note_sample(sample: BpeSample, plan: _Plan) -> None:
    if not sample.complete:
        log.warning(
            f"note: bpe trains on a seeded sample of the corpus: {sample.units:,} of "
            f"{sample.offered_units:,} documents or pieces, {format_size(sample.text_bytes)} of "
            f"{format_size(sample.offered_bytes)} (--bpe-sample {format_size(plan.bpe_sample)})"
        )


def _note_vocab(learned: int, sample: BpeSample, plan: _Plan) -> None:
    """Say when bpe learned fewer ids than --vocab-size asked: it merges until every word of its
    sample is one token, so a small or repetitive corpus runs out of merges, and the model's
    embedding is sized to what was learned, not to what was asked."""
    if learned >= plan.vocab_size:
        return
    more = "" if sample.complete else f", or a larger --bpe-sample than {format_size(plan.bpe_sample)}"
    log.warning(
        f"note: bpe learned {learned:,} ids of the {plan.vocab_size:,} --vocab-size asked for: every word "
        f"of its sample ({format_size(sample.text_bytes)}) is one token by then, so the vocabulary is "
        f"{learned:,}; a larger one needs more varied text{more}"
    )


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
    workers: int
    glob: str | None = None  # the --glob the files were found by, which every file read is held to
    # The size of every file read (a copy's, for a file read through one), from the file system
    # before any is read: the input of the books of a file read as text (stack.data.accounting).
    sizes: Mapping[Path, int] = field(default_factory=dict)

    @property
    def input_bytes(self) -> int:
        """The bytes of every file read."""
        return sum(self.sizes.values())


def _encode_all(
    plan: _Plan, tasks: list[Task], fan: Fanout, collector: _Collector, advance: Callable[[int], None]
) -> None:
    """The encode pass: every file's parts into the collector, in file order."""
    job = EncodeJob(
        plan.layout,
        plan.working_set,
        max(plan.working_set.batch_bytes // plan.workers, 1),
        plan.filters.screen,
        collector.tokenizer,
        collector.dtype,
        collector.staging,
        RoundTripDraw(plan.seed, plan.val_fraction, collector.trips.rate),
        plan.filters.rules.docs,
    )
    if plan.workers == 1:
        for task in tasks:
            for part in encode(job, task, collector.staging, advance):
                collector.take(part)
        return
    for task, parts in zip(tasks, fan.ordered(encode_in_worker, job, tasks), strict=True):
        path = spill_path(collector.staging, task.number)
        try:
            with open(path, "rb") as spill:
                for part in parts:
                    collector.take(part, spill)
        finally:
            path.unlink(missing_ok=True)
        advance(task.item.path.stat().st_size)


def _tokenize(staging: Path, plan: _Plan) -> tuple[Tokenizer, str, _Collector, str | None]:
    """Survey the corpus (scripts, bpe's sample), train bpe, then write every document's tokens; with
    the digest of the sample bpe read (GATE-DATA-007's check sample), None for another tokenizer."""
    plan = replace(plan, sizes={item.path: item.path.stat().st_size for item in plan.files})
    bar, task = _progress(plan.progress, plan.input_bytes)
    tasks = _tasks(plan.files)
    with bar, Fanout(plan.workers, staging) as fan:
        found = _survey(plan, tasks, fan, task)
        plan.filters.set_scripts(found.letters.held(plan.filters.settings.script))
        tok: Tokenizer
        sample_sha256 = None
        if plan.pretrained is not None:
            tok = plan.pretrained
        elif plan.tokenizer == "bpe":
            assert found.sample is not None
            _note_sample(found.sample, plan)
            reading = Reading(found.sample.texts())
            tok = train_bpe(reading, plan.vocab_size)
            _note_vocab(tok.vocab_size, found.sample, plan)
            check_sample(sample_measured(reading, found.sample, plan.seed, plan.bpe_sample))
            sample_sha256 = reading.digest
        else:
            tok = ByteTokenizer()
        final_dtype = dtype_for(tok.vocab_size, plan.dtype)
        collector = _Collector(staging, tok, final_dtype, plan)
        try:
            _encode_all(plan, tasks, fan, collector, task("tokenizing"))
            collector.close()
        except BaseException:
            collector.discard()
            raise
    return tok, final_dtype, collector, sample_sha256


def _build(staging: Path, plan: _Plan) -> Manifest:
    """Write shards, the document index, the drop log, the tokenizer and manifest.json into `staging`."""
    log_file = DropLog(staging)
    plan.filters.log = log_file
    scratch = staging / UNPACKED_DIR
    files = readable_files(plan.files, scratch)
    asked = plan.layout.doc_bytes
    plan = replace(plan, files=files, layout=plan.layout.fitted(files, plan.val_fraction))
    _notes(plan.files, plan.layout, None if asked is not None else plan.val_fraction)
    tok, final_dtype, collector, sample_sha256 = _tokenize(staging, plan)
    shutil.rmtree(scratch, ignore_errors=True)  # never published
    for note in collector.notes():
        log.warning(note)
    log_path = log_file.close()
    written = {name: counts["documents"] for name, counts in collector.stats.items()}
    check_reports(plan.filters, written, recount(log_path))
    check_accounts(collector.books)
    check_files_read(collector.files)
    check_marks(collector.marks)
    if plan.layout.doc_sep is not None:  # a check made only with --doc-sep (not in run_kinds' list)
        check_separated(collector.separated)
    if collector.cut.documents:  # made only where a text file was read without a separator
        check_cut(collector.cut)
    check_round_trips(collector.trips)
    if plan.layout.source_field is not None:
        met = {name for name, report in plan.filters.reports.items() if report.documents_in}
        check_waived_met(plan.filters.waivers, met, plan.layout.source_field)
    shards = collector.shards()
    totals = _totals(shards)
    documents = totals["train"].documents + totals["heldout"].documents
    if documents == 0:
        binary = collector.skipped["binary"]
        raise BadInput(empty_corpus(len(plan.files), plan.filters.as_dict(), binary.first, binary.count))
    if totals["train"].documents == 0:
        raise BadInput(
            f"all {documents} document(s) landed in the held-out split; lower --val-fraction "
            f"(now {plan.val_fraction}) or add documents"
        )
    index_path = staging / INDEX_FILE
    with naming(index_path):
        splitting.write_index(index_path, index := collector.index())
    splitting.check_assigned(collector.assigned)
    splitting.check_stored(collector.stored)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        tokenizer=data_tokenizer_entry(staging, tok, sample_sha256),
        dtype=final_dtype,
        seed=plan.seed,
        val_fraction=plan.val_fraction,
        invalid_utf8_action=INVALID_UTF8_ACTION,
        sources={
            name: SourceStats(**{f: counts[f] for f in SourceStats.model_fields})
            for name, counts in sorted(collector.stats.items())
        },
        shards=shards,
        documents=DataFile(path=INDEX_FILE, bytes=index_path.stat().st_size, sha256=sha256_file(index_path)),
        totals=totals,
        duplicate_documents=collector.duplicates(),
        filters={name: FilterReport(**report) for name, report in plan.filters.as_dict().items()},
        drop_log=DataFile(path=DROP_LOG_FILE, bytes=log_path.stat().st_size, sha256=sha256_file(log_path)),
        normalised=normalised_input(collector.normalised),
        accounting={name: ByteAccount(**account) for name, account in collector.books.as_dict().items()},
        reading=_reading(plan),
    )
    splitting.check_share(manifest.model_dump(mode="json"), index)
    with naming(staging / MANIFEST_FILE):
        return write_manifest(staging, manifest)


def _reading(plan: _Plan) -> ReadSettings:
    """The read settings the corpus was found, read and written with, for the manifest."""
    layout = plan.layout
    return ReadSettings(
        format=layout.format,
        glob=plan.glob,
        doc_sep=layout.doc_sep,
        doc_bytes=layout.cut_bytes,
        text_field=layout.fields.given(),
        source_field=layout.source_field,
        shard_tokens=plan.shard_tokens,
        bpe_sample=plan.bpe_sample,
    )


def _workers(requested: int | None, files: Sequence[InputFile], working_set: int) -> int:
    """The worker processes of a prepare: as asked, else one per core for a corpus of many files
    large enough to repay starting them, as many as the working set allows (WORKER_BYTES, WORKER_SET)."""
    if requested is not None:
        if requested < 1:
            raise BadInput(f"--workers {requested} must be 1 or more")
        return min(requested, max(len(files), 1))
    total = sum(item.path.stat().st_size for item in files)
    return max(1, min(cores(), len(files), total // WORKER_BYTES, working_set // WORKER_SET))


def _notes(files: Sequence[InputFile], layout: Layout, fitted_to: float | None) -> None:
    """Say on screen which text files are cut into documents by size (with `fitted_to`, the
    --val-fraction a --doc-bytes not given was fitted to: why the cut is finer than the default), and
    how to give a separator and which files a --text-field given does not apply to, being read as
    text. Of a file the reader will skip as binary (by the same sniff) neither is said."""
    as_text = [item for item in files if layout.format_of(item) == "text" and holds_text(item)]
    cut = layout.cut_bytes
    if fitted_to is not None and cut < DEFAULT_DOC_BYTES:  # one note for the corpus, not one a file
        log.warning(_fitted_note(as_text, cut, fitted_to))
    else:
        for item in as_text:
            size = item.path.stat().st_size
            if layout.doc_sep is None and size > cut:
                log.warning(
                    f"note: {item.label} ({format_size(size)}) is read without --doc-sep: it is cut into "
                    f"about {pieces(size, cut):,} documents of at most {format_size(cut)} at line ends "
                    "(--doc-bytes SIZE); give --doc-sep SEP if the file separates its documents"
                )
    by_options: dict[tuple[str, ...], Named] = {}
    for item in as_text:
        given = tuple(layout.field_options(item.source))
        if given:
            by_options.setdefault(given, Named()).add(item.label)
    for given, names in by_options.items():
        log.warning(
            f"note: {' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to files of records "
            f"(JSONL, JSON, Parquet, CSV, TSV) only; {names.count:,} file(s) are read as text, whole: {names}"
        )


def _fitted_note(as_text: Sequence[InputFile], cut: int, val_fraction: float) -> str:
    """The note on a corpus of text files cut finer than the default (stack.data.doc_size): how many
    documents the default would make, how many the fitted cut makes, and what sets it."""
    sizes = [item.path.stat().st_size for item in as_text]
    one = len(as_text) == 1
    which = (
        f"{as_text[0].label} ({format_size(sizes[0])}) is"
        if one
        else f"the {len(as_text):,} text files ({format_size(sum(sizes))}) are"
    )
    whole = sum(pieces(size, DEFAULT_DOC_BYTES) for size in sizes)
    made = sum(pieces(size, cut) for size in sizes)
    it, its = ("it", "its") if one else ("they", "their")
    return (
        f"note: {which} read without --doc-sep: as documents of at most {format_size(DEFAULT_DOC_BYTES)} "
        f"{it} would make {whole:,}, too few for --val-fraction {val_fraction} to hold out about "
        f"{HELDOUT_DOCUMENTS} (the split holds out whole documents), so {it} {'is' if one else 'are'} cut at "
        f"line ends into about {made:,} documents of at most {format_size(cut)} (--doc-bytes SIZE sets the "
        f"size); give --doc-sep SEP if {it} {'separates' if one else 'separate'} {its} documents"
    )


def write_locked(
    out: Path, created: Path | None, found: ownership.Claim, build: Callable[[Path], Manifest]
) -> Manifest:
    """Take DATA_DIR's lock, `build` into a staging directory, publish it; a failed write is BadInput.

    Shared by every kind of prepare (stack.data.sft_prepare too), so all publish by the same rules.
    """
    try:
        with exclusive(out, "stack prepare") as note:
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
    workers: int | None = None,
) -> Manifest:
    """Prepare a DATA_DIR from `inputs` (paths, or NAME=PATH to name their source) and/or --default.

    `layout` says how files become documents (stack.data.formats); `working_set` bounds the
    memory of reading and tokenizing and never changes what is written, nor does `workers`, the
    processes the files are shared out to (default: by the corpus, stack.data.fanout); bpe trains on a seeded
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
    layout = layout or Layout()
    layout.check_sources(sources)
    runner = open_filters(filters, filter_settings, no_filter or {}, sources, layout.source_field is not None)
    created = ownership.check_out(out)
    found = ownership.claim(out, force, sources, bpe=writes_tokenizer_file(tokenizer))
    files = discover(specs, out)
    plan = _Plan(
        files,
        sources,
        layout,
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
        _workers(workers, files, working_set),
        glob,
    )
    return write_locked(out, created, found, lambda staging: _build(staging, plan))
