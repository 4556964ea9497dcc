"""Input formats: how one input file becomes a stream of documents.

| format  | chosen for              | a document is                                                    |
|---------|-------------------------|------------------------------------------------------------------|
| text    | any other file          | the file (cut by `--doc-bytes`), or each text between `--doc-sep`s |
| jsonl   | `.jsonl`, `.ndjson`, and `.json` of JSON Lines | the `--text-field` string of each line's object |
| parquet | `.parquet`              | the `--text-column` value of each row                            |

A `.json` file is JSONL when it holds JSON Lines of documents (record_input.holds_records), and
prepare says so; any other `.json` file (a config, a pretty-printed document) is text.

`--format` names one format for every file instead of going by suffix. Every format yields
documents hashed by content (stack.data.corpus), so the same text gets the same id, and lands in
the same split, whatever file, format or position it came from.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import BadInput
from stack.data.corpus import Document, FileRegion, InputFile, Note, Skipped
from stack.data.defaults import DEFAULT_DOC_BYTES, DEFAULT_TEXT_FIELD
from stack.data.line_ends import Normalised
from stack.data.record_input import JSONL_SUFFIXES, Fields, holds_records, jsonl_documents, parquet_documents
from stack.data.text_input import text_documents

FORMATS = ("auto", "text", "jsonl", "parquet")
SUFFIX_FORMATS = {**dict.fromkeys(JSONL_SUFFIXES, "jsonl"), ".parquet": "parquet"}
JSON_LINES_IN_JSON = (
    "note: these .json file(s) hold JSON Lines, read one record a line (--format text reads a file whole)"
)

Item = Document | FileRegion | Skipped | Normalised | Note


@dataclass(frozen=True)
class Layout:
    """How input files are read: their format (`auto`: by suffix) and the options of each format."""

    format: str = "auto"
    doc_sep: str | None = None
    text_field: str | None = None  # as given; None: DEFAULT_TEXT_FIELD (see `field`)
    source_field: str | None = None
    doc_bytes: int = DEFAULT_DOC_BYTES

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BadInput(f"unknown --format {self.format!r}; use one of: {', '.join(FORMATS)}")
        if self.doc_sep == "":
            raise BadInput(
                "--doc-sep is empty; give the text between documents, e.g. '<|endoftext|>' or '\\n\\n'"
            )
        if self.text_field == "":
            raise BadInput("--text-field is empty; name the field or column that holds the text")
        if self.source_field == "":
            raise BadInput("--source-field is empty; name the field or column that holds the source")
        given = [f"--{name}" for name, value in self.field_options() if value is not None]
        if self.format == "text" and given:
            raise BadInput(
                f"{' and '.join(given)} {'name' if len(given) > 1 else 'names'} a JSONL field or Parquet "
                "column, but --format text reads every file whole as text; drop it, or read the records "
                "with --format jsonl or parquet"
            )
        if self.doc_bytes < 1:
            raise BadInput(f"--doc-bytes {self.doc_bytes} must be at least 1 byte, e.g. 1M")

    def field_options(self) -> tuple[tuple[str, str | None], ...]:
        """The options that name a record's field, as given (None: not given)."""
        return (("text-field", self.text_field), ("source-field", self.source_field))

    @property
    def field(self) -> str:
        """The JSONL field or Parquet column that holds a record's text."""
        return self.text_field or DEFAULT_TEXT_FIELD

    def format_of(self, path: Path) -> str:
        """The format `path` is read in."""
        if self.format != "auto":
            return self.format
        suffix = path.suffix.lower()
        if suffix == ".json" and holds_records(path, self.field):
            return "jsonl"
        return SUFFIX_FORMATS.get(suffix, "text")


def read_documents(
    item: InputFile, layout: Layout, batch_bytes: int, advance: Callable[[int], None]
) -> Iterator[Item]:
    """The documents of one input file, in file order; `advance` is told how many input bytes were read.

    A text document longer than `batch_bytes` comes as a FileRegion, read again when it is used.
    """
    fields = Fields(layout.field, layout.source_field)
    kind = layout.format_of(item.path)
    if kind == "jsonl" and item.path.suffix.lower() not in JSONL_SUFFIXES and layout.format == "auto":
        note = Note(item.source, JSON_LINES_IN_JSON, item.label)
        return itertools.chain([note], jsonl_documents(item, fields, advance))
    if kind == "jsonl":
        return jsonl_documents(item, fields, advance)
    if kind == "parquet":
        return parquet_documents(item, fields, batch_bytes, advance)
    separator = None if layout.doc_sep is None else layout.doc_sep.encode("utf-8")
    return text_documents(item, separator, batch_bytes, advance, layout.doc_bytes)
