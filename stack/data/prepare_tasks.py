"""The work of `stack prepare` on one input file: what a worker process does (stack.data.fanout).

Two passes read the files. The survey counts each source's letters by script (the script
filter's measure of what a source holds, stack.data.filters.script) and draws bpe's training
sample (stack.data.bpe_sample); a file's counts and sample merge with the others' into the
corpus's, whatever the order. The encode pass reads a file again, judges every document by the
filters (stack.data.filters.runner.Screen), with the source's canaries planted first, and
encodes the ones kept. What needs the documents before it, dedup's index, the split, the
shards and the counts, is left to the one process that writes (stack.data.prepare), which takes
the files' results in file order: so the output does not depend on how many workers there are.

In the writing process a file's parts come as they are made, ids in memory; from a worker they
come at the end of the file, their ids in a spill file of the task in the staging directory,
which the writer reads back in order and removes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from contracts.doc_cut import within_cut
from contracts.separators import holds_separator
from contracts.split import document_identity, held_out
from stack.data import accounting
from stack.data.bpe_sample import BpeSample
from stack.data.corpus import Document, FileRegion, Framing, InputFile, Note, Skipped
from stack.data.filters.canaries import Canary
from stack.data.filters.dedup import NearDuplicates
from stack.data.filters.rechecks import RULED, Dropped, dropped_of
from stack.data.filters.runner import Counted, Doc, Screen, snippet
from stack.data.filters.sample import sample_of, sample_text, spans
from stack.data.filters.script import SourceLetters
from stack.data.formats import Layout, read_documents
from stack.data.line_ends import Normalised
from stack.data.long_documents import LongDocument, Spill
from stack.data.read_ahead import read_ahead
from stack.data.round_trips import drawn
from stack.data.shards import DTYPES, naming
from stack.data.tokenizer import Tokenizer, byte_level_cut
from stack.data.utf8 import complete_prefix, repaired
from stack.data.working_set import HELD_DOCUMENT_BYTES, WorkingSet, format_size

# Documents judged per part at most, kept or dropped: what a part holds besides its ids stays small.
PART_DOCS = 4096


@dataclass(frozen=True)
class Task:
    """One input file; `plant`: it is its source's first, and the source's canaries go first."""

    number: int
    item: InputFile
    plant: bool = False


@dataclass(frozen=True)
class SurveyJob:
    """What every file of the survey shares: how to read, what to count, what to sample."""

    layout: Layout
    working: WorkingSet
    screen: Screen
    letters: bool
    sample_budget: int | None
    seed: int


@dataclass
class Survey:
    """What the survey found in one file (or, merged, in the corpus)."""

    letters: SourceLetters = field(default_factory=SourceLetters)
    sample: BpeSample | None = None

    def merge(self, part: Survey) -> None:
        """Add another file's survey."""
        self.letters.merge(part.letters)
        if self.sample is not None and part.sample is not None:
            self.sample.merge(part.sample)


def _ignore(_read: int) -> None:
    """No progress to report."""


def head(found: Document | FileRegion, size: int) -> bytes:
    """A document's first `size` bytes as valid UTF-8, read from disk for one too long to hold."""
    if isinstance(found, Document):
        return found.data[:size]
    raw = next(found.raw_blocks(size), b"")
    return repaired(raw[: complete_prefix(raw)] if len(raw) == size else raw)[0]


def is_long(found: Document | FileRegion, working: WorkingSet) -> bool:
    """Whether a document is read again and encoded in pieces rather than held (and encoded whole)."""
    return isinstance(found, FileRegion) or len(found.data) > working.batch_bytes


def held_whole(found: Document | FileRegion) -> Document | None:
    """The document whole, as the filters judge it, when it is at most HELD_DOCUMENT_BYTES long
    (a region of a file is read, repaired to UTF-8 as every document is); None for a longer one,
    which is judged on its first window. Its size decides, never the working set."""
    if isinstance(found, Document):
        return found if len(found.data) <= HELD_DOCUMENT_BYTES else None
    if found.end - found.start > HELD_DOCUMENT_BYTES:
        return None
    whole = LongDocument(found, HELD_DOCUMENT_BYTES)
    data = whole.text()
    return Document(
        found.source, data, whole.sha, whole.invalid_utf8, found.where, found.delimited, found.raw, found.crlf
    )


