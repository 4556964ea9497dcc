"""`stack prepare`: turn files into verified token shards, a document index and a manifest.

The work happens in a hidden staging directory inside DATA_DIR and is published only when it
is complete: the files an earlier prepare listed in its manifest are removed, the new ones are
moved in, and manifest.json is written last. Nothing prepare did not write is ever deleted or
overwritten, with or without --force.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.data import split as splitting
from stack.data.corpus import (
    INVALID_UTF8_ACTION,
    Document,
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
    parse_manifest,
    write_manifest,
)
from stack.data.shards import ShardWriter, dtype_for
from stack.data.tokenizer import (
    BPE_MIN_VOCAB,
    TOKENIZER_FILE,
    TOKENIZER_NAMES,
    BpeTokenizer,
    ByteTokenizer,
    Tokenizer,
    train_bpe,
)

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


def _claim(out: Path, force: bool) -> set[str]:
    """The files of `out` that prepare may replace: those an earlier prepare's manifest lists."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return set()
    if not force:
        raise BadInput(
            f"DATA_DIR {out} already exists and is not empty; pass --force to replace what an earlier "
            "`stack prepare` wrote there (nothing else is touched), or choose another --out"
        )
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.is_file():
        return set()
    try:
        return set(parse_manifest(out, manifest_path.read_bytes()).files())
    except BadInput as exc:
        raise BadInput(
            f"--force replaces only what prepare wrote, and {manifest_path} is not a manifest it can "
            f"trust ({exc}); move it away or choose another --out"
        ) from None


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

    def shards(self) -> list[Shard]:
        """Close every writer; the manifest entries of all shards, by path."""
        written = [shard for writer in self.writers.values() for shard in writer.close()]
        return sorted(written, key=lambda s: s.path)


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


def _publish(staging: Path, out: Path, owned: set[str]) -> None:
    """Move staged files into `out`, replacing only files in `owned` (refusing any other)."""
    staged = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    for rel in [*staged, MANIFEST_FILE]:
        if (out / rel).exists() and rel not in owned:
            raise BadInput(
                f"refusing to overwrite {out / rel}: it was not written by `stack prepare`; "
                "move it away or choose another --out"
            )
    for rel in sorted(owned):
        (out / rel).unlink(missing_ok=True)
    for rel in staged:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)


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
    BadInput; a split that is not disjoint is GATE-DATA-005 firing.
    """
    if tokenizer not in TOKENIZER_NAMES:
        raise BadInput(f"unknown --tokenizer {tokenizer!r}; use one of: {', '.join(TOKENIZER_NAMES)}")
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
    vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if tokenizer == "bpe" and vocab_size < BPE_MIN_VOCAB:
        raise BadInput(f"--vocab-size {vocab_size} is too small for bpe: it needs at least {BPE_MIN_VOCAB}")
    dtype_for(vocab_size, dtype)  # refuse a vocabulary that cannot fit before any work is done
    out = Path(out)
    specs = _specs(inputs, source, glob, default)
    owned = _claim(out, force)
    files = discover(specs, out)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    bar, task = _progress(progress, len(files))
    try:
        with bar:
            if tokenizer == "bpe":
                texts = _texts(map(read_document, files), task("reading for bpe"))
                tok: Tokenizer = train_bpe(texts, vocab_size)
            else:
                tok = ByteTokenizer()
            final_dtype = dtype_for(tok.vocab_size, dtype)
            collector = _Collector(
                staging, tok, final_dtype, seed, val_fraction, shard_tokens, {spec.source for spec in specs}
            )
            advance = task("tokenizing")
            for group in _groups(map(read_document, files)):
                collector.add(group)
                advance(len(group))
        shards = collector.shards()
        totals = _totals(shards)
        documents = totals["train"].documents + totals["heldout"].documents
        if documents == 0:
            raise BadInput(
                f"empty corpus: {len(files)} file(s) found under the inputs, all binary or empty; "
                "give text files"
            )
        if totals["train"].documents == 0:
            raise BadInput(
                f"all {documents} document(s) landed in the held-out split; lower --val-fraction "
                f"(now {val_fraction}) or add documents"
            )
        index = np.array(collector.rows, dtype=splitting.INDEX_DTYPE)
        splitting.write_index(staging / splitting.INDEX_FILE, index)
        tokenizer_path = None
        if isinstance(tok, BpeTokenizer):
            tokenizer_path = TOKENIZER_FILE
            (staging / TOKENIZER_FILE).write_text(tok.to_json(), encoding="utf-8")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            tokenizer=TokenizerEntry(
                name=tok.name, vocab_size=tok.vocab_size, sha256=tok.sha256, path=tokenizer_path
            ),
            dtype=final_dtype,
            seed=seed,
            val_fraction=val_fraction,
            invalid_utf8_action=INVALID_UTF8_ACTION,
            sources={
                name: SourceStats(**{f: counts[f] for f in SourceStats.model_fields})
                for name, counts in sorted(collector.stats.items())
            },
            shards=shards,
            documents=DataFile(
                path=splitting.INDEX_FILE,
                bytes=(staging / splitting.INDEX_FILE).stat().st_size,
                sha256=sha256_file(staging / splitting.INDEX_FILE),
            ),
            totals=totals,
            duplicate_documents=collector.duplicates,
        )
        _publish(staging, out, owned)
        return write_manifest(out, manifest)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
