"""Input formats: how one input file becomes a stream of documents.

| format  | chosen for                   | a document is                                    |
|---------|------------------------------|---------------------------------------------------|
| text    | any other file               | the file (cut by `--doc-bytes`), or each text between `--doc-sep`s|
| jsonl   | `.jsonl`, `.ndjson`; `.json` of records | the `--text-field` string of each record    |
| parquet | `.parquet`                   | the `--text-column` value of each row             |

A record is a line's object (JSON Lines) or an element of a file's one array (stack.data.json_array).

A `.json` file is read as records when it holds JSON Lines of documents (record_input.holds_records)
or one array whose first element has the text field or is a string (stack.data.json_array), and
prepare says so;
any other `.json` file (a config, a pretty-printed document) is text, and prepare names the ones
that hold arrays of other records, which `--text-field` would read as records.

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
from stack.data.record_input import (
    JSONL_SUFFIXES,
    MISSING,
    Fields,
    field_value,
    first_element,
    holds_array,
    holds_records,
    json_array_documents,
    jsonl_documents,
    parquet_documents,
)
from stack.data.text_input import text_documents

FORMATS = ("auto", "text", "jsonl", "parquet")
SUFFIX_FORMATS = {**dict.fromkeys(JSONL_SUFFIXES, "jsonl"), ".parquet": "parquet"}
JSON_LINES_IN_JSON = (
    "note: these .json file(s) hold JSON Lines, read one record a line (--format text reads a file whole)"
)
ARRAY_IN_JSON = (
    "note: these .json file(s) hold an array of records or texts, read one document an element (--format "
    "text reads a file whole)"
)
OTHER_RECORDS_AS_TEXT = (
    "note: these .json file(s) hold an array of records without the text field and were read whole as "
    "text; to learn their records' text instead, pass --text-field NAME"
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
        if suffix == ".json" and (holds_records(path, self.field) or self._holds_array(path)):
            return "jsonl"
        return SUFFIX_FORMATS.get(suffix, "text")

    def _holds_array(self, path: Path) -> bool:
        """Whether `path` holds a JSON array whose first element is a record with the text field,
        or a string (an array of texts)."""
        first = first_element(path)
        return isinstance(first, str) or (
            isinstance(first, dict) and field_value(first, self.field) is not MISSING
        )


def read_documents(
    item: InputFile, layout: Layout, batch_bytes: int, advance: Callable[[int], None]
) -> Iterator[Item]:
    """The documents of one input file, in file order; `advance` is told how many input bytes were read.

    A text document longer than `batch_bytes` comes as a FileRegion, read again when it is used.
    """
    fields = Fields(layout.field, layout.source_field)
    kind = layout.format_of(item.path)
    by_suffix = layout.format == "auto" and item.path.suffix.lower() == ".json"
    if kind == "jsonl" and holds_array(item.path):
        documents = json_array_documents(item, fields, advance)
        if by_suffix:
            return itertools.chain([Note(item.source, ARRAY_IN_JSON, item.label)], documents)
        return documents
    if kind == "jsonl" and by_suffix:
        note = Note(item.source, JSON_LINES_IN_JSON, item.label)
        return itertools.chain([note], jsonl_documents(item, fields, advance))
    if kind == "jsonl":
        return jsonl_documents(item, fields, advance)
    if kind == "parquet":
        return parquet_documents(item, fields, batch_bytes, advance)
    separator = None if layout.doc_sep is None else layout.doc_sep.encode("utf-8")
    documents = text_documents(item, separator, batch_bytes, advance, layout.doc_bytes)
    if by_suffix and isinstance(first_element(item.path), dict):
        return itertools.chain([Note(item.source, OTHER_RECORDS_AS_TEXT, item.label)], documents)
    return documents