def screened(screen: Screen, found: Document | FileRegion, long: bool, code: bool) -> Doc:
    """A document as the screen judges it: whole when held, else its first window and its sample
    read from disk (stack.data.filters.sample), with its length."""
    if isinstance(found, Document):
        length = len(found.data)
        data = found.data[: screen.window_bytes] if long else found.data
        sample = sample_of(found.data, screen.settings.sample) if long else None
        return Doc(data, length, found.delimited, code=code, sample=sample)
    length = found.end - found.start
    pieces = (found.read(start, end) for start, end in spans(length, screen.settings.sample))
    return Doc(
        head(found, screen.window_bytes), length, found.delimited, code=code, sample=sample_text(pieces)
    )


def text_name(layout: Layout, item: InputFile) -> str | None:
    """The name of a file read as text, which may say its documents are code (Screen.is_code); None
    for a file of records, whose name says nothing of what their text is."""
    return item.label if layout.format_of(item) == "text" else None


def survey(job: SurveyJob, task: Task, advance: Callable[[int], None] = _ignore) -> Survey:
    """Count one file's letters by script and source, and draw its bpe sample."""
    found_survey = Survey(
        sample=None if job.sample_budget is None else BpeSample(job.sample_budget, job.seed)
    )
    piece_bytes = job.working.piece_bytes
    name = text_name(job.layout, task.item)
    for found in read_documents(task.item, job.layout, job.working.batch_bytes, advance):
        if isinstance(found, Skipped | Normalised | Note | Framing):  # counted and said by the encode pass
            continue
        held = held_whole(found)
        if job.letters:
            code = job.screen.is_code(found.source, name)
            doc = screened(job.screen, held or found, held is None, code)
            letters = job.screen.letters(found.source, doc)
            found_survey.letters.add(found.source, letters, job.screen.settings.script)
        sample = found_survey.sample
        if sample is None:
            continue
        if held is not None:
            sample.offer(held.data, held.sha)
            continue
        # The BPE to be trained cuts where every byte-level BPE made by train_bpe does.
        for piece in LongDocument(found, piece_bytes).pieces(byte_level_cut, piece_bytes):
            sample.offer(piece, document_identity(piece))
    return found_survey


@dataclass(frozen=True)
class RoundTripDraw:
    """Which documents held in memory carry their text to the writer, whose ids it decodes again
    (stack.data.round_trips): the held-out ones, by contracts.split's rule for the split's seed and
    val_fraction, and those drawn at `rate` by their content hash."""

    seed: int
    val_fraction: float
    rate: float

    def selects(self, doc_sha: bytes) -> bool:
        return held_out(doc_sha, self.seed, self.val_fraction) or drawn(doc_sha, self.rate)


@dataclass(frozen=True)
class EncodeJob:
    """What every file of the encode pass shares. `encode_bytes` is the text encoded in one call: the
    working set's batch shared among the workers. `spills` is where a worker leaves its ids.
    `round_trips` picks the documents whose text the writer decodes their ids against."""

    layout: Layout
    working: WorkingSet
    encode_bytes: int
    screen: Screen
    tokenizer: Tokenizer
    dtype: str
    spills: Path
    round_trips: RoundTripDraw
    recheck_docs: int  # drops of each reason per file whose reading is kept for GATE-DATA-013's rules


@dataclass(slots=True)
class Judged:
    """One document or canary as the screen left it, and how many ids were written for it.

    `reason` is the verdict of the filters before dedup; `signature` is set when dedup is still to
    judge it, and `data` with it: the bytes it was made from, which GATE-DATA-013's dedup check
    compares again (stack.data.filters.dedup.Rechecks). `sha` of a long document is known once it
    has been read whole (after encoding).
    `text` is its first characters, kept where it may be dropped (for the example and the log).
    `raw` is the input bytes it was read from, `altered` whether its text is not those bytes though
    nothing normalised it (stack.data.accounting). `check_text` is the text of a kept document the
    writer decodes its ids against; `round_trip` the verdict on a long one, encoded in pieces, each
    decoded as it was encoded (stack.data.round_trips). `dropped` is what GATE-DATA-013's check
    rules reads of a drop it may measure again (stack.data.filters.rechecks).
    """

    source: str
    sha: bytes
    reason: str | None
    where: str
    text: str = ""
    length: int = 0
    system: str | None = None
    signature: np.ndarray | None = None
    data: bytes | None = None
    canary: Canary | None = None
    tokens: int = 0
    unread: bool = False
    raw: int = 0
    altered: bool = False
    check_text: bytes | None = None
    round_trip: bool | None = None
    dropped: Dropped | None = None

    def counted(self) -> Counted:
        """What the books count of it besides its verdict (stack.data.filters.runner.Counted)."""
        return Counted(self.where, self.text, self.length, self.system, self.unread, self.dropped)


@dataclass
class Part:
    """A run of one file's judged documents with their ids, or a skipped input, or the file's end.

    The ids of the documents that got any are `ids` (held in memory), `spill` (a long document's,
    in a scratch file) or `at` (first id and count in the task's spill file, from a worker).
    """

    docs: list[Judged] = field(default_factory=list)
    ids: np.ndarray | None = None
    spill: Spill | None = None
    at: tuple[int, int] | None = None
    long: bool = False  # the ids are one long document's, read back in blocks
    skipped: Skipped | None = None
    normalised: list[Normalised] = field(default_factory=list)  # what a reader normalised (line_ends)
    end: InputFile | None = None
    framing: list[Framing] = field(default_factory=list)  # with `end`: what the file held besides documents
    invalid_utf8: bool = False  # with `end`: a document of the file had bytes replaced
    note: Note | None = None
    # with `end`, for a text file read with --doc-sep: its documents, and where those holding it were read
    separated: int = 0
    holding: list[str] = field(default_factory=list)
    # with `end`, for a text file read without a separator: its pieces, and where those over --doc-bytes were
    cut: int = 0
    over: list[str] = field(default_factory=list)


@dataclass
class _Short:
    """Documents held in memory, judged, waiting to be encoded together."""

    docs: list[Judged] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class _Long:
    """A long document, judged and kept: it is read again and encoded in pieces."""

    judged: Judged
    found: Document | FileRegion


def _judge_canary(screen: Screen, dedup: NearDuplicates | None, source: str, canary: Canary) -> Judged:
    reason = screen.reason(source, Doc(canary.data, canary.length, canary.delimited))
    judged = Judged(source, document_identity(canary.data), reason, "canary", canary=canary)
    if reason is None and dedup is not None and screen.dedups(source):
        judged.signature, judged.data = dedup.signature(canary.data), canary.data
    return judged


def _holds(found: Document | FileRegion, separator: bytes, block_bytes: int) -> bool:
    """Whether a document the reader yielded holds `separator` (contracts.separators): a long one is
    read again in blocks, each searched with the last len(separator) - 1 bytes of the one before."""
    if isinstance(found, Document):
        return holds_separator(found.data, separator, found.crlf)
    tail = b""
    for block in found.raw_blocks(block_bytes):
        window = tail + block
        if holds_separator(window, separator, found.crlf):
            return True
        tail = window[-(len(separator) - 1) :] if len(separator) > 1 else b""
    return False


def _normalised(found: Document) -> bool:
    """Whether a document's text was normalised from the bytes it was read from (CRLF read as LF,
    bytes replaced), so that its length may differ from theirs."""
    return found.crlf or found.invalid_utf8


def _judged(job: EncodeJob, task: Task, advance: Callable[[int], None]) -> Generator[object, None, None]:
    """The file's documents judged, in batches to encode, long ones alone, then its end.

    It runs on the read-ahead thread, so reading and judging the next batch overlap encoding
    this one (the tokenizers library lets go of the GIL while it encodes).
    """
    screen, working = job.screen, job.working
    dedup = NearDuplicates(screen.settings.dedup) if "dedup" in screen.filters else None  # signatures only
    planted = {task.item.source}
    batch = _Short()
    if task.plant:
        batch.docs = [
            _judge_canary(screen, dedup, task.item.source, c) for c in screen.canaries(task.item.source)
        ]
    invalid = False
    name = text_name(job.layout, task.item)
    rechecked: Counter[str] = Counter()
    framing: list[Framing] = []  # said with the file's end, not one by one
    # GATE-DATA-014's check separated: each document of a text file read with --doc-sep, measured here
    # on what the reader yielded, apart from the reader
    doc_sep = job.layout.doc_sep
    separator = None if doc_sep is None or job.layout.format_of(task.item) != "text" else doc_sep.encode()
    separated, holding = 0, []
    cut, over = 0, []  # GATE-DATA-014's check cut: pieces of a text file read without a separator
    text = job.layout.format_of(task.item) == "text"
    for found in read_documents(task.item, job.layout, working.batch_bytes, advance):
        if found.source not in planted:  # a record's own source, first met in this file
            planted.add(found.source)
            batch.docs += [
                _judge_canary(screen, dedup, found.source, c) for c in screen.canaries(found.source)
            ]
        if isinstance(found, Framing):
            framing.append(found)
            continue
        if isinstance(found, Skipped | Normalised | Note):
            yield found
            continue
        if separator is not None:
            separated += 1
            if _holds(found, separator, working.batch_bytes):
                holding.append(found.where)
        if text and not found.delimited:
            cut += 1
            if not within_cut(found.raw, job.layout.cut_bytes):
                over.append(found.where)
        long, held = is_long(found, working), held_whole(found)
        doc = screened(screen, held or found, held is None, screen.is_code(found.source, name))
        verdict = screen.judge(found.source, doc)
        reason = verdict.reason
        sha = b"" if held is None else held.sha
        judged = Judged(
            found.source,
            sha,
            reason,
            found.where,
            length=doc.size,
            system=verdict.system,
            unread=held is None,
            raw=found.raw,
            altered=held is not None and accounting.altered(len(held.data), held.raw, _normalised(held)),
        )
        dedups = screen.dedups(found.source) and held is not None
        if reason is not None or dedups:
            judged.text = snippet(screen.text(doc.data))
        if reason in RULED and rechecked[reason] < job.recheck_docs:
            rechecked[reason] += 1
            whole = None if held is None else held.data
            judged.dropped = dropped_of(
                screen.settings, whole, doc.data, doc.sample, doc.size, doc.delimited, doc.code
            )
        if reason is None and dedups and dedup is not None:
            judged.signature, judged.data = dedup.signature(doc.data), doc.data
        if reason is None and not long and job.round_trips.selects(sha):
            judged.check_text = doc.data
        data = doc.data
        if long:
            yield batch
            batch = _Short()
            if reason is None:
                yield _Long(judged, found)
            else:
                batch.docs.append(judged)
            continue
        assert isinstance(found, Document)  # is_long holds for every FileRegion
        invalid |= found.invalid_utf8
        if len(batch.docs) >= PART_DOCS or (reason is None and batch.size + len(data) > job.encode_bytes):
            yield batch
            batch = _Short()
        if reason is None:
            batch.data.append(data)
            batch.size += len(data)
        batch.docs.append(judged)
    yield batch
    yield Part(
        end=task.item,
        invalid_utf8=invalid,
        framing=framing,
        separated=separated,
        holding=holding,
        cut=cut,
        over=over,
    )


def _encode_short(job: EncodeJob, batch: _Short) -> Part:
    """Encode a batch's kept documents: one array of ids, each document's followed by EOT."""
    if not batch.data:
        return Part(docs=batch.docs)
    encoded = job.tokenizer.encode_documents(batch.data)
    eot = np.array([job.tokenizer.eot_id], dtype=np.uint32)
    ids = np.concatenate([part for one in encoded for part in (one, eot)]).astype(DTYPES[job.dtype])
    lengths = iter(len(one) + 1 for one in encoded)
    for judged in batch.docs:
        if judged.reason is None and judged.canary is None:
            judged.tokens = next(lengths)
    return Part(docs=batch.docs, ids=ids)


def _groups(pieces: Iterator[bytes], limit: int) -> Iterator[list[bytes]]:
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


def _encode_long(job: EncodeJob, long: _Long, spill_dir: Path, name: str) -> tuple[Part, bool]:
    """Encode a long document in pieces into a spill file; the part, and whether it had invalid UTF-8."""
    working, tok = job.working, job.tokenizer
    document = LongDocument(long.found, working.piece_bytes)
    spill = Spill(spill_dir, job.dtype, name)
    note = None
    round_trip = True
    try:
        for group in _groups(document.pieces(tok.cut_point, working.piece_bytes), job.encode_bytes):
            if len(group) == 1 and len(group[0]) > job.encode_bytes:
                note = Note(
                    long.judged.source,
                    f"note: {long.judged.where}: {format_size(len(group[0]))} of one document has no point "
                    f"where the {tok.name} tokenizer can cut it safely; it is encoded in one piece, beyond "
                    "the working set",
                )
            for piece, ids in zip(group, tok.encode_documents(group), strict=True):
                round_trip &= tok.decode(ids) == piece.decode("utf-8")
                spill.write(ids)
        spill.write(np.array([tok.eot_id], dtype=np.uint32))
    except BaseException:
        spill.remove()
        raise
    long.judged.sha = document.sha
    long.judged.tokens = spill.tokens
    long.judged.round_trip = round_trip
    return Part(docs=[long.judged], spill=spill, long=True, note=note), document.invalid_utf8


def encode(
    job: EncodeJob, task: Task, spill_dir: Path, advance: Callable[[int], None] = _ignore
) -> Iterator[Part]:
    """The parts of one file, in reading order (see the module docstring)."""
    invalid_long = False
    with closing(_judged(job, task, advance)) as events:
        for event in read_ahead(events):
            if isinstance(event, _Short):
                if event.docs:
                    yield _encode_short(job, event)
            elif isinstance(event, _Long):
                part, invalid = _encode_long(job, event, spill_dir, f".task-{task.number:06d}-long.ids")
                invalid_long |= invalid
                yield part
            elif isinstance(event, Skipped):
                yield Part(skipped=event)
            elif isinstance(event, Normalised):
                yield Part(normalised=[event])
            elif isinstance(event, Note):
                yield Part(note=event)
            else:
                assert isinstance(event, Part)
                event.invalid_utf8 |= invalid_long
                yield event


def spill_path(spills: Path, number: int) -> Path:
    """The spill file of a worker's task."""
    return spills / f".task-{number:06d}.ids"


def encode_in_worker(job: EncodeJob, task: Task) -> list[Part]:
    """`encode` in a worker process: every id goes to the task's spill file, the parts point into it."""
    path = spill_path(job.spills, task.number)
    parts = []
    written = 0
    with open(path, "wb") as handle, naming(path):
        for part in encode(job, task, job.spills):
            if part.ids is not None:
                handle.write(part.ids.tobytes())
                part.at, part.ids = (written, len(part.ids)), None
                written += part.at[1]
            elif part.spill is not None:
                count = part.spill.tokens
                for block in part.spill.blocks(job.working.batch_bytes):
                    handle.write(block.tobytes())
                part.spill.remove()
                part.at, part.spill = (written, count), None
                written += count
            parts.append(part)
    return parts


def read_spill(handle: BinaryIO, dtype: str, count: int, block_tokens: int) -> Iterator[np.ndarray]:
    """`count` ids from an open spill file, in blocks of at most `block_tokens`."""
    itemsize = DTYPES[dtype].itemsize
    left = count
    while left > 0:
        block = handle.read(min(left, block_tokens) * itemsize)
        if not block:
            raise OSError(f"{handle.name}: the spill file ended {left} ids early")
        left -= len(block) // itemsize
        yield np.frombuffer(block, dtype=DTYPES[dtype])
